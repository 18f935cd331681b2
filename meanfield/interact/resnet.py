"""HOW the unit-by-data sums of the measure-valued ResNet are computed.

One signature for every backend (the model, ``models.resnet``, calls these; x [B|1, n, D]
data states, θ [B|1, M, P] units, c [B|1, M] masses, p [B|1, n, D] adjoints, a [B|1, n]
data weights; φ(x; θ) = u σ(⟨w, x⟩ + b), z_kj = ⟨w_j, x_k⟩ + b_j):

    field(unit, x, θ, c)          Σ_j c_j u_j σ(z_kj)                       [B, n, D]   (over units)
    field_vjp(unit, x, θ, c, p)   Σ_j c_j σ'(z_kj) ⟨u_j, p_k⟩ w_j           [B, n, D]   (over units)
    backward(unit, x, θ, c, p, a) (field_vjp, param_grad) fused (optional; torch only)
    param_grad(unit, x, θ, p, a)  Σ_k a_k ∇_θ⟨p_k, φ(x_k; θ_j)⟩              [B, M, P]   (over data)
    value(unit, x, θ, p, a)       Σ_k a_k ⟨p_k, φ(x_k; θ_j)⟩                 [B, M]      (over data)

Backends: ``torch`` (the dense formulas of ``ResidualUnit`` in row tiles, O(tile · M) memory)
and ``keops`` (one symbolic reduction per sum, O(n + M) memory).  ``auto`` picks torch on
CPU and KeOps on CUDA above ``AUTO_KEOPS_PAIRS_CUDA`` unit-data pairs (a guess: no GPU was
available to measure it).  Measured on this 2-core CPU (float32, tanh, D = 6, one torch
thread, field + field_vjp + param_grad once): n = 64, M = 256, B = 4: torch 2.5 ms, KeOps
10.7 ms; n = M = 1000: torch 64 ms, KeOps 105 ms; n = 10⁴, M = 1000: torch 0.67 s, KeOps
1.0 s.  Each KeOps formula compiles once (about 9 s here) per (sum, σ, dtype, D).
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from ..errors import ConfigError
from ..models.resnet import ResidualUnit
from .keops import _compiler, _import_pykeops, keops_available

# The backends of the ResNet unit-by-data sums (``get_resnet_sums``): "auto" picks by size and device.
RESNET_BACKENDS = ("auto", "torch", "keops")
AUTO_KEOPS_PAIRS_CUDA = 10 ** 7
KEOPS_ACTIVATIONS = ("tanh", "relu", "cos", "sin", "sigmoid", "linear")

_INSTANCES: dict = {}


class TorchResNetSums:
    """Dense torch sums in tiles of ``tile_elems`` unit-data pairs per replica."""

    name = "torch"

    def __init__(self, tile_elems: int = 2 ** 22):
        self.tile_elems = int(tile_elems)

    def _rows(self, n, M):
        return max(1, min(n, self.tile_elems // max(M, 1)))

    def field(self, unit: ResidualUnit, x, theta, c):
        """Σ_j c_j u_j σ(z_kj) [B, n, D] (``ResidualUnit.field`` over row tiles of x)."""
        r = self._rows(x.shape[-2], theta.shape[-2])
        if r >= x.shape[-2]:
            return unit.field(x, theta, c)
        return torch.cat([unit.field(x[..., i:i + r, :], theta, c) for i in range(0, x.shape[-2], r)], -2)

    def field_vjp(self, unit, x, theta, c, p):
        """Σ_j c_j σ'(z_kj) ⟨u_j, p_k⟩ w_j [B, n, D] (``ResidualUnit.field_vjp`` over row tiles)."""
        r = self._rows(x.shape[-2], theta.shape[-2])
        if r >= x.shape[-2]:
            return unit.field_vjp(x, theta, c, p)
        return torch.cat([unit.field_vjp(x[..., i:i + r, :], theta, c, p[..., i:i + r, :])
                          for i in range(0, x.shape[-2], r)], -2)

    def param_grad(self, unit, x, theta, p, a):
        """Σ_k a_k ∇_θ⟨p_k, φ(x_k; θ_j)⟩ [B, M, P] (``ResidualUnit.param_grad``, summed over
        row tiles)."""
        r = self._rows(x.shape[-2], theta.shape[-2])
        if r >= x.shape[-2]:
            return unit.param_grad(x, theta, p, a)
        out = None
        for i in range(0, x.shape[-2], r):
            g = unit.param_grad(x[..., i:i + r, :], theta, p[..., i:i + r, :], a[..., i:i + r])
            out = g if out is None else out + g
        return out

    def value(self, unit, x, theta, p, a):
        """Σ_k a_k ⟨p_k, φ(x_k; θ_j)⟩ [B, M] (``ResidualUnit.value``, summed over row tiles)."""
        r = self._rows(x.shape[-2], theta.shape[-2])
        if r >= x.shape[-2]:
            return unit.value(x, theta, p, a)
        out = None
        for i in range(0, x.shape[-2], r):
            v = unit.value(x[..., i:i + r, :], theta, p[..., i:i + r, :], a[..., i:i + r])
            out = v if out is None else out + v
        return out

    def backward(self, unit, x, theta, c, p, a):
        """(field_vjp, param_grad) in one pass per tile."""
        r = self._rows(x.shape[-2], theta.shape[-2])
        if r >= x.shape[-2]:
            return unit.backward(x, theta, c, p, a)
        vjps, grad = [], None
        for i in range(0, x.shape[-2], r):
            v, g = unit.backward(x[..., i:i + r, :], theta, c, p[..., i:i + r, :], a[..., i:i + r])
            vjps.append(v)
            grad = g if grad is None else grad + g
        return torch.cat(vjps, -2), grad

    def __repr__(self):
        return "<torch ResNet sums>"


