"""The tangent kernel of a two-layer network in mean-field normalisation: empirical, and at
infinite width in closed form.

For ρ_N = Σ_j m_j δ_{θ_j} (m_j = 1/N unless weighted) the tangent kernel is

    K(x, x') = Σ_j m_j ⟨∇_θφ(x; θ_j), ∇_θφ(x'; θ_j)⟩ = ∫ ⟨∇_θφ(x; θ), ∇_θφ(x'; θ)⟩ ρ(dθ),

and for φ = a σ(⟨w, x⟩ + b), with z = ⟨w, x⟩ + b,

    ⟨∇_θφ(x; θ), ∇_θφ(x'; θ)⟩ = σ(z) σ(z') + a² σ'(z) σ'(z') (⟨x, x'⟩ + 1_bias)

(the first term only with an output weight; a ≡ 1 without).  It is N times the neural
tangent kernel of f = Σ_j m_j φ(·; θ_j) in the parameters θ = (θ_1 … θ_N) (Jacot–Gabriel–
Hongler 2018), because ∂f/∂θ_j = m_j ∇_θφ(·; θ_j): the factor that the mean-field time axis
(θ̇_j = −2∇Ψ(θ_j) = −(1/m_j) ∂R/∂θ_j, docs/design.md §1) puts on the gradient.  Along that
flow the network moves by

    ∂_t f(x) = −2 ξ(t) E_{x'}[K_t(x, x') r(x')],   r = ½∂_fℓ(y, f)  (f − y for the squared loss),

and so does the scaled network f_α = α(f − f_0) of ``models.scaled`` at every α: α enters
only through how fast K_t itself moves (particles at speed O(1/α)).  On a finite dataset of
n points, (1/n) K is the operator of this linear system; its Rayleigh quotient along the
residual, ⟨r, K r⟩/‖r‖², bounds the decay of the risk (Robin–Scaman–Lelarge 2022; see
``diagnostics.kernel_rayleigh``).

At initialisation with i.i.d. units, a ~ N(μ_a, s_a²), w ~ N(0, s_w² I_d), b ~ N(0, s_b²), K
converges as N → ∞ (at rate N^{-1/2}, a Monte Carlo average) to

    K_∞(x, x') = E[σ(u) σ(v)] + E[a²] E[σ'(u) σ'(v)] (⟨x, x'⟩ + 1_bias),

(u, v) centred Gaussian with variances q = s_w²|x|² + s_b², q' = s_w²|x'|² + s_b² and
covariance c = s_w²⟨x, x'⟩ + s_b², in closed form for

* ReLU (the arc-cosine kernels of degrees 1 and 0, Cho–Saul 2009), with cos ϑ = c/√(qq'):
  E[σ(u)σ(v)] = √(qq') (sin ϑ + (π − ϑ) cos ϑ)/(2π),   E[σ'(u)σ'(v)] = (π − ϑ)/(2π);
* erf (σ(z) = erf(z/√2), the arcsine kernel, Williams 1997):
  E[σ(u)σ(v)] = (2/π) arcsin(c/√((1 + q)(1 + q'))),
  E[σ'(u)σ'(v)] = (2/π) / √((1 + q)(1 + q') − c²).
"""
from __future__ import annotations

import math

import torch

from ..errors import ConfigError, check_finite_float
from .activations import get_activation
from .task_base import as_batched, as_weights
from .units import Unit

INFINITE_WIDTH_ACTIVATIONS = ("relu", "erf")


