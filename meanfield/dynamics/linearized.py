"""The linearised flow: the same particles trained on the first-order expansion of the
network around θ_0 (kernel gradient flow; ``models.linearized``).

:func:`linearized` turns any particle dynamics into the one that trains the linearisation of
its task's network around θ_0, with the same step size, schedules, noise, L2 strength and
backend; a scaled task (``models.scaled``) keeps its scale and reference, the linearisation
going inside: f_lin,α = α (f_lin(·; θ) − f(·; ρ_ref)).  Run both from the same initial state
to measure sup_t ‖f_α(t) − f_lin,α(t)‖, which Chizat–Oyallon–Bach (2019, Thm 2.3) bound by
O(1/α) on bounded times.
"""
from __future__ import annotations

import torch

from ..errors import ConfigError
from ..models.linearized import LinearizedTask
from ..models.scaled import ScaledTask
from .particles import ParticleDynamics, ParticleState


def linearized(dynamics: ParticleDynamics, theta0) -> ParticleDynamics:
    """The dynamics that trains the linearisation of ``dynamics``'s network around
    ``theta0`` (θ [N, D] / [B, N, D], a :class:`ParticleState` or a tensor): same dt, drift,
    batch size, ξ, β, λ and backend (module docstring).  ``ConfigError`` for a dynamics that
    is not a :class:`ParticleDynamics` or a task without a unit."""
    if not isinstance(dynamics, ParticleDynamics):
        raise ConfigError(f"linearized needs a ParticleDynamics, got {type(dynamics).__name__}")
    if isinstance(theta0, ParticleState):
        theta0 = theta0.theta
    theta0 = torch.as_tensor(theta0)
    task = dynamics.task
    if isinstance(task, ScaledTask):
        lin = ScaledTask(LinearizedTask(task.inner, theta0), task.alpha, task.reference,
                         task.reference_weights)
    else:
        lin = LinearizedTask(task, theta0)
    return ParticleDynamics(lin, dt=dynamics.dt, drift=dynamics.drift, batch_size=dynamics.batch_size,
                            xi=dynamics.xi, beta=dynamics.beta, lam=dynamics.lam, backend=dynamics.backend)