def _lt_act(name, z):
    """σ(z), σ'(z) for a LazyTensor z."""
    if name == "tanh":
        t = 2.0 / (1.0 + (-2.0 * z).exp()) - 1.0
        return t, 1.0 - t * t
    if name == "sigmoid":
        s = 1.0 / (1.0 + (-z).exp())
        return s, s * (1.0 - s)
    if name == "relu":
        return z.relu(), z.step()
    if name == "cos":
        return z.cos(), -z.sin()
    if name == "sin":
        return z.sin(), z.cos()
    if name == "linear":
        return z, z * 0.0 + 1.0
    raise ConfigError(f"the keops ResNet sums support activations {list(KEOPS_ACTIVATIONS)}, got {name!r}")


class KeOpsResNetSums:
    """The four sums as KeOps reductions (σ written out explicitly; no autograd)."""

    name = "keops"

    def __init__(self):
        self.LT = _import_pykeops()
        if self.LT is None or _compiler() is None:
            raise RuntimeError("pykeops is not usable here (missing module or C++ compiler)")
        self._compiled: set = set()

    def _reduce(self, key, fn):
        if key in self._compiled:
            return fn()
        from filelock import FileLock

        cache = Path(os.environ["KEOPS_CACHE_FOLDER"])
        cache.mkdir(parents=True, exist_ok=True)
        with FileLock(str(cache / "meanfield-compile.lock")):
            out = fn()
        self._compiled.add(key)
        return out

    @staticmethod
    def _expand(B, *ts):
        return [t.expand(B, *t.shape[1:]).contiguous() for t in ts]

    def _parts(self, unit, theta):
        u, w, b = unit.split(theta)
        if b is None:
            b = torch.zeros_like(theta[..., 0])
        return u, w, b

    def field(self, unit, x, theta, c):
        """Σ_j c_j u_j σ(z_kj) [B, n, D], one KeOps reduction over units."""
        LT = self.LT
        act = unit.activation.to_dict()["name"]
        B = max(x.shape[0], theta.shape[0])
        u, w, b = self._parts(unit, theta)
        x, u, w, b, c = self._expand(B, x, u, w, b, c)
        X = LT(x[:, :, None, :])                                   # (B, n, 1, D)
        U, W = LT(u[:, None, :, :]), LT(w[:, None, :, :])          # (B, 1, M, D)
        Bb, C = LT(b[:, None, :, None]), LT(c[:, None, :, None])   # (B, 1, M, 1)
        s, _ = _lt_act(act, (X | W) + Bb)
        F = (s * C) * U                                            # (B, n, M, D)
        return self._reduce(("field", act, x.dtype, unit.D), lambda: F.sum(dim=2))

    def field_vjp(self, unit, x, theta, c, p):
        """Σ_j c_j σ'(z_kj) ⟨u_j, p_k⟩ w_j [B, n, D], one KeOps reduction over units."""
        LT = self.LT
        act = unit.activation.to_dict()["name"]
        B = max(x.shape[0], theta.shape[0], p.shape[0])
        u, w, b = self._parts(unit, theta)
        x, p, u, w, b, c = self._expand(B, x, p, u, w, b, c)
        X, Pk = LT(x[:, :, None, :]), LT(p[:, :, None, :])         # (B, n, 1, D)
        U, W = LT(u[:, None, :, :]), LT(w[:, None, :, :])          # (B, 1, M, D)
        Bb, C = LT(b[:, None, :, None]), LT(c[:, None, :, None])   # (B, 1, M, 1)
        _, ds = _lt_act(act, (X | W) + Bb)
        F = (ds * (Pk | U) * C) * W                                # (B, n, M, D)
        return self._reduce(("vjp", act, x.dtype, unit.D), lambda: F.sum(dim=2))

    def _units_by_data(self, unit, x, theta, p, a):
        """LazyTensors of the (unit j, datum k) reductions: U, W (B, M, 1, D), Bb (B, M, 1, 1),
        X, Pk (B, 1, n, D), Ak (B, 1, n, 1), batches broadcast to a common B."""
        LT = self.LT
        B = max(x.shape[0], theta.shape[0], p.shape[0])
        u, w, b = self._parts(unit, theta)
        x, p, a, u, w, b = self._expand(B, x, p, a, u, w, b)
        return (LT(u[:, :, None, :]), LT(w[:, :, None, :]), LT(b[:, :, None, None]),
                LT(x[:, None, :, :]), LT(p[:, None, :, :]), LT(a[:, None, :, None]))

    def param_grad(self, unit, x, theta, p, a):
        """Σ_k a_k ∇_θ⟨p_k, φ(x_k; θ_j)⟩ [B, M, P], one KeOps reduction over data (of
        (σ(z) a p, σ'(z)⟨u, p⟩ a x[, σ'(z)⟨u, p⟩ a]))."""
        act = unit.activation.to_dict()["name"]
        U, W, Bb, X, Pk, Ak = self._units_by_data(unit, x, theta, p, a)
        s, ds = _lt_act(act, (W | X) + Bb)
        r = ds * (U | Pk) * Ak                                     # (B, M, n, 1)
        F = self.LT.concat((s * Ak) * Pk, r * X)                   # (B, M, n, 2D)
        if unit.bias:
            F = self.LT.concat(F, r)                               # (B, M, n, 2D + 1)
        return self._reduce(("grad", act, x.dtype, unit.D, unit.bias), lambda: F.sum(dim=2))

    def value(self, unit, x, theta, p, a):
        """Σ_k a_k ⟨p_k, φ(x_k; θ_j)⟩ [B, M], one KeOps reduction over data."""
        act = unit.activation.to_dict()["name"]
        U, W, Bb, X, Pk, Ak = self._units_by_data(unit, x, theta, p, a)
        s, _ = _lt_act(act, (W | X) + Bb)
        F = s * (U | Pk) * Ak                                      # (B, M, n, 1)
        return self._reduce(("value", act, x.dtype, unit.D), lambda: F.sum(dim=2))[..., 0]

    def __repr__(self):
        return "<keops ResNet sums>"


