"""Tasks: the data law (x, y) a two-layer mean-field network is trained on.

A task says WHAT is minimised: the risk

    R(ρ) = E[(y − f(x; ρ))²] = R_# + 2 ∫ V dρ + ∬ U dρ dρ,      (no ½; Mei–Montanari–Nguyen)
    V(θ) = −E[y φ(x; θ)],  U(θ, θ') = E[φ(x; θ) φ(x; θ')],  R_# = E[y²],
    Ψ(θ; ρ) = V(θ) + ∫ U(θ, θ') ρ(dθ') = E[(f(x; ρ) − y) φ(x; θ)].

Every task can *sample* (x, y) and estimate Ψ, ∇_θΨ and R from a batch
(:meth:`Task.sample_potential`, any activation).

**Losses.**  The squared loss above is the default of every task.  A finite dataset can use
the logistic loss instead (labels y ∈ {−1, +1}, Chizat–Bach 2020):

    R(ρ) = E[ℓ(y, f(x; ρ))],   ℓ(y, f) = log(1 + e^{−y f}),
    Ψ(θ; ρ) = ½ δR/δρ(θ) = E[½ ∂_fℓ(y, f(x; ρ)) φ(x; θ)],   ½ ∂_fℓ = −(y/2) σ(−y f)

(σ the logistic sigmoid): Ψ is again ½ the first variation of R, so the dynamics, the time
axis and the free energy ½R + (λ/2)∫|θ|² dρ − β⁻¹H(ρ) keep their meaning (DESIGN.md §1).
For the squared loss ½∂_fℓ = f − y, the residual of the formulas above.  There is no V/U
decomposition for the logistic loss (R is not quadratic in ρ).  Tasks with ``closed_form = True``
(teacher–student with Gaussian inputs and a ReLU/erf unit without bias) also expose the
pair kernel U and the teacher as a weighted point set, so that
``meanfield.interact.evaluate`` computes Ψ, ∇Ψ and R exactly as pairwise sums.

Shapes: θ [B, N, D] (B replicas of N particles), weights m [B or 1, N] (Σ_i m_i = 1),
x [B, n, d], y [B, n].
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from ..errors import ConfigError, check_finite_float, check_positive_int
from .kernels import CLOSED_FORM_ACTIVATIONS, GaussianKernel, gaussian_kernel, has_gaussian_kernel
from .units import Unit


@dataclass
class Potential:
    """Ψ(θ_i; ρ), ∇_θΨ(θ_i; ρ) at every particle, and the risk R(ρ).

    psi [B, N], grad [B, N, D], risk [B]; ``risk_se`` [B] is the standard error of a Monte
    Carlo risk estimate (None when exact); ``V`` [B, N] when available.
    """

    psi: torch.Tensor
    grad: torch.Tensor
    risk: torch.Tensor
    risk_se: Optional[torch.Tensor] = None
    V: Optional[torch.Tensor] = None


def as_batched(theta: torch.Tensor) -> torch.Tensor:
    """θ [N, D] → [1, N, D]; θ [B, N, D] unchanged."""
    if not isinstance(theta, torch.Tensor):
        raise ConfigError(f"particle positions must be a torch.Tensor, got {type(theta).__name__}")
    if theta.dim() == 2:
        return theta.unsqueeze(0)
    if theta.dim() != 3:
        raise ConfigError(f"particle positions must have shape [N, D] or [B, N, D], got {list(theta.shape)}")
    return theta


def uniform_weights(theta: torch.Tensor) -> torch.Tensor:
    """m_i = 1/N as a [1, N] tensor matching θ [B, N, D]."""
    N = theta.shape[-2]
    return torch.full((1, N), 1.0 / N, dtype=theta.dtype, device=theta.device)


def as_weights(weights, theta: torch.Tensor) -> torch.Tensor:
    """Normalise weights (None, [N] or [B, N]) to a [B or 1, N] tensor of θ's dtype."""
    if weights is None:
        return uniform_weights(theta)
    w = torch.as_tensor(weights, dtype=theta.dtype, device=theta.device)
    if w.dim() == 1:
        w = w.unsqueeze(0)
    if w.shape[-1] != theta.shape[-2] or w.dim() != 2 or w.shape[0] not in (1, theta.shape[0]):
        raise ConfigError(f"weights of shape {list(w.shape)} do not match {theta.shape[-2]} particles")
    return w


