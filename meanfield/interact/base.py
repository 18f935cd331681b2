"""The one signature every interaction backend implements.

    kernel_sum(kernel, unit, x, y, c, grad=True) -> (S, G)

        S_i = Σ_j c_j U(x_i, y_j)            [B, N]
        G_i = Σ_j c_j ∇₁U(x_i, y_j)          [B, N, D]   (None when grad=False)

with x [B, N, D] (evaluation points), y [B', M, D] (sources), c [B'' , M] (signed source
weights), B', B'' ∈ {1, B}, and U(θ, θ') = a a' κ(w, w') for a closed-form Gaussian kernel
(``models.kernels``): ∇_a U = a' κ, ∇_w U = a a' (α w' + β w).  With c'_j = c_j a_j the
backends compute

    S_i = a_i Σ_j c'_j κ_ij,  G_i = ( Σ_j c'_j κ_ij ,  a_i [Σ_j c'_j α_ij w_j + (Σ_j c'_j β_ij) w_i] ).
"""
from __future__ import annotations

import torch

from ..errors import ConfigError


def split_aw(unit, theta):
    """(a [B, N] (ones when the unit has no output weight), w [B, N, d]) from θ [B, N, D]."""
    if unit.bias:
        raise ConfigError("closed-form interactions need units without bias")
    w = theta[..., unit.w_slice]
    a = theta[..., 0] if unit.output_weight else torch.ones_like(theta[..., 0])
    return a, w


def assemble_grad(unit, a, w, k_sum, alpha_w, beta_sum):
    """G [B, N, D] from Σc'κ [B, N], Σc'α w_j [B, N, d], Σc'β [B, N]."""
    gw = a.unsqueeze(-1) * (alpha_w + beta_sum.unsqueeze(-1) * w)
    if unit.output_weight:
        return torch.cat([k_sum.unsqueeze(-1), gw], dim=-1)
    return gw


def check_shapes(unit, x, y, c):
    """Check the :meth:`Backend.kernel_sum` arguments: x [B, N, D] and y [B', M, D] with D the
    unit's, B' ∈ {1, B}, c [B'', M] with B'' ∈ {1, B'}; ``ConfigError`` naming the mismatch."""
    if x.dim() != 3 or y.dim() != 3:
        raise ConfigError(f"x and y must be [B, N, D] and [B', M, D], got {list(x.shape)} and {list(y.shape)}")
    if x.shape[-1] != unit.D or y.shape[-1] != unit.D:
        raise ConfigError(f"parameter dimension {x.shape[-1]}/{y.shape[-1]} does not match the unit's D={unit.D}")
    if y.shape[0] not in (1, x.shape[0]):
        raise ConfigError(f"source batch {y.shape[0]} must be 1 or {x.shape[0]}")
    if c.dim() != 2 or c.shape[-1] != y.shape[-2] or c.shape[0] not in (1, y.shape[0]):
        raise ConfigError(f"source weights of shape {list(c.shape)} do not match sources {list(y.shape[:2])}")


class Backend:
    """An interaction backend.  Subclasses implement :meth:`kernel_sum`."""

    name = "base"

    def kernel_sum(self, kernel, unit, x, y, c, *, grad: bool = True):
        """(S [B, N], G [B, N, D] or None): S_i = Σ_j c_j U(x_i, y_j), G_i = Σ_j c_j ∇₁U(x_i, y_j).

        x [B, N, D] evaluation points, y [B', M, D] sources, c [B'', M] signed source
        weights (B', B'' ∈ {1, B}); U(θ, θ') = a a' κ(w, w') with κ the closed-form
        Gaussian kernel ``kernel`` (``models.kernels``: ReLU arc-cosine or erf arcsine) and
        ``unit`` a bias-free unit (``ConfigError`` otherwise, or on shapes that do not
        match, see :func:`check_shapes`).  G is None when ``grad=False``.  The formulas
        are in the module docstring; every backend returns the same numbers up to rounding.
        """
        raise NotImplementedError

    def __repr__(self):
        return f"<{self.name} backend>"
