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


class PairedDynamics:
    """A particle dynamics and its linearisation around the initial particles, advanced
    together step by step (so that f_α and f_lin,α are compared at the same t).

    The state is one :class:`ParticleState` whose θ [B, 2N, D] holds the flow's N particles
    first and the linearised flow's N after them (:meth:`halves` splits it); both start from
    the same θ_0.  ``step`` returns the flow's ``StepInfo``.  Deterministic dynamics only
    (population drift without noise): the two halves must not share random draws.
    ``ConfigError`` otherwise."""

    def __init__(self, dynamics: ParticleDynamics, theta0):
        if not isinstance(dynamics, ParticleDynamics) or not dynamics.deterministic:
            raise ConfigError("PairedDynamics pairs a noiseless population-drift ParticleDynamics "
                              "with its linearisation")
        self.flow = dynamics
        self.lin = linearized(dynamics, theta0)
        self.N = torch.as_tensor(theta0.theta if isinstance(theta0, ParticleState) else theta0).shape[-2]

    @property
    def task(self):
        """The flow's task."""
        return self.flow.task

    def init(self, theta0) -> ParticleState:
        """θ_0 [B, N, D] (or [N, D]) twice: [B, 2N, D]."""
        st = self.flow.init(theta0)
        theta = st.theta if st.theta.dim() == 3 else st.theta.unsqueeze(0)
        return ParticleState(torch.cat([theta, theta], -2), None, 0, 0.0, st.generator)

    def halves(self, state: ParticleState) -> tuple[ParticleState, ParticleState]:
        """(the flow's state, the linearised flow's state), views of ``state``."""
        N = self.N
        return (ParticleState(state.theta[..., :N, :], None, state.step, state.t, state.generator),
                ParticleState(state.theta[..., N:, :], None, state.step, state.t, state.generator))

    def step(self, state: ParticleState):
        """One step of both; returns the new paired state and the flow's StepInfo."""
        a, b = self.halves(state)
        a, info = self.flow.step(a)
        b, _ = self.lin.step(b)
        return ParticleState(torch.cat([a.theta, b.theta], -2), None, a.step, a.t, state.generator), info
