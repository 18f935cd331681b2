"""Initialisers of the measure-valued ResNet: random Fourier feature units, Matérn kernels.

:func:`random_fourier_units` draws the units θ_j = (u_j = 0, w_j = ω_j, b_j = φ_j) of the RKHS
ResNet (Barboni–Peyré–Vialard 2022; σ = cos), whose features ψ_j(x) = cos(⟨ω_j, x⟩ + φ_j) have
covariance ½ k_ν; :func:`matern_kernel` is that Matérn kernel k_ν in closed form.  Both are
re-exported by ``models.resnet``.
"""
from __future__ import annotations

import math

import torch

from ..errors import ConfigError, check_positive_int


def random_fourier_units(M: int, D: int, *, nu: float, generator: torch.Generator,
                         lengthscale: float = 1.0, replicas: int = 1) -> torch.Tensor:
    """Random Fourier features as units of the RKHS ResNet (Barboni–Peyré–Vialard 2022):
    θ_j = (u_j = 0, w_j = ω_j, b_j = φ_j) with σ = cos, so that the residual
    Σ_j m_j u_j cos(⟨ω_j, x⟩ + φ_j) is Θ_s ψ(x) with ψ_j(x) = cos(⟨ω_j, x⟩ + φ_j).

    ω_j = g_j sqrt(2ν / χ²_{2ν}) / ℓ with g_j ~ N(0, I_D): a multivariate Student t with 2ν
    degrees of freedom, the spectral density of the Matérn-ν kernel of length ℓ (ν = inf:
    ω_j ~ N(0, I_D/ℓ²), the Gaussian kernel); φ_j ~ U[0, 2π).  Then
    E[ψ(x)ψ(x')] = ½ k_ν(|x − x'|) (:func:`matern_kernel`).  χ²_{2ν} is a sum of 2ν squared
    normals, so ν must be a half-integer (2ν ∈ N) or inf.  Returns [replicas, M, 2D + 1]."""
    M = check_positive_int("M", M)
    D = check_positive_int("D", D)
    R = check_positive_int("replicas", replicas)
    nu = float(nu)
    if not (nu == math.inf or (nu > 0 and abs(2 * nu - round(2 * nu)) < 1e-12)):
        raise ConfigError(f"nu must be a half-integer (0.5, 1, 1.5, …) or inf, got {nu!r}")
    if not (math.isfinite(lengthscale) and lengthscale > 0):
        raise ConfigError(f"lengthscale must be finite and > 0, got {lengthscale!r}")
    g = torch.randn(R, M, D, generator=generator, dtype=torch.float64)
    if nu != math.inf:
        k = int(round(2 * nu))
        chi2 = (torch.randn(R, M, k, generator=generator, dtype=torch.float64) ** 2).sum(-1, keepdim=True)
        g = g * torch.sqrt(2 * nu / chi2)
    phase = 2 * math.pi * torch.rand(R, M, 1, generator=generator, dtype=torch.float64)
    return torch.cat([torch.zeros(R, M, D, dtype=torch.float64), g / lengthscale, phase], -1)


def matern_kernel(r, nu: float, lengthscale: float = 1.0):
    """k_ν(r) for ν ∈ {0.5, 1.5, 2.5, inf} (closed forms): e^{−r/ℓ}, (1 + √3 r/ℓ) e^{−√3 r/ℓ},
    (1 + √5 r/ℓ + 5r²/(3ℓ²)) e^{−√5 r/ℓ}, e^{−r²/(2ℓ²)}."""
    r = torch.as_tensor(r, dtype=torch.float64) / lengthscale
    if nu == 0.5:
        return torch.exp(-r)
    if nu == 1.5:
        return (1 + math.sqrt(3) * r) * torch.exp(-math.sqrt(3) * r)
    if nu == 2.5:
        return (1 + math.sqrt(5) * r + 5 * r * r / 3) * torch.exp(-math.sqrt(5) * r)
    if nu == math.inf:
        return torch.exp(-0.5 * r * r)
    raise ConfigError(f"closed-form Matérn kernels: nu in 0.5, 1.5, 2.5, inf; got {nu!r}")


__all__ = ["matern_kernel", "random_fourier_units"]