def get_resnet_sums(name="auto", *, n: int = 0, M: int = 0, D: int = 0, activation: str = "tanh",
                    device=None):
    """The ResNet sums backend called ``name`` (``RESNET_BACKENDS``); ``auto`` picks torch on
    CPU and KeOps on CUDA for n·M ≥ ``AUTO_KEOPS_PAIRS_CUDA`` (KeOps-supported σ, D ≤ 64).
    ``keops`` without a usable pykeops falls back to torch with a warning."""
    if not isinstance(name, str):
        return name
    if name not in RESNET_BACKENDS:
        raise ConfigError(f"unknown ResNet backend {name!r}; choose one of {list(RESNET_BACKENDS)}")
    if name == "auto":
        cuda = device is not None and torch.device(device).type == "cuda"
        big = cuda and n * M >= AUTO_KEOPS_PAIRS_CUDA and D <= 64 and activation in KEOPS_ACTIVATIONS
        name = "keops" if big and keops_available() else "torch"
    if name == "keops":
        if activation not in KEOPS_ACTIVATIONS:
            raise ConfigError(f"the keops ResNet sums support activations {list(KEOPS_ACTIVATIONS)}, "
                              f"got {activation!r}; use backend=torch")
        if not keops_available():
            import warnings

            warnings.warn("meanfield: pykeops or a C++ compiler is missing; using the torch ResNet sums",
                          RuntimeWarning, stacklevel=2)
            name = "torch"
    if name not in _INSTANCES:
        _INSTANCES[name] = TorchResNetSums() if name == "torch" else KeOpsResNetSums()
    return _INSTANCES[name]


__all__ = ["RESNET_BACKENDS", "KEOPS_ACTIVATIONS", "KeOpsResNetSums", "TorchResNetSums",
           "get_resnet_sums"]