LOSSES = ("squared", "logistic")


def loss_terms(loss: str, f: torch.Tensor, y: torch.Tensor):
    """(r, ℓ) for network outputs f and labels y (same shape): the half loss derivative
    r = ½ ∂_fℓ(y, f) and the loss ℓ(y, f) itself, both without ½ in ℓ (DESIGN.md §1).

    squared:  r = f − y,              ℓ = (y − f)²;
    logistic: r = −(y/2) σ(−y f),     ℓ = log(1 + e^{−y f}) = logaddexp(0, −y f),
    both numerically stable for any f (``torch.sigmoid`` and ``torch.logaddexp``)."""
    if loss == "squared":
        r = f - y
        return r, r * r
    if loss == "logistic":
        m = -y * f
        return -0.5 * y * torch.sigmoid(m), torch.logaddexp(torch.zeros_like(m), m)
    raise ConfigError(f"unknown loss {loss!r}; choose one of {list(LOSSES)}")


class Task:
    """Base class: a unit and a data law.  Subclasses implement :meth:`sample`.

    ``loss`` is "squared" (every task) or "logistic" (:class:`FiniteDataset` with labels ±1);
    see the module docstring."""

    unit: Unit
    closed_form: bool = False
    name: str = "task"
    loss: str = "squared"

    def sample(self, n: int, *, generator: torch.Generator, batch: int = 1,
               dtype=torch.float32, device=None):
        """Draw x [batch, n, d] and y [batch, n] (independent across the batch)."""
        raise NotImplementedError

    @property
    def D(self) -> int:
        """Parameters per particle (the unit's D)."""
        return self.unit.D

    @property
    def param_names(self) -> list[str]:
        """The D coordinate names of a particle (the unit's ``param_names``)."""
        return self.unit.param_names

    def check_theta(self, theta) -> None:
        """``ConfigError`` unless θ's last dimension is D."""
        self.unit.check_theta(theta)

    @property
    def has_population(self) -> bool:
        """Whether :meth:`population_potential` is exact (closed form or full data)."""
        return False

    def population_reason(self) -> Optional[str]:
        """Why this task has no exact population potential (one sentence), or None when it
        has one (:attr:`has_population`).  Used in the errors of the dynamics and of
        ``interact.evaluate``."""
        if self.has_population:
            return None
        return f"task {self.name!r} is sample-based (its data law has no closed-form potentials)"

    def population_potential(self, theta: torch.Tensor, weights: torch.Tensor,
                             pair_sum) -> Potential:
        """Exact Ψ, ∇Ψ, R at θ [B, N, D] with weights [B or 1, N].

        ``pair_sum(kernel, unit, x, y, c, grad=True) -> (S, G)`` is the interaction
        backend's kernel sum (supplied by ``meanfield.interact.evaluate``; models never
        import a backend)."""
        raise ConfigError(f"task {self.name!r} has no exact population potential: "
                          f"{self.population_reason()}")

    @property
    def risk_sharp(self) -> Optional[float]:
        """R_# = E[y²] when known in closed form, else None."""
        return None

    def sample_potential(self, theta: torch.Tensor, weights, x: torch.Tensor,
                         y: torch.Tensor) -> Potential:
        """Unbiased batch estimates from (x [B, n, d], y [B, n]), with r_k = ½∂_fℓ(y_k, f(x_k))
        (:func:`loss_terms`; r_k = f(x_k) − y_k for the squared loss):

            Ψ̂(θ_i) = (1/n) Σ_k r_k φ(x_k; θ_i),  ∇Ψ̂ likewise with ∇_θφ,
            R̂ = (1/n) Σ_k ℓ(y_k, f(x_k))  (squared: (y_k − f(x_k))²) with standard error sd/√n.
        """
        theta = as_batched(theta)
        m = as_weights(weights, theta)
        n = x.shape[-2]
        phi = self.unit(x, theta)                                   # (B, n, N)
        f = (phi @ m.unsqueeze(-1)).squeeze(-1)                     # (B, n)
        r, ell = loss_terms(self.loss, f, y)                        # (B, n), (B, n)
        psi = (r.unsqueeze(-2) @ phi).squeeze(-2) / n               # (B, N)
        grad = self.unit.weighted_grad(x, theta, r / n)             # (B, N, D)
        risk = ell.mean(-1)
        se = ell.std(-1) / math.sqrt(n) if n > 1 else torch.full_like(risk, float("nan"))
        return Potential(psi=psi, grad=grad, risk=risk, risk_se=se)

    def _squared_only(self, what: str) -> None:
        if self.loss != "squared":
            raise ConfigError(f"{what} is the squared loss's decomposition R = R_# + 2∫V dρ + ∬U dρdρ; "
                              f"this task uses the {self.loss} loss, which has none")

    def sample_V(self, theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor):
        """V̂(θ_i) = −(1/n) Σ_k y_k φ(x_k; θ_i) and its standard error, each [B, N]
        (squared loss only)."""
        self._squared_only("V")
        prod = -y.unsqueeze(-1) * self.unit(x, as_batched(theta))      # (B, n, N)
        return prod.mean(-2), prod.std(-2) / math.sqrt(x.shape[-2])

    def sample_U(self, theta: torch.Tensor, theta2: torch.Tensor, x: torch.Tensor):
        """Û(θ_i, θ'_j) = (1/n) Σ_k φ(x_k; θ_i) φ(x_k; θ'_j), [B, N, M] (x [B, n, d];
        squared loss only)."""
        self._squared_only("U")
        p1 = self.unit(x, as_batched(theta))                         # (B, n, N)
        p2 = self.unit(x, as_batched(theta2))                        # (B, n, M)
        return p1.transpose(-1, -2) @ p2 / x.shape[-2]

    # --- serialisation ---------------------------------------------------------------
    def to_dict(self) -> dict:
        """A JSON-serialisable description: {"name", "unit"} plus each subclass's scalar
        settings; the arrays needed to rebuild the task are in :meth:`arrays`."""
        return {"name": self.name, "unit": self.unit.to_dict()}

    def arrays(self) -> dict:
        """Arrays needed to rebuild the task (saved in particles.npz)."""
        return {}


