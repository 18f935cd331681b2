"""Gradient descent on a matrix parameter: θ ← θ − dt ∇f(θ) for f(θ) = ‖e^θ + I‖²_F.

:class:`MatrixGD` moves one particle θ ∈ R^{d×d} per replica (the linear neural ODE of
``models.linear_ode``), with the state of the particle dynamics (``ParticleState``: theta
[B, 1, d²], step, t = step·dt on the MMN axis), so the runner checkpoints and resumes it like
any dynamics.
"""
from __future__ import annotations

from dataclasses import replace

import torch

from ..errors import DivergenceError
from ..models.linear_ode import objective


class MatrixGD:
    """θ ← θ − dt ∇f(θ) on θ [B, 1, d²] (one particle per replica), f = ``objective``, with
    ParticleState states."""

    def __init__(self, d: int, dt: float):
        self.d, self.dt = d, dt

    def grad(self, state):
        """∇f(θ) = 2 (D exp_θ)*[e^θ + I] (the adjoint of exp's Fréchet derivative), by
        autograd through ``matrix_exp``; shaped like ``state.theta`` [B, 1, d²]."""
        with torch.enable_grad():
            th = state.theta.detach().reshape(-1, self.d, self.d).clone().requires_grad_(True)
            (g,) = torch.autograd.grad(objective(th).sum(), th)
        return g.reshape(state.theta.shape)

    def step(self, state):
        """One step θ ← θ − dt ∇f(θ), t ← t + dt: returns (new state, None), like the
        ``step`` of the particle dynamics; ``DivergenceError`` on a non-finite θ."""
        theta = state.theta - self.dt * self.grad(state)
        if not torch.isfinite(theta).all():
            raise DivergenceError(f"step {state.step}: non-finite θ; the step size is likely too large")
        return replace(state, theta=theta, step=state.step + 1, t=float(f"{state.t + self.dt:.15g}")), None


__all__ = ["MatrixGD"]
