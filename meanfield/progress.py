"""Progress bars: tqdm's notebook widget under Jupyter when ipywidgets is installed, its text
bar otherwise (``tqdm.auto`` alone would warn "IProgress not found" in a kernel without
ipywidgets, on every run a notebook starts)."""
from __future__ import annotations


def progress_bar(**kwargs):
    """A ``tqdm`` bar with ``kwargs`` (total, desc, disable …): ``tqdm.auto`` in a Jupyter
    kernel that has ipywidgets, ``tqdm.std`` everywhere else."""
    import importlib.util
    import sys

    if "ipykernel" in sys.modules and importlib.util.find_spec("ipywidgets") is not None:
        from tqdm.auto import tqdm
    else:
        from tqdm.std import tqdm
    return tqdm(**kwargs)