class _TorchMath:
    """The ``ops`` namespace of ``models.kernels`` for torch tensors (``sqrt``, ``acos``,
    ``asin``, ``clamp``), so that models evaluate their own kernels without a backend."""

    sqrt = staticmethod(torch.sqrt)
    acos = staticmethod(torch.acos)
    asin = staticmethod(torch.asin)

    @staticmethod
    def clamp(x, lo, hi):
        """min(max(x, lo), hi) elementwise (``torch.clamp``)."""
        return torch.clamp(x, lo, hi)


_SELF_SUM_TILE = 256    # rows = columns of one block of the teacher–teacher sum: 256² float64
                        # = 512 KiB per temporary (cache-resident; m0 = 20 000, d = 5: ≈ 0.8 s)


def _self_interaction(kernel: GaussianKernel, unit: Unit, theta: torch.Tensor,
                     weights: torch.Tensor, *, tile: int = _SELF_SUM_TILE) -> float:
    """Σ_{k,l} m_k m_l U(θ_k, θ_l) = Σ_{k,l} c_k c_l κ(w_k, w_l),  c_k = m_k a_k, in float64.

    θ [M, D] and m [M] (signed weights) for a bias-free ``unit`` whose closed-form Gaussian
    kernel is ``kernel`` (``models.kernels``: ReLU arc-cosine, Cho & Saul 2009; erf
    arcsine, Williams 1997), U(θ, θ') = a a' κ(w, w').  Plain dense torch, no interaction
    backend (models never import one): the M × M pairs are visited in ``tile`` × ``tile``
    blocks of the upper triangle, each off-diagonal block counted twice (κ is symmetric), so
    memory is O(tile² + M d) and the work M²/2 kernel evaluations."""
    theta = torch.as_tensor(theta).to(torch.float64)
    weights = torch.as_tensor(weights).to(dtype=torch.float64, device=theta.device)
    a = theta[:, 0] if unit.output_weight else torch.ones_like(theta[:, 0])
    w = theta[:, unit.w_slice]
    c = weights * a                                                      # [M]
    n = w.norm(dim=-1)                                                   # [M]
    M = w.shape[0]
    total = torch.zeros((), dtype=torch.float64, device=theta.device)
    with torch.no_grad():
        for i0 in range(0, M, tile):
            i1 = min(i0 + tile, M)
            wi, ni, ci = w[i0:i1], n[i0:i1, None], c[i0:i1]
            for j0 in range(i0, M, tile):
                j1 = min(j0 + tile, M)
                K = kernel.value(_TorchMath, wi @ w[j0:j1].T, ni, n[None, j0:j1])  # [T, T']
                s = ci @ (K @ c[j0:j1])
                total += s if j0 == i0 else 2 * s
    return float(total)


