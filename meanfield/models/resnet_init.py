"""Initialisers of the measure-valued ResNet: random Fourier feature units, Matérn kernels.

:func:`random_fourier_units` draws the units θ_j = (u_j = 0, w_j = ω_j, b_j = φ_j) of the RKHS
ResNet (Barboni–Peyré–Vialard 2022; σ = cos), whose features ψ_j(x) = cos(⟨ω_j, x⟩ + φ_j) have
covariance ½ k_ν; :func:`matern_kernel` is that Matérn kernel k_ν (closed forms, K_ν for integer ν).  Both are
re-exported by ``models.resnet``.
"""
from __future__ import annotations

import math

import numpy as np
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
    """The Matérn kernel k_ν(r) = 2^{1−ν}/Γ(ν) z^ν K_ν(z), z = √(2ν) r/ℓ (k_ν(0) = 1), for the
    ν that :func:`random_fourier_units` draws: ν > 0 a half-integer, or inf.  Closed forms for
    ν = p + ½: e^{−z} p!/(2p)! Σ_{i≤p} (p+i)!/(i!(p−i)!) (2z)^{p−i} (e^{−r/ℓ},
    (1 + √3 r/ℓ) e^{−√3 r/ℓ}, (1 + √5 r/ℓ + 5r²/(3ℓ²)) e^{−√5 r/ℓ}, …) and ν = inf:
    e^{−r²/(2ℓ²)}; integer ν through the modified Bessel function K_ν (``scipy.special.kv``;
    no autograd).  ν = 1 is the case with a logarithm at leading order: 1 − k_1(r) = (z²/2)(log(2/z) − γ + ½) + O(z⁴ log z).  All in
    float64; ``ConfigError`` for any other ν."""
    r = torch.as_tensor(r, dtype=torch.float64) / lengthscale
    nu = float(nu)
    if nu == 0.5:
        return torch.exp(-r)
    if nu == 1.5:
        return (1 + math.sqrt(3) * r) * torch.exp(-math.sqrt(3) * r)
    if nu == 2.5:
        return (1 + math.sqrt(5) * r + 5 * r * r / 3) * torch.exp(-math.sqrt(5) * r)
    if nu == math.inf:
        return torch.exp(-0.5 * r * r)
    if not (nu > 0 and abs(2 * nu - round(2 * nu)) < 1e-12):
        raise ConfigError(f"Matérn kernels: nu must be a half-integer (0.5, 1, 1.5, …) or inf, got {nu!r}")
    z = math.sqrt(2 * nu) * r
    if round(2 * nu) % 2:                                   # ν = p + ½: polynomial × e^{−z}
        p = int(round(nu - 0.5))
        poly = sum(math.factorial(p + i) / (math.factorial(i) * math.factorial(p - i)) * (2 * z) ** (p - i)
                   for i in range(p + 1))
        return poly * torch.exp(-z) * math.factorial(p) / math.factorial(2 * p)
    from scipy import special

    n = int(round(nu))
    zn = z.detach().cpu().numpy()
    with np.errstate(invalid="ignore", over="ignore"):
        k = np.where(zn > 0, 2.0 ** (1 - n) / math.factorial(n - 1) * zn ** n * special.kv(n, zn), 1.0)
    return torch.as_tensor(np.nan_to_num(k, nan=0.0), dtype=torch.float64)   # kv underflow at huge z: 0


__all__ = ["matern_kernel", "random_fourier_units"]
