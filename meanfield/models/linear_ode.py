"""The linear neural ODE x' = θx in the depth limit, and the objective of learning x ↦ −x.

A linear ResNet whose every layer carries the same parameter θ ∈ R^{d×d} (μ = ds ⊗ δ_θ) has
flow map e^θ; learning −Id on isotropic data is minimising :func:`objective`
f(θ) = ‖e^θ + I‖²_F (no ½, as every risk here), whose infimum is 0 for even d (θ = πJ, a
rotation by π) and 1, not attained, for odd d.  The gradient descent on it is
``dynamics.matrix_gd.MatrixGD``.
"""
from __future__ import annotations

import torch


def objective(theta: torch.Tensor) -> torch.Tensor:
    """f(θ) = ‖e^θ + I‖²_F (``torch.linalg.matrix_exp``, differentiable) for θ [..., d, d];
    returns [...]."""
    d = theta.shape[-1]
    E = torch.linalg.matrix_exp(theta) + torch.eye(d, dtype=theta.dtype, device=theta.device)
    return (E * E).sum((-1, -2))


__all__ = ["objective"]