def _on_generator(generator) -> torch.device:
    """Where ``generator`` draws: random numbers are drawn there and then moved, so that a CPU
    generator drives a CUDA run with the CPU run's numbers (and its state checkpoints alike)."""
    return generator.device if generator is not None else torch.device("cpu")


def _gauss(shape, generator, dtype, device):
    z = torch.randn(*shape, generator=generator, dtype=dtype, device=_on_generator(generator))
    return z if device is None else z.to(device)


class TeacherStudent(Task):
    """y = c + f*(x) + noise_std·ξ with f*(x) = Σ_k m*_k φ(x; θ*_k), x ~ N(0, I_d), ξ ~ N(0, 1).

    The teacher uses the student's unit and parameter layout: ``teacher_theta`` [m0, D],
    ``teacher_weights`` [m0] (default 1/m0; signs allowed), ``offset`` c.  For ReLU/erf
    units without bias everything is closed form:

        V(θ) = −c a μ(w) − Σ_k m*_k U(θ, θ*_k),
        R_# = c² + 2c Σ_k m*_k a*_k μ(w*_k) + Σ_{k,l} m*_k m*_l U(θ*_k, θ*_l) + noise_std².
    """

    name = "teacher-student"

    def __init__(self, unit: Unit, teacher_theta, teacher_weights=None, *, offset: float = 0.0,
                 noise_std: float = 0.0):
        self.unit = unit
        t = torch.as_tensor(teacher_theta, dtype=torch.float64)
        if t.dim() != 2 or t.shape[-1] != unit.D:
            raise ConfigError(
                f"teacher_theta must have shape [m0, {unit.D}] for this unit, got {list(t.shape)}")
        if not torch.isfinite(t).all():
            raise ConfigError("teacher_theta has non-finite entries")
        self.teacher_theta = t
        if teacher_weights is None:
            tw = torch.full((t.shape[0],), 1.0 / t.shape[0], dtype=torch.float64)
        else:
            tw = torch.as_tensor(teacher_weights, dtype=torch.float64)
            if tw.shape != (t.shape[0],):
                raise ConfigError(
                    f"teacher_weights must have shape [{t.shape[0]}], got {list(tw.shape)}")
            if not torch.isfinite(tw).all():
                raise ConfigError("teacher_weights has non-finite entries")
        self.teacher_weights = tw
        self.offset = check_finite_float("offset", offset)
        self.noise_std = check_finite_float("noise_std", noise_std, nonnegative=True)
        self.closed_form = has_gaussian_kernel(unit)
        self._cache: dict = {}

    @classmethod
    def random(cls, unit: Unit, m0: int, *, generator: torch.Generator, sign: str = "plus",
               **kwargs) -> "TeacherStudent":
        """A teacher of m0 units with unit-norm w*_k uniform on the sphere, a*_k = 1 and
        weights 1/m0 (``sign="plus"``) or alternating ±1/m0 (``sign="alternate"``)."""
        m0 = check_positive_int("m0", m0)
        w = _gauss((m0, unit.d), generator, torch.float64, None)
        w = w / w.norm(dim=-1, keepdim=True)
        cols = ([torch.ones(m0, 1, dtype=torch.float64)] if unit.output_weight else []) + [w]
        if unit.bias:
            cols.append(torch.zeros(m0, 1, dtype=torch.float64))
        theta = torch.cat(cols, dim=-1)
        weights = torch.full((m0,), 1.0 / m0, dtype=torch.float64)
        if sign == "alternate":
            weights[1::2] *= -1
        elif sign != "plus":
            raise ConfigError(f"sign must be 'plus' or 'alternate', got {sign!r}")
        return cls(unit, theta, weights, **kwargs)

    @property
    def kernel(self) -> GaussianKernel:
        """The closed-form Gaussian kernel κ of the unit (``ConfigError`` when there is none)."""
        return gaussian_kernel(self.unit)

    def population_reason(self):
        """None for units with exact potentials, else which combination is missing.  Exact
        (closed-form) teacher–student potentials exist for x ~ N(0, I_d) and units
        a·σ(⟨w, x⟩) or σ(⟨w, x⟩) **without bias** with σ ∈ {relu, erf} (the arc-cosine and
        arcsine kernels).  A bias b makes ⟨w, x⟩ + b a Gaussian with non-zero mean, whose
        ReLU/erf moments are bivariate-normal integrals that are not implemented; every other
        σ has no closed form here.  Those units train by sampling (drift='sgd')."""
        if self.closed_form:
            return None
        unit = self.unit
        name = unit.activation.name
        if unit.bias and name in CLOSED_FORM_ACTIVATIONS:
            what = f"{name} units with a bias (bias=True) have none"
        else:
            what = f"activation {name!r} has none"
        return (f"exact teacher-student potentials exist only for units without bias and "
                f"activation in {list(CLOSED_FORM_ACTIVATIONS)}, with or without output weight; "
                f"{what} — train them by sampling (drift='sgd')")

    @property
    def has_population(self) -> bool:
        return self.closed_form

    def population_potential(self, theta, weights, pair_sum):
        """V_i = −c a_i μ(w_i) − Σ_k m*_k U(θ_i, θ*_k),   Ψ_i = V_i + Σ_j m_j U(θ_i, θ_j),
        R = R_# + 2 Σ_i m_i V_i + Σ_ij m_i m_j U_ij = R_# + Σ_i m_i (Ψ_i + V_i)."""
        unit, kern = self.unit, self.kernel
        tt, tw = self.teacher(theta.dtype, theta.device)
        W, GW = pair_sum(kern, unit, theta, theta, weights)
        T, GT = pair_sum(kern, unit, theta, tt[None], tw[None])
        W, GW, T, GT = (t.to(device=theta.device, dtype=theta.dtype) for t in (W, GW, T, GT))
        V, GV = -T, -GT
        if self.offset != 0.0:
            mu, gmean = self._mean_and_grad(theta)
            V, GV = V - self.offset * mu, GV - self.offset * gmean
        psi = V + W
        risk = self.risk_sharp + ((psi + V) * weights).sum(-1)
        return Potential(psi=psi, grad=GV + GW, risk=risk, V=V)

    def _mean_and_grad(self, theta):
        """E[φ(x; θ)] = a μ(w) [..., N] and its gradient [..., N, D]."""
        unit = self.unit
        a = theta[..., 0] if unit.output_weight else torch.ones_like(theta[..., 0])
        w = theta[..., unit.w_slice]
        mu, gamma = self.kernel.mean(_TorchMath, w.norm(dim=-1))
        gw = (a * gamma).unsqueeze(-1) * w
        grad = torch.cat([mu.unsqueeze(-1), gw], -1) if unit.output_weight else gw
        return a * mu, grad

    def _compute_risk_sharp(self) -> float:
        """R_# in float64 from the closed-form kernel: the teacher–teacher sum by
        :func:`_self_interaction` (θ* [m0, D], m* [m0]; no interaction backend)."""
        tt, tw = self.teacher(torch.float64)
        mean, _ = self._mean_and_grad(tt)
        c = self.offset
        return (c * c + 2 * c * float((tw * mean).sum())
                + _self_interaction(self.kernel, self.unit, tt, tw) + self.noise_std ** 2)

    @property
    def m0(self) -> int:
        """The number of teacher units."""
        return self.teacher_theta.shape[0]

    def teacher(self, dtype=torch.float64, device=None):
        """(θ* [m0, D], m* [m0]) in the requested dtype/device."""
        key = ("teacher", dtype, device)
        if key not in self._cache:
            self._cache[key] = (self.teacher_theta.to(dtype=dtype, device=device),
                                self.teacher_weights.to(dtype=dtype, device=device))
        return self._cache[key]

    def sample(self, n, *, generator, batch=1, dtype=torch.float32, device=None):
        n = check_positive_int("n", n)
        x = _gauss((batch, n, self.unit.d), generator, dtype, device)
        tt, tw = self.teacher(dtype, device)
        y = self.unit.network(x, tt.unsqueeze(0), tw.unsqueeze(0)) + self.offset
        if self.noise_std > 0:
            y = y + self.noise_std * _gauss((batch, n), generator, dtype, device)
        return x, y

    @property
    def risk_sharp(self):
        """R_# = E[y²] = c² + 2c Σ_k m*_k a*_k μ(w*_k) + Σ_kl m*_k m*_l U(θ*_k, θ*_l) +
        noise_std², in float64: computed once on first access (the teacher–teacher double sum
        by :func:`_self_interaction`, dense torch tiles of the closed-form kernel, whatever
        backend :meth:`population_potential` is given) and cached; None when the unit has no
        closed-form kernel (R_# is then unknown)."""
        if "risk_sharp" not in self._cache and self.closed_form:
            self._cache["risk_sharp"] = self._compute_risk_sharp()
        return self._cache.get("risk_sharp")

    def to_dict(self):
        """{"name", "unit", "m0", "offset", "noise_std"} (JSON-serialisable); the teacher is
        in :meth:`arrays`."""
        return {**super().to_dict(), "m0": self.m0, "offset": self.offset,
                "noise_std": self.noise_std}

    def arrays(self):
        return {"teacher_theta": self.teacher_theta.numpy(),
                "teacher_weights": self.teacher_weights.numpy()}


