"""Shared test fixtures.

The KeOps cache folder and the matplotlib backend are set here, before any test module
imports pykeops or pyplot.  Fixtures (no helper module: ``tests`` is not on the path):

``gen(seed)``        a fresh seeded ``torch.Generator`` (no global seeds anywhere);
``tol(dtype)``       the relative tolerance for backend comparisons: 1e-10 (float64), 1e-4 (float32);
``rel_err(a, ref)``  max |a − ref| / max |ref|, as a float;
``stop_after_phases(n)``  make ``meanfield.runner`` raise KeyboardInterrupt when it starts
                     phase n + 1 (a run stopped between phases; undone after the test).
"""
import os
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
