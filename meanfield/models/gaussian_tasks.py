"""Tasks with Gaussian inputs: teacher–student and Mei–Montanari–Nguyen's isotropic Gaussians.

:class:`TeacherStudent`: y = c + f*(x) + noise with x ~ N(0, I_d) and a teacher f* built of
the student's unit.  For ReLU/erf units without bias V, U and R_# are closed form (the
Gaussian kernels of ``models.kernels``), so the task has exact population potentials
(``closed_form``) that ``meanfield.interact.evaluate`` computes as pair sums; R_# needs the
teacher–teacher double sum, computed here once in float64 by dense torch tiles, without an
interaction backend (models never import one).

:class:`IsotropicGaussians`: y = ±1 and x | y ~ N(0, (1 + yΔ)² I_d), sample-based only; one
call draws the samples of K consecutive steps (the fast online-SGD path relies on it).

The risk, Ψ, loss and shape conventions are those of ``models.task_base``.  Both tasks are
importable from ``meanfield.models.tasks`` and ``meanfield.models`` as well.
"""
from __future__ import annotations

import math

import torch

from ..errors import ConfigError, check_finite_float, check_positive_int
from .kernels import CLOSED_FORM_ACTIVATIONS, GaussianKernel, gaussian_kernel, has_gaussian_kernel
from .task_base import Potential, Task, _gauss, _on_generator
from .units import Unit


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