class IsotropicGaussians(Task):
    """Mei–Montanari–Nguyen's isotropic Gaussians: y = ±1 with probability ½ each and
    x | y ~ N(0, (1 + yΔ)² I_d), 0 ≤ Δ < 1.  R_# = 1.  Sample-based only."""

    name = "isotropic-gaussians"

    def __init__(self, unit: Unit, delta: float):
        self.unit = unit
        self.delta = check_finite_float("delta", delta, nonnegative=True)
        if not self.delta < 1:
            raise ConfigError(f"delta must be in [0, 1), got {delta!r}")

    def sample(self, n, *, generator, batch=1, dtype=torch.float32, device=None):
        x, y = self.sample_steps(1, n, generator=generator, batch=batch, dtype=dtype, device=device)
        return x[0], y[0]

    def sample_steps(self, K: int, n: int, *, generator, batch=1, dtype=torch.float32, device=None):
        """K consecutive draws of ``sample(n)`` in one call: x [K, batch, n, d], y [K, batch, n].

        Every sample consumes 1 + 2⌈d/2⌉ float64 uniforms u from the generator: y = +1 when
        u₀ < ½ else −1, and Box–Muller on the pairs (u₁, u₂), (u₃, u₄), … gives the d Gaussians
        (x = (1 + Δy) z).  CPU uniforms are drawn serially, so one call for K steps returns
        exactly the numbers of K calls for one step each (the fast online-SGD path relies on it).
        """
        K, n = check_positive_int("K", K), check_positive_int("n", n)
        d = self.unit.d
        pairs = (d + 1) // 2
        u = torch.rand((K, batch, n, 1 + 2 * pairs), generator=generator, dtype=torch.float64,
                       device=_on_generator(generator))
        u = u if device is None else u.to(device)
        y = torch.where(u[..., 0] < 0.5, 1.0, -1.0)
        rad = torch.sqrt(-2.0 * torch.log1p(-u[..., 1::2]))                 # 1 − u ∈ (0, 1]
        ang = (2.0 * math.pi) * u[..., 2::2]
        z = torch.cat([rad * torch.cos(ang), rad * torch.sin(ang)], -1)[..., :d]
        x = z * (1.0 + self.delta * y).unsqueeze(-1)
        return x.to(dtype), y.to(dtype)

    @property
    def risk_sharp(self):
        return 1.0

    def to_dict(self):
        """{"name", "unit", "delta"} (JSON-serialisable)."""
        return {**super().to_dict(), "delta": self.delta}


