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
from ..models.tasks import FiniteDataset, Potential, Task, TeacherStudent, as_batched, as_weights
from .base import Backend
from .keops import KeOpsBackend, keops_available, keops_cache_dir
from .reference import NumpyBackend
from .tiled import TiledTorchBackend

BACKENDS = ("auto", "numpy", "torch", "keops")
# Above this many pair terms per replica, "auto" prefers KeOps on CPU (measured, see
# benchmarks/README.md); on CUDA KeOps wins much earlier.
AUTO_KEOPS_PAIRS_CPU = 4_000_000
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


def risk_sharp(task: TeacherStudent) -> float:
    """R_# = E[y²] of a closed-form teacher–student task (float64, cached on the task)."""
    if task.risk_sharp is None:
        tt, tw = task.teacher(torch.float64)
        unit, kern = task.unit, task.kernel
        S, _ = _instance("torch").kernel_sum(kern, unit, tt[None], tt[None], tw[None], grad=False)
        a = tt[:, 0] if unit.output_weight else torch.ones_like(tw)
        mu, _ = kern.mean(_torch_ops(), tt[:, unit.w_slice].norm(dim=-1))
        c = task.offset
        val = c * c + 2 * c * float((tw * a * mu).sum()) + float((tw * S[0]).sum()) + task.noise_std ** 2
        task._cache["risk_sharp"] = val
    return task.risk_sharp


def _torch_ops():
    from .ops import TorchOps

    return TorchOps


def evaluate(task: Task, theta: torch.Tensor, weights=None, *, backend="auto",
             n_mc: int | None = None, generator: torch.Generator | None = None) -> Potential:
    """Ψ(θ_i; ρ_N) [B, N], ∇_θΨ(θ_i; ρ_N) [B, N, D] and R(ρ_N) [B] for θ [B, N, D] or [N, D].

    Closed-form tasks are exact:

        V_i = −c a_i μ(w_i) − Σ_k m*_k U(θ_i, θ*_k),   Ψ_i = V_i + Σ_j m_j U(θ_i, θ_j),
        R = R_# + 2 Σ_i m_i V_i + Σ_ij m_i m_j U_ij = R_# + Σ_i m_i (Ψ_i + V_i).

    A finite dataset gives the exact empirical quantities (full batch).  Other tasks need
    ``n_mc`` fresh samples (and a ``generator``): a Monte Carlo estimate with ``risk_se``.
    """
    theta = as_batched(theta)
    task.unit.check_theta(theta)
    m = as_weights(weights, theta)
    if isinstance(task, TeacherStudent) and task.closed_form:
        unit, kern = task.unit, task.kernel
        tt, tw = task.teacher(theta.dtype, theta.device)
        B, N, _ = theta.shape
        be = get_backend(backend, N=N, M=N, d=unit.d, device=theta.device)
        W, GW = be.kernel_sum(kern, unit, theta, theta, m)
        T, GT = be.kernel_sum(kern, unit, theta, tt[None], tw[None])
        W, GW, T, GT = (t.to(theta.dtype) for t in (W, GW, T, GT))
        V, GV = -T, -GT
        if task.offset != 0.0:
            a = theta[..., 0] if unit.output_weight else torch.ones_like(theta[..., 0])
            w = theta[..., unit.w_slice]
            mu, gamma = kern.mean(_torch_ops(), w.norm(dim=-1))
            V = V - task.offset * a * mu
            gw = (a * gamma).unsqueeze(-1) * w
            gmean = torch.cat([mu.unsqueeze(-1), gw], -1) if unit.output_weight else gw
            GV = GV - task.offset * gmean
        psi = V + W
        risk = risk_sharp(task) + ((psi + V) * m).sum(-1)
        return Potential(psi=psi, grad=GV + GW, risk=risk, V=V)
    if isinstance(task, FiniteDataset):
        x, y = task.full(theta.dtype, theta.device)
        return task.sample_potential(theta, m, x, y)
    if n_mc is None or generator is None:
        raise ConfigError(
            f"task {task.name!r} has no closed-form potentials here; pass n_mc and a generator "
            "for a Monte Carlo estimate")
    x, y = task.sample(n_mc, generator=generator, batch=theta.shape[0], dtype=theta.dtype,
                       device=theta.device)
    return task.sample_potential(theta, m, x, y)


__all__ = ["BACKENDS", "Backend", "NumpyBackend", "TiledTorchBackend", "KeOpsBackend",
           "get_backend", "evaluate", "risk_sharp", "keops_available", "keops_cache_dir"]
