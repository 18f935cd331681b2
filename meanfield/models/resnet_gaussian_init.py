"""The Gaussian initial law of residual units u σ(⟨w, x⟩ + b) of the measure-valued ResNet.

:func:`unit_init` draws i.i.d. units θ = (u, w, b) ∈ R^D × R^D × R (the layout of
``models.resnet_unit``) with u ~ N(0, u_std² I_D), w ~ N(0, w_std²/D I_D), b ~ N(0, b_std²),
one set per replica, shared by every layer or independent per layer.
"""
from __future__ import annotations

import math

import torch


def unit_init(B: int, M: int, D: int, *, generator: torch.Generator, u_std: float, w_std: float,
              b_std: float, bias: bool = True, layers: int | None = None) -> torch.Tensor:
    """M i.i.d. residual units per replica: u ~ N(0, u_std² I_D), w ~ N(0, w_std²/D I_D),
    b ~ N(0, b_std²) (drawn in that order from ``generator``, float64; no b column when
    ``bias`` is false); [B, M, P], or [B, layers, M, P] (independent per layer) when
    ``layers``, P = 2D + 1 (2D without bias)."""
    shape = (B, M) if layers is None else (B, layers, M)
    u = torch.randn(*shape, D, generator=generator, dtype=torch.float64) * u_std
    w = torch.randn(*shape, D, generator=generator, dtype=torch.float64) * (w_std / math.sqrt(D))
    cols = [u, w]
    if bias:
        cols.append(torch.randn(*shape, 1, generator=generator, dtype=torch.float64) * b_std)
    return torch.cat(cols, -1)


__all__ = ["unit_init"]