class FiniteDataset(Task):
    """The empirical risk of a fixed dataset (X [n, d], Y [n]):

        squared  (default):  R = (1/n) Σ_k (Y_k − f(X_k))²,
        logistic (Y ∈ {−1, +1}):  R = (1/n) Σ_k log(1 + e^{−Y_k f(X_k)})

    (no ½; Ψ = ½ δR/δρ, see the module docstring).  ``sample`` draws a minibatch with
    replacement; ``full()`` returns the whole dataset, so that ``sample_potential(θ, m,
    *task.full())`` is the exact empirical Ψ, ∇Ψ, R (``has_population``: population drift is
    full-batch gradient descent).  :meth:`outputs`, :meth:`risk`, :meth:`accuracy` and
    :meth:`margin` evaluate a measure on the data without gradients.

    ``ConfigError`` for X not [n, d] with the unit's d, Y not [n], n < 1, non-finite entries,
    an unknown loss, or logistic labels outside {−1, +1}.
    """

    name = "dataset"

    def __init__(self, unit: Unit, X, Y, *, loss: str = "squared"):
        self.unit = unit
        if loss not in LOSSES:
            raise ConfigError(f"unknown loss {loss!r}; choose one of {list(LOSSES)}")
        self.loss = loss
        X = torch.as_tensor(np.asarray(X), dtype=torch.float64)
        Y = torch.as_tensor(np.asarray(Y), dtype=torch.float64)
        if X.dim() != 2 or X.shape[1] != unit.d:
            raise ConfigError(f"X must have shape [n, {unit.d}], got {list(X.shape)}")
        if Y.shape != (X.shape[0],):
            raise ConfigError(f"Y must have shape [{X.shape[0]}], got {list(Y.shape)}")
        if X.shape[0] < 1:
            raise ConfigError("the dataset has no points")
        if not (torch.isfinite(X).all() and torch.isfinite(Y).all()):
            raise ConfigError("the dataset has non-finite entries")
        if loss == "logistic" and not ((Y == 1) | (Y == -1)).all():
            bad = sorted({float(v) for v in Y[(Y != 1) & (Y != -1)][:5]})
            raise ConfigError(f"the logistic loss needs labels y in {{-1, +1}}, got e.g. {bad}")
        self.X, self.Y = X, Y

    @property
    def has_population(self) -> bool:
        return True

    def population_potential(self, theta, weights, pair_sum=None):
        """The exact empirical Ψ, ∇Ψ, R (a full batch; no standard error)."""
        x, y = self.full(theta.dtype, theta.device)
        pot = self.sample_potential(theta, weights, x, y)
        pot.risk_se = None
        return pot

    def full(self, dtype=torch.float32, device=None):
        """(X [1, n, d], Y [1, n])."""
        return self.X.to(dtype=dtype, device=device)[None], self.Y.to(dtype=dtype, device=device)[None]

    def sample(self, n, *, generator, batch=1, dtype=torch.float32, device=None):
        n = check_positive_int("n", n)
        idx = torch.randint(0, self.X.shape[0], (batch, n), generator=generator,
                            device=_on_generator(generator))
        idx = idx if device is None else idx.to(device)
        X, Y = self.X.to(dtype=dtype, device=device), self.Y.to(dtype=dtype, device=device)
        return X[idx], Y[idx]

    # ---- evaluation without gradients ---------------------------------------------------
    def outputs(self, theta, weights=None) -> torch.Tensor:
        """f(X_k; ρ_N) = Σ_i m_i φ(X_k; θ_i) on every data point, [B, n] (θ [N, D] or
        [B, N, D], in θ's dtype)."""
        theta = as_batched(theta)
        self.unit.check_theta(theta)
        m = as_weights(weights, theta)
        x, _ = self.full(theta.dtype, theta.device)
        with torch.no_grad():
            return self.unit.network(x, theta, m)

    def risk(self, theta, weights=None) -> torch.Tensor:
        """R(ρ_N) per replica [B] (the task's loss, no ½), without gradients."""
        f = self.outputs(theta, weights)
        return loss_terms(self.loss, f, self.Y.to(f)[None])[1].mean(-1)

    def accuracy(self, theta, weights=None) -> torch.Tensor:
        """The fraction of points with sign f(X_k) = Y_k, per replica [B] (f = 0 counts as
        wrong); meaningful for labels ±1."""
        f = self.outputs(theta, weights)
        return (torch.sign(f) == self.Y.to(f)[None]).to(torch.float64).mean(-1)

    def margin(self, theta, weights=None) -> torch.Tensor:
        """The normalised margin min_k Y_k f(X_k; ρ_N) / ∫|θ|^L dρ_N per replica [B], for
        labels ±1 and units positively L-homogeneous in θ (``Unit.homogeneity``: L = 2 for
        a·relu(⟨w, x⟩ + b) and a·⟨w, x⟩ + a·b, with or without bias; L = 1 without output
        weight).  Scaling every θ_i by r > 0 scales f by r^L, so the ratio depends on the
        directions only; for L = 2 it is Chizat–Bach's (2020) normalised margin, whose
        maximisers the logistic-loss gradient flow of wide networks approaches.  Positive iff
        every point is classified correctly.  ``ConfigError`` for other units or labels."""
        L = self.unit.homogeneity
        if L is None:
            raise ConfigError(
                f"the normalised margin needs a positively homogeneous unit (relu or linear "
                f"activation), got activation {self.unit.activation.name!r}")
        if not ((self.Y == 1) | (self.Y == -1)).all():
            raise ConfigError("the margin needs labels y in {-1, +1}")
        theta = as_batched(theta)
        f = self.outputs(theta, weights)
        m = as_weights(weights, theta).to(f)
        th = theta.to(f)
        norm = (th * th).sum(-1) if L == 2 else th.norm(dim=-1)           # (B, N): |θ_i|^L
        return (self.Y.to(f)[None] * f).min(-1).values / (norm * m).sum(-1)

    @property
    def risk_sharp(self):
        """The risk of the zero network f ≡ 0: R_# = (1/n) Σ_k Y_k² (squared), log 2 (logistic)."""
        if self.loss == "logistic":
            return math.log(2.0)
        return float((self.Y ** 2).mean())

    def to_dict(self):
        """{"name", "unit", "n": the number of data points, "loss"} (JSON-serialisable); X and
        Y are in :meth:`arrays`."""
        return {**super().to_dict(), "n": int(self.X.shape[0]), "loss": self.loss}

    def arrays(self):
        return {"data_X": self.X.numpy(), "data_Y": self.Y.numpy()}


