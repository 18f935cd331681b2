"""HOW pairwise sums Σ_j m_j U(θ_i, θ_j), Σ_j m_j ∇₁U(θ_i, θ_j) are computed.

Backends (one signature, see ``interact.base``): ``numpy`` (float64 reference, the ground
truth), ``torch`` (row tiles, O(N·tile) memory, any device) and ``keops`` (symbolic
LazyTensor reductions, O(N) memory).  ``backend="auto"`` picks by size and device.

:func:`evaluate` turns a task and particles into Ψ(θ_i; ρ_N), ∇_θΨ(θ_i; ρ_N) and R(ρ_N).
"""
from __future__ import annotations

import warnings

import torch

from ..errors import ConfigError
from ..models.tasks import Potential, Task, as_batched, as_weights
from .base import Backend
from .keops import KeOpsBackend, keops_available, keops_cache_dir
from .reference import NumpyBackend
from .resnet import RESNET_BACKENDS
from .tiled import TiledTorchBackend

BACKENDS = ("auto", "numpy", "torch", "keops")
# Above this many pair terms per replica, "auto" prefers KeOps.  On CPU the torch backend's
# fused native loop (float32) beat the KeOps reduction at every size measured, 10³ ≤ N ≤ 3·10⁴
# (41× at N = 10⁴, d = 10; benchmarks/README.md), so KeOps is effectively never chosen there.
# On CUDA (not measured on this machine) KeOps is expected to win early.
AUTO_KEOPS_PAIRS_CPU = 10 ** 12
AUTO_KEOPS_PAIRS_CUDA = 250_000
AUTO_KEOPS_MAX_DIM = 64

_INSTANCES: dict = {}
_WARNED: set = set()


def _instance(name) -> Backend:
    if name not in _INSTANCES:
        _INSTANCES[name] = {"numpy": NumpyBackend, "torch": TiledTorchBackend,
                            "keops": KeOpsBackend}[name]()
    return _INSTANCES[name]


def get_backend(name="auto", *, N: int = 0, M: int = 0, d: int = 0, device=None) -> Backend:
    """The backend called ``name``; for ``"auto"``, the fastest expected for N × M pairs
    in dimension d on ``device``.  ``"keops"`` without a usable pykeops/compiler falls back
    to ``"torch"`` with a one-line warning."""
    if isinstance(name, Backend):
        return name
    if name not in BACKENDS:
        raise ConfigError(f"unknown backend {name!r}; choose one of {list(BACKENDS)}")
    if name == "auto":
        cuda = device is not None and torch.device(device).type == "cuda"
        threshold = AUTO_KEOPS_PAIRS_CUDA if cuda else AUTO_KEOPS_PAIRS_CPU
        big = N * M >= threshold and d <= AUTO_KEOPS_MAX_DIM
        name = "keops" if big and keops_available() else "torch"
    if name == "keops" and not keops_available():
        if "keops" not in _WARNED:
            warnings.warn("meanfield: pykeops or a C++ compiler is missing; using the torch backend",
                          RuntimeWarning, stacklevel=2)
            _WARNED.add("keops")
        name = "torch"
    return _instance(name)


def evaluate(task: Task, theta: torch.Tensor, weights=None, *, backend="auto",
             n_mc: int | None = None, generator: torch.Generator | None = None) -> Potential:
    """Ψ(θ_i; ρ_N) [B, N], ∇_θΨ(θ_i; ρ_N) [B, N, D] and R(ρ_N) [B] for θ [B, N, D] or [N, D].

    Tasks with ``has_population`` are exact (closed-form teacher–student through this
    backend's pair sums, a finite dataset's full batch, a confining potential).  Other tasks need
    ``n_mc`` fresh samples (and a ``generator``): a Monte Carlo estimate with ``risk_se``.
    """
    theta = as_batched(theta)
    task.check_theta(theta)
    m = as_weights(weights, theta)
    if task.has_population:

        def pair_sum(kernel, unit, x, y, c, grad=True):
            be = get_backend(backend, N=x.shape[-2], M=y.shape[-2], d=unit.d, device=x.device)
            return be.kernel_sum(kernel, unit, x, y, c, grad=grad)

        return task.population_potential(theta, m, pair_sum)
    if n_mc is None or generator is None:
        raise ConfigError(
            f"task {task.name!r} has no exact population potential ({task.population_reason()}); "
            "pass n_mc and a generator for a Monte Carlo estimate")
    x, y = task.sample(n_mc, generator=generator, batch=theta.shape[0], dtype=theta.dtype,
                       device=theta.device)
    return task.sample_potential(theta, m, x, y)


__all__ = ["BACKENDS", "RESNET_BACKENDS", "Backend", "NumpyBackend", "TiledTorchBackend", "KeOpsBackend",
           "get_backend", "evaluate", "keops_available", "keops_cache_dir"]
