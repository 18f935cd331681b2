"""A two-layer network linearised around its initialisation (the kernel regime).

The first-order expansion of f(x; ρ) = Σ_j m_j φ(x; θ_j) around θ_0 = (θ_{0,1} … θ_{0,N}),

    f_lin(x; θ) = Σ_j m_j φ_lin(x; θ_j),
    φ_lin(x; θ_j) = φ(x; θ_{0,j}) + ⟨∇_θφ(x; θ_{0,j}), θ_j − θ_{0,j}⟩,

is linear in the particles, with features whose gradient ∇_θφ(x; θ_{0,j}) never changes:
trained by the flow of docs/design.md §1 it is the kernel gradient flow of the tangent
kernel at initialisation, ∂_t f_lin(x) = −2 E_{x'}[K_0(x, x') ½∂_fℓ(y, f_lin)(x')]
(``models.ntk``).  Chizat–Oyallon–Bach (2019, Thm 2.3) show that the flow of the scaled
model f_α (``models.scaled``) stays within O(1/α) of its linearisation on bounded times.

:class:`LinearizedTask` is the task whose network is f_lin: any dynamics trains it as it
trains the task itself (``dynamics.linearized`` builds one from a dynamics).  It is exact on
a finite dataset (full batch) and sample-based otherwise; closed-form population potentials
of the linearised network are not implemented (``ConfigError`` names the alternatives).
"""
from __future__ import annotations

import torch

from ..errors import ConfigError
from .task_base import Task, as_batched


class LinearizedTask(Task):
    """``task`` with its network replaced by the linearisation around ``theta0``
    ([N, D], or [B, N, D] per replica; module docstring).  Shapes as every task."""

    standard_model = False

    def __init__(self, task: Task, theta0):
        if not isinstance(task, Task):
            raise ConfigError(f"LinearizedTask needs a meanfield Task, got {type(task).__name__}")
        if getattr(task, "unit", None) is None:
            raise ConfigError(f"task {task.name!r} has no unit to linearise")
        self.inner = task
        self.unit = task.unit
        self.loss = task.loss
        self.name = task.name
        self.finite_data = getattr(task, "finite_data", False)
        theta0 = as_batched(torch.as_tensor(theta0)).detach().clone()
        task.check_theta(theta0)
        self.theta0 = theta0

    def _theta0(self, theta):
        t0 = self.theta0.to(dtype=theta.dtype, device=theta.device)
        if t0.shape[0] not in (1, theta.shape[0]) or t0.shape[1:] != theta.shape[1:]:
            raise ConfigError(f"the linearisation point has shape {list(t0.shape)}, the particles "
                              f"{list(theta.shape)}")
        return t0.expand_as(theta)

    def features(self, x, theta):
        """φ_lin(x_k; θ_j) = φ(x_k; θ_{0,j}) + ⟨∇_θφ(x_k; θ_{0,j}), θ_j − θ_{0,j}⟩ [B, n, N],
        with ∇_a φ = σ(z), ∇_w φ = a σ'(z) x, ∇_b φ = a σ'(z) at z = ⟨w_0, x⟩ + b_0."""
        unit = self.unit
        theta = as_batched(theta)
        t0 = self._theta0(theta)
        a0, _, _ = unit.split(t0)
        da, dw, db = unit.split(theta - t0)
        z0 = unit.preactivation(x, t0)                              # (B, n, N)
        s0 = unit.activation(z0)
        ds0 = unit.activation.derivative(z0)
        if a0 is not None:
            ds0 = ds0 * a0.unsqueeze(-2)
        move = x @ dw.transpose(-1, -2)                             # (B, n, N): ⟨δw_j, x_k⟩
        if db is not None:
            move = move + db.unsqueeze(-2)
        out = (s0 * a0.unsqueeze(-2) if a0 is not None else s0) + ds0 * move
        if da is not None:
            out = out + s0 * da.unsqueeze(-2)
        return out

    def feature_grad(self, x, theta, coef):
        """Σ_k coef_k ∇_θφ(x_k; θ_{0,i}) [B, N, D]: the gradients at the linearisation point."""
        return self.unit.weighted_grad(x, self._theta0(as_batched(theta)), coef)

    def sample(self, n, **kw):
        """The inner task's samples (x, y)."""
        return self.inner.sample(n, **kw)

    @property
    def has_population(self) -> bool:
        return self.finite_data

    def population_reason(self):
        if self.has_population:
            return None
        return ("the linearised network has exact potentials only on a finite dataset; "
                "train it by sampling (drift='sgd') or on a FiniteDataset")

    def full(self, dtype=torch.float32, device=None):
        """The inner finite dataset's (X [1, n, d], Y [1, n])."""
        return self.inner.full(dtype, device)

    def population_potential(self, theta, weights, pair_sum=None):
        """The exact empirical Ψ, ∇Ψ, R of the linearised network (finite datasets)."""
        if not self.finite_data:
            raise ConfigError(f"task {self.name!r}: {self.population_reason()}")
        x, y = self.full(theta.dtype, theta.device)
        pot = self.sample_potential(theta, weights, x, y)
        pot.risk_se = None
        return pot

    @property
    def risk_sharp(self):
        """R_# of the inner task."""
        return self.inner.risk_sharp

    def to_dict(self) -> dict:
        """The inner task's description with "linearized": True."""
        return {**self.inner.to_dict(), "linearized": True}

    def arrays(self) -> dict:
        """The inner task's arrays."""
        return self.inner.arrays()
