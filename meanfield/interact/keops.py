"""KeOps backend: the pair formulas as one symbolic LazyTensor reduction, O(N + M) memory.

The reduction computes, for every i, the vector [Σ_j c'_j κ_ij, Σ_j c'_j β_ij, Σ_j c'_j α_ij w_j]
(1 + 1 + d numbers) in a single pass; the gradient is written explicitly, not by autograd
(KeOps' generated backward of transcendental formulas repeats sub-expressions and is slow).

KeOps compiles each new formula with the C++ compiler on first use (about 5 s per formula
here) into ``KEOPS_CACHE_FOLDER``; meanfield points that at a writable per-project folder
(see :func:`keops_cache_dir`) before pykeops is imported and holds a file lock around the
first use of each formula, so concurrent processes never load a half-written module.
"""
from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path


from .base import Backend, assemble_grad, check_shapes, split_aw
from .ops import KeOpsOps

_STATE: dict = {}


def keops_cache_dir() -> Path:
    """Where compiled KeOps formulas live.

    ``$KEOPS_CACHE_FOLDER`` if set; else ``<repo>/.cache/keops`` for a source checkout
    (editable install); else ``~/.cache/meanfield/keops``.
    """
    env = os.environ.get("KEOPS_CACHE_FOLDER")
    if env:
        return Path(env)
    repo = Path(__file__).resolve().parents[2]
    if (repo / "pyproject.toml").exists() and os.access(repo, os.W_OK):
        return repo / ".cache" / "keops"
    return Path.home() / ".cache" / "meanfield" / "keops"


def _compiler() -> str | None:
    return shutil.which(os.environ.get("CXX", "g++"))


def keops_available() -> bool:
    """True if pykeops imports and a C++ compiler is on PATH (CPU mode needs one)."""
    if "available" not in _STATE:
        _STATE["available"] = _import_pykeops() is not None and _compiler() is not None
    return _STATE["available"]


def _import_pykeops():
    if "module" in _STATE:
        return _STATE["module"]
    cache = keops_cache_dir()
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError:
        pass
    os.environ.setdefault("KEOPS_CACHE_FOLDER", str(cache))
    os.environ.setdefault("KEOPS_VERBOSE", "0")
    os.environ.setdefault("PYKEOPS_VERBOSE", "0")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import pykeops  # noqa: F401
            from pykeops.torch import LazyTensor

            pykeops.set_verbose(False)
        mod = LazyTensor
    except Exception:  # pragma: no cover - depends on the machine
        mod = None
    _STATE["module"] = mod
    return mod


class KeOpsBackend(Backend):
    """Pair sums as KeOps reductions (O(N + M) memory, compiled once per formula: kernel,
    grad or not, dtype, d, device type).  ``RuntimeError`` on construction when pykeops or a
    C++ compiler is missing; first uses of a formula hold a file lock in the KeOps cache."""

    name = "keops"

    def __init__(self):
        self.LazyTensor = _import_pykeops()
        if self.LazyTensor is None or _compiler() is None:
            raise RuntimeError("pykeops is not usable here (missing module or C++ compiler)")
        self._compiled: set = set()

    def _reduce(self, key, fn):
        """Run fn(); hold a file lock the first time a formula (key) is used in this process."""
        if key in self._compiled:
            return fn()
        from filelock import FileLock

        cache = Path(os.environ["KEOPS_CACHE_FOLDER"])
        cache.mkdir(parents=True, exist_ok=True)
        with FileLock(str(cache / "meanfield-compile.lock")):
            out = fn()
        self._compiled.add(key)
        return out

    def kernel_sum(self, kernel, unit, x, y, c, *, grad=True):
        check_shapes(unit, x, y, c)
        LT = self.LazyTensor
        ax, wx = split_aw(unit, x)
        ay, wy = split_aw(unit, y)
        wx, wy = wx.contiguous(), wy.contiguous()
        cy = (c * ay).contiguous()                                   # (B', M)
        nx = wx.norm(dim=-1)                                         # (B, N)
        ny = wy.norm(dim=-1)                                         # (B', M)
        X = LT(wx.unsqueeze(-2))                                     # (B, N, 1, d)
        Y = LT(wy.unsqueeze(-3))                                     # (B', 1, M, d)
        NX = LT(nx[..., None, None])                                 # (B, N, 1, 1)
        NY = LT(ny[..., None, :, None])                              # (B', 1, M, 1)
        C = LT(cy[..., None, :, None])                               # (B', 1, M, 1)
        P = X | Y                                                    # (B, N, M, 1)
        key = (kernel.name, grad, x.dtype, wx.shape[-1], x.device.type)
        if grad:
            K, A, Bt = kernel.coeffs(KeOpsOps, P, NX, NY)
            F = LT.concat(LT.concat(K * C, Bt * C), (A * C) * Y)    # (B, N, M, 2 + d)
            out = self._reduce(key, lambda: F.sum(dim=len(wx.shape) - 1))   # (B, N, 2 + d)
            ksum, beta_sum, alpha_w = out[..., 0], out[..., 1], out[..., 2:]
            G = assemble_grad(unit, ax, wx, ksum, alpha_w, beta_sum)
        else:
            F = kernel.value(KeOpsOps, P, NX, NY) * C
            ksum = self._reduce(key, lambda: F.sum(dim=len(wx.shape) - 1))[..., 0]
            G = None
        return ax * ksum, G
