"""Shared test fixtures.

The KeOps cache folder and the matplotlib backend are set here, before any test module
imports pykeops or pyplot.  Fixtures (no helper module: ``tests`` is not on the path):

``gen(seed)``        a fresh seeded ``torch.Generator`` (no global seeds anywhere);
``tol(dtype)``       the relative tolerance for backend comparisons: 1e-10 (float64), 1e-4 (float32);
``rel_err(a, ref)``  max |a − ref| / max |ref|, as a float;
``stop_after_phases(n)``  make ``meanfield.runner`` raise KeyboardInterrupt when it starts
                     phase n + 1 (a run stopped between phases; undone after the test);
``public_api``       (session) meanfield's public objects, module by module (what the
                     docstring test and the documentation site's anchor test both walk);
``cli_subparsers``   the subparsers action of ``meanfield.cli``'s parser (name → subparser);
``notebook_runs``    (session) the notebooks executed once in small mode, shared by the
                     notebook tests and the documentation build (both in tests/test_notebooks.py).

``make test`` runs the suite on two pytest-xdist workers, one test file per worker at a time
(``-n 2 --dist loadfile``: module fixtures run once).  Each worker uses one torch thread: two
workers with two threads each on two cores left torch's parallel regions waiting for
descheduled threads.  What worker processes share is guarded by file locks: the native
kernels' and KeOps' compile caches (``meanfield.interact.native``, ``interact.keops``).
"""
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

_REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("KEOPS_CACHE_FOLDER", str(_REPO / ".cache" / "keops"))
os.environ.setdefault("KEOPS_VERBOSE", "0")
os.environ.setdefault("PYKEOPS_VERBOSE", "0")

import matplotlib  # noqa: E402

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

if os.environ.get("PYTEST_XDIST_WORKER"):      # a pytest-xdist worker: one thread (see above)
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def public_api():
    """[(module name, module, [(qualified name, object)])] for every module of meanfield
    (``__main__`` excepted: it runs the command on import): the public functions and classes
    defined there (``__all__``, else the names without a leading underscore; constants and
    objects imported from elsewhere left out) and each class's public methods and properties
    (``getattr(cls, name)``: a property object, a function)."""
    import importlib
    import inspect
    import pkgutil

    import meanfield

    out = []
    for info in pkgutil.walk_packages(meanfield.__path__, "meanfield."):
        if info.name == "meanfield.__main__":
            continue
        mod = importlib.import_module(info.name)
        names = getattr(mod, "__all__", None)
        members = []
        for name in names if names is not None else [n for n in vars(mod) if not n.startswith("_")]:
            obj = getattr(mod, name, None)
            if not (inspect.isfunction(obj) or inspect.isclass(obj)) or obj.__module__ != info.name:
                continue
            members.append((name, obj))
            if inspect.isclass(obj):
                for attr, raw in vars(obj).items():
                    func = getattr(raw, "__func__", raw)           # staticmethod / classmethod
                    if not attr.startswith("_") and (inspect.isfunction(func) or isinstance(raw, property)):
                        members.append((f"{name}.{attr}", getattr(obj, attr)))
        out.append((info.name, mod, members))
    return out