class ConfiningPotential(Task):
    """A task with no interaction: V(θ) = (k/2)|θ − c|², U ≡ 0, R_# = 0, so Ψ = V and
    R(ρ) = 2 ∫ V dρ.  With λ and β the particles are independent Ornstein–Uhlenbeck
    processes whose Gibbs law exp(−β Ψ_λ) is the Gaussian of mean k c/(k + λ) and
    variance 1/(β (k + λ)) per coordinate: the reference for testing Langevin dynamics.
    """

    name = "confining"

    def __init__(self, D: int, stiffness: float = 1.0, center=0.0):
        self._D = check_positive_int("D", D)
        self.stiffness = check_finite_float("stiffness", stiffness, nonnegative=True)
        c = torch.as_tensor(center, dtype=torch.float64)
        if c.dim() > 1 or (c.dim() == 1 and c.shape[0] != self._D):
            raise ConfigError(f"center must be a scalar or have length D={self._D}")
        self.center = c.expand(self._D).clone() if c.dim() == 0 else c
        self.unit = None

    @property
    def D(self):
        """The dimension D of θ (there is no unit)."""
        return self._D

    @property
    def param_names(self):
        """["theta0", …, "theta{D−1}"]."""
        return [f"theta{k}" for k in range(self._D)]

    def check_theta(self, theta):
        """``ConfigError`` unless θ's last dimension is D."""
        if theta.shape[-1] != self._D:
            raise ConfigError(f"parameters have last dimension {theta.shape[-1]}, expected D={self._D}")

    @property
    def has_population(self):
        return True

    @property
    def risk_sharp(self):
        return 0.0

    def population_potential(self, theta, weights, pair_sum=None):
        diff = theta - self.center.to(theta.dtype)
        V = 0.5 * self.stiffness * (diff * diff).sum(-1)
        return Potential(psi=V, grad=self.stiffness * diff, risk=2 * (V * weights).sum(-1), V=V)

    def sample(self, n, **kw):
        raise ConfigError("the confining-potential task has no data to sample")

    def to_dict(self):
        """{"name", "D", "stiffness": k, "center": c as a list} (JSON-serialisable; these
        rebuild the task)."""
        return {"name": self.name, "D": self._D, "stiffness": self.stiffness,
                "center": self.center.tolist()}