def tangent_kernel(unit: Unit, theta: torch.Tensor, X: torch.Tensor, X2: torch.Tensor | None = None,
                   weights=None, *, chunk: int = 4096) -> torch.Tensor:
    """The empirical tangent kernel K(x_k, x'_l) = Σ_j m_j ⟨∇_θφ(x_k; θ_j), ∇_θφ(x'_l; θ_j)⟩
    (module docstring) for θ [N, D] → [n, n'], or θ [B, N, D] → [B, n, n'] (one kernel per
    replica), X [n, d] (or [B, n, d]), X2 [n', d] (default X), weights [N] / [B, N] (default
    uniform 1/N).  In θ's dtype and device; the particles are summed in chunks of ``chunk``
    (memory O(B·n·chunk)).  ``ConfigError`` for shapes that do not match the unit."""
    flat = theta.dim() == 2
    theta = as_batched(theta)
    unit.check_theta(theta)
    m = as_weights(weights, theta)
    X = torch.as_tensor(X, dtype=theta.dtype, device=theta.device)
    X2 = X if X2 is None else torch.as_tensor(X2, dtype=theta.dtype, device=theta.device)
    X, X2 = (x if x.dim() == 3 else x.unsqueeze(0) for x in (X, X2))
    unit.check_x(X)
    unit.check_x(X2)
    B = theta.shape[0]
    inner = X @ X2.transpose(-1, -2)                                     # (B or 1, n, n')
    if unit.bias:
        inner = inner + 1.0
    K = torch.zeros(B, X.shape[-2], X2.shape[-2], dtype=theta.dtype, device=theta.device)
    for lo in range(0, theta.shape[-2], chunk):
        th = theta[:, lo:lo + chunk]
        mj = m[:, lo:lo + chunk].unsqueeze(-2)                          # (B or 1, 1, c)
        a, _, _ = unit.split(th)
        z, z2 = unit.preactivation(X, th), unit.preactivation(X2, th)  # (B, n, c), (B, n', c)
        d, d2 = unit.activation.derivative(z), unit.activation.derivative(z2)
        if a is not None:
            d, d2 = d * a.unsqueeze(-2), d2 * a.unsqueeze(-2)
            s, s2 = unit.activation(z), unit.activation(z2)
            K += (s * mj) @ s2.transpose(-1, -2)
        K += ((d * mj) @ d2.transpose(-1, -2)) * inner
    return K[0] if flat else K


def infinite_width_tangent_kernel(activation, X: torch.Tensor, X2: torch.Tensor | None = None, *,
                                  w_std: float = 1.0, b_std: float | None = None,
                                  a_mean: float = 0.0, a_std: float = 1.0,
                                  output_weight: bool = True) -> torch.Tensor:
    """K_∞(x_k, x'_l) [n, n'] in closed form (module docstring) for i.i.d. units with
    w ~ N(0, w_std² I_d), b ~ N(0, b_std²) (``b_std=None``: no bias), a ~ N(a_mean, a_std²)
    (``output_weight=False``: a ≡ 1 and no a-gradient); X [n, d], X2 [n', d] (default X), in
    float64.  ``ConfigError`` for an activation other than relu or erf, or a bad std."""
    act = get_activation(activation)
    if act.name not in INFINITE_WIDTH_ACTIVATIONS or act.params:
        raise ConfigError(f"the infinite-width tangent kernel is in closed form for "
                          f"{list(INFINITE_WIDTH_ACTIVATIONS)}, got {act.name!r}")
    w_std = check_finite_float("w_std", w_std, nonnegative=True)
    a_std = check_finite_float("a_std", a_std, nonnegative=True)
    a_mean = check_finite_float("a_mean", a_mean)
    sb2 = 0.0 if b_std is None else check_finite_float("b_std", b_std, nonnegative=True) ** 2
    X = torch.as_tensor(X, dtype=torch.float64)
    X2 = X if X2 is None else torch.as_tensor(X2, dtype=torch.float64)
    if X.dim() != 2 or X2.dim() != 2 or X.shape[1] != X2.shape[1]:
        raise ConfigError(f"X and X2 must be [n, d] and [n', d], got {list(X.shape)} and {list(X2.shape)}")
    inner = X @ X2.T
    q = (w_std ** 2 * (X * X).sum(-1) + sb2)[:, None]                  # (n, 1)
    q2 = (w_std ** 2 * (X2 * X2).sum(-1) + sb2)[None, :]               # (1, n')
    c = w_std ** 2 * inner + sb2
    if act.name == "relu":
        norm = torch.sqrt(q * q2)
        cos = torch.where(norm > 0, c / torch.where(norm > 0, norm, 1.0), torch.ones_like(c))
        ang = torch.arccos(cos.clamp(-1.0, 1.0))
        ss = norm * (torch.sin(ang) + (math.pi - ang) * torch.cos(ang)) / (2 * math.pi)
        dd = (math.pi - ang) / (2 * math.pi)
    else:
        ss = (2 / math.pi) * torch.arcsin((c / torch.sqrt((1 + q) * (1 + q2))).clamp(-1.0, 1.0))
        dd = (2 / math.pi) / torch.sqrt((1 + q) * (1 + q2) - c * c)
    a2 = a_mean ** 2 + a_std ** 2 if output_weight else 1.0
    K = a2 * dd * (inner + (1.0 if b_std is not None else 0.0))
    return K + ss if output_weight else K