@pytest.fixture
def cli_subparsers():
    """The ``argparse._SubParsersAction`` of ``meanfield.cli._parser()``."""
    import argparse

    from meanfield import cli

    (action,) = [a for a in cli._parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return action


@pytest.fixture
def gen():
    """Factory: ``gen(seed)`` → a new ``torch.Generator`` seeded with ``seed``."""

    def make(seed: int = 0) -> torch.Generator:
        g = torch.Generator()
        g.manual_seed(int(seed))
        return g

    return make


@pytest.fixture
def tol():
    """``tol(dtype)`` → relative tolerance: 1e-10 for float64, 1e-4 for float32."""

    def rtol(dtype) -> float:
        if dtype in (torch.float64, np.float64):
            return 1e-10
        if dtype in (torch.float32, np.float32):
            return 1e-4
        raise ValueError(f"no tolerance for dtype {dtype}")

    return rtol


@pytest.fixture
def rel_err():
    """``rel_err(a, ref)`` → max |a − ref| / max |ref| (computed in float64)."""

    def err(a, ref) -> float:
        a = torch.as_tensor(a).detach().cpu().double()
        ref = torch.as_tensor(ref).detach().cpu().double()
        assert a.shape == ref.shape, (a.shape, ref.shape)
        scale = ref.abs().max().item()
        assert scale > 0, "reference is identically zero"
        return (a - ref).abs().max().item() / scale

    return err


@pytest.fixture
def stop_after_phases(monkeypatch):
    """Factory: ``stop_after_phases(n)`` → the runner stops (KeyboardInterrupt) when it
    starts phase n + 1; ``monkeypatch.undo()`` (or the test's end) restores it."""
    from meanfield import runner

    def install(n: int):
        real, calls = runner._run_phase, {"n": 0}

        def phase(*a, **k):
            calls["n"] += 1
            if calls["n"] > n:
                raise KeyboardInterrupt
            return real(*a, **k)

        monkeypatch.setattr(runner, "_run_phase", phase)

    return install


# ---------------------------------------------------------------- notebooks, executed once

NOTEBOOKS = sorted((_REPO / "notebooks").glob("[0-9][0-9]_*.py"))
NOTEBOOK_BUDGET_S = 240          # per notebook, in small mode
NOTEBOOK_PARALLEL = 2            # the CI machine has 2 cores; one torch thread per notebook


def kernel_available() -> bool:
    """Whether the notebooks extra (jupytext, nbclient, ipykernel) is installed."""
    import importlib.util

    return all(importlib.util.find_spec(m) for m in ("jupytext", "nbclient", "ipykernel"))


@dataclass
class NotebookRun:
    """One notebook executed in small mode: ``returncode`` (None: over the budget), what it
    printed (``stdout``; from the cells' outputs when run through a kernel), ``stderr``,
    ``out`` (its $MEANFIELD_NOTEBOOK_OUT), ``ipynb`` (the executed notebook, or None when run
    as a script) and ``via`` ("kernel" or "script")."""

    returncode: int | None
    stdout: str
    stderr: str
    out: Path
    ipynb: Path | None
    via: str

    def images(self) -> int:
        """Rendered images among the executed notebook's outputs (PNG, GIF, or <img> in HTML)."""
        nb = json.loads(self.ipynb.read_text())
        return sum(any(k in o.get("data", {}) for k in ("image/png", "image/gif"))
                   + ("<img " in "".join(o.get("data", {}).get("text/html", "")))
                   for c in nb["cells"] if c["cell_type"] == "code" for o in c["outputs"])


def _execute(path: Path, out: Path) -> NotebookRun:
    """Through a Jupyter kernel (scripts/notebooks.py) when the extra is installed, else as a
    script; either way in a fresh process, small mode, one torch thread."""
    env = {**os.environ, "MEANFIELD_SMALL": "1", "MEANFIELD_NOTEBOOK_OUT": str(out),
           "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    if kernel_available():
        cmd = [sys.executable, str(_REPO / "scripts" / "notebooks.py"), "--one", path.stem,
               "--small", "--out", str(out), "--fig-out", str(out), "--jobs", "2"]
        via, ipynb = "kernel", out / f"{path.stem}.ipynb"
    else:
        cmd, via, ipynb = [sys.executable, str(path)], "script", None
        env["MPLBACKEND"] = "Agg"
    try:
        res = subprocess.run(cmd, cwd=_REPO, env=env, capture_output=True, text=True,
                             timeout=NOTEBOOK_BUDGET_S)
    except subprocess.TimeoutExpired as e:
        return NotebookRun(None, "", str(e.stderr or ""), out, None, via)
    stdout = res.stdout
    if via == "kernel" and ipynb.exists():
        nb = json.loads(ipynb.read_text())
        stdout = "".join("".join(o.get("text", "")) for c in nb["cells"] if c["cell_type"] == "code"
                         for o in c["outputs"]
                         if o["output_type"] == "stream" and o["name"] == "stdout")
    return NotebookRun(res.returncode, stdout, res.stderr, out, ipynb, via)


@pytest.fixture(scope="session")
def notebook_runs(request, tmp_path_factory):
    """{stem: NotebookRun} for the notebooks this session needs: those its tests name
    (``[NN_name]`` in a test id), or all of them when the documentation build is selected.
    Executed once, two at a time, on first use."""
    items = request.session.items
    everything = any(it.name.startswith("test_docs_site") for it in items)
    selected = [p for p in NOTEBOOKS
                if everything or any(it.nodeid.endswith(f"[{p.stem}]") for it in items)]
    root = tmp_path_factory.mktemp("notebooks")
    with ThreadPoolExecutor(NOTEBOOK_PARALLEL) as pool:
        runs = list(pool.map(lambda p: _execute(p, root), selected))
    return {p.stem: r for p, r in zip(selected, runs)}
