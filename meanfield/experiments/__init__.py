"""One module per experiment, registered in ``EXPERIMENTS`` (CLI name → module name).

The protocol every experiment module follows (the CLI, sweeps and tests rely on it):

* ``NAME``: the CLI name; the module docstring's first line is its ``meanfield list`` entry.
* ``Config``: a frozen dataclass subclassing :class:`RunConfig` (shared keys plus its own).
* ``run(cfg, out, *, progress=True, checkpoint=None, resume=False) -> (state, rows, seconds)``:
  writes the run directory ``out`` (DESIGN.md §3); ``rows`` are the metrics rows (dicts);
  with ``resume=True`` it continues the run in ``out`` from ``checkpoint`` (the loaded
  ``checkpoint.pt`` payload, or None when the run stopped before its first checkpoint).
* optional ``plot(run_dir, coords=None) -> list[Path]``: redraws its figures from the run
  directory alone (``meanfield plot``); without it, ``plotting.plot_run`` is used.
"""
from importlib import import_module

from ..errors import ConfigError
from .config import RunConfig

EXPERIMENTS = {"teacher-student": "teacher_student", "mmn-isotropic": "mmn_isotropic",
               "mmn-bifurcation": "mmn_bifurcation", "chaos-rate": "chaos_rate",
               "resnet-limit": "resnet_limit", "resnet-rkhs": "resnet_rkhs",
               "linear-obstruction": "linear_obstruction", "resnet-digits": "resnet_digits",
               "n-scaling": "n_scaling", "cb-relu2d": "cb_relu2d", "cb-threshold": "cb_threshold",
               "mfld-torus": "mfld_torus", "pde2d-teacher": "pde2d_teacher",
               "pde2d-torus": "pde2d_torus", "dataset": "dataset"}


def get_experiment(name: str):
    """The experiment module called ``name`` (``Config``, ``run``, ``NAME``)."""
    if name not in EXPERIMENTS:
        import difflib

        close = difflib.get_close_matches(name, list(EXPERIMENTS), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"unknown experiment {name!r}{hint}; available: {', '.join(EXPERIMENTS)}")
    return import_module(f".{EXPERIMENTS[name]}", __name__)


__all__ = ["EXPERIMENTS", "RunConfig", "get_experiment"]
