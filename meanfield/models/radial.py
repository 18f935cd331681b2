"""Reduced (radial) potentials of rotation-invariant tasks: MMN's isotropic Gaussians.

Task (Mei–Montanari–Nguyen 2018): y = ±1, x | y ~ N(0, s_y² I_d) with s_± = 1 ± Δ, unit
φ = σ(⟨w, x⟩).  Then ⟨w, x⟩ | y ~ N(0, s_y² r²), r = |w|, and for two units with cosine c

    V(w) = −E[y σ(⟨w, x⟩)] = −½ [q(s_+ r) − q(s_− r)],          q(s) = E σ(sZ),
    U(w, w') = ½ Σ_± K(s_± r, s_± r', c),   K(a, b, c) = E[σ(aZ₁) σ(bZ₂)],  corr(Z₁, Z₂) = c.

Mehler's formula gives K(a, b, c) = Σ_k h_k(a) h_k(b) c^k with the normalised Hermite
coefficients h_k(s) = E[σ(sZ) He_k(Z)] / √(k!).  When ρ is rotation invariant the cosine
between two independent particles has the density ∝ (1 − c²)^((d−3)/2), whose moments are
μ_{2m} = Π_{j<m} (2j + 1)/(d + 2j), μ_odd = 0 (d = ∞: μ_k = 1{k = 0}).  Hence the reduced
kernel is *low rank*:

    u(r, r') = E_c U = ½ Σ_± Σ_k μ_k h_k(s_± r) h_k(s_± r'),

so ψ(r; P) = v(r) + ∫ u(r, r') P(dr') costs O(K) per point once the K moments
∫ h_k(s_± r') P(dr') are known.  The series is truncated where μ_k · E[σ²] < ``tol``.

Hermite coefficients of a piecewise-linear σ in closed form.  Write
σ(z) = s1 + ((s2 − s1)/(t2 − t1)) [(z − t1)_+ − (z − t2)_+]; for f(z) = (s z − t)_+ with s > 0
and τ = t/s, Gaussian integration by parts (E[f He_k] = E[f^(k)]) gives

    E[f] = s φ(τ) − t (1 − Φ(τ)),   E[f He_1] = s (1 − Φ(τ)),   E[f He_k] = s He_{k−2}(τ) φ(τ)  (k ≥ 2),

evaluated through the stable normalised functions ψ_j(τ) = He_j(τ) φ(τ)/√(j!)
(ψ_{j+1} = (τ ψ_j − √j ψ_{j−1})/√(j+1)), so h_k = s ψ_{k−2}(τ)/√(k(k−1)) for k ≥ 2; and
d/ds [s ψ_{k−2}(t/s)] = ψ_{k−2}(τ) + τ √(k−1) ψ_{k−1}(τ).  ReLU is the case s1 = 0 with
t2 = ∞.  Everything here is float64 numpy.
"""
from __future__ import annotations

import math

import numpy as np
from scipy.special import ndtr

from ..errors import ConfigError, check_finite_float, check_positive_int
from .activations import Activation, get_activation, pwl_ramps

_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
HERMITE_ACTIVATIONS = ("piecewise", "pwl", "relu", "linear")


def cosine_moments(d, K: int) -> np.ndarray:
    """μ_k = E[c^k], k = 0..K−1, for the cosine c of two independent uniform directions in R^d
    (density ∝ (1 − c²)^((d−3)/2)); ``d = inf`` gives μ = (1, 0, 0, …)."""
    mu = np.zeros(K)
    mu[0] = 1.0
    if d == math.inf:
        return mu
    d = float(d)
    for k in range(2, K, 2):
        m = k // 2
        mu[k] = mu[k - 2] * (2 * m - 1) / (d + 2 * m - 2)
    return mu


def _hermite_functions(tau: np.ndarray, J: int) -> np.ndarray:
    """ψ_j(τ) = He_j(τ) φ(τ)/√(j!) for j = 0..J−1; shape [J, *tau.shape]."""
    out = np.zeros((max(J, 1),) + tau.shape)
    with np.errstate(over="ignore", invalid="ignore", under="ignore"):
        out[0] = np.exp(-0.5 * tau * tau) * _INV_SQRT_2PI
    out[0] = np.where(np.isfinite(tau), out[0], 0.0)
    tau_f = np.where(np.isfinite(tau), tau, 0.0)
    if J > 1:
        out[1] = tau_f * out[0]
    for j in range(1, J - 1):
        out[j + 1] = (tau_f * out[j] - math.sqrt(j) * out[j - 1]) / math.sqrt(j + 1)
    return out[:J]


def _ramp_coefficients(s: np.ndarray, t: float, K: int):
    """Normalised Hermite coefficients of z ↦ (s z − t)_+ and their s-derivatives: [K, *s.shape]."""
    s = np.asarray(s, dtype=np.float64)
    h = np.zeros((K,) + s.shape)
    dh = np.zeros((K,) + s.shape)
    pos = s > 0
    sp = np.where(pos, s, 1.0)
    tau = np.where(pos, t / sp, 0.0)                    # τ = t/s where s > 0 (else unused)
    psi = np.where(pos, _hermite_functions(tau, K + 1), 0.0)          # (K+1, …)
    tail = np.where(pos, ndtr(-tau), float(t < 0))                    # P(Z > τ)
    # k = 0: E[(sZ − t)_+] = s φ(τ) − t P(Z > τ); d/ds = φ(τ)
    h[0] = np.where(pos, s * psi[0] - t * tail, max(-t, 0.0))
    dh[0] = np.where(pos, psi[0], 0.0) + np.where(pos, 0.0, tail)
    if K > 1:
        h[1] = s * tail                                    # E[f He_1] = s P(Z > τ)
        dh[1] = tail + tau * psi[0]                       # d/ds[s(1−Φ(t/s))] = (1−Φ) + τ φ(τ)
    for k in range(2, K):
        c = 1.0 / math.sqrt(k * (k - 1))
        h[k] = c * s * psi[k - 2]
        dh[k] = c * (psi[k - 2] + tau * math.sqrt(k - 1) * psi[k - 1])
    return h, dh


def hermite_coefficients(activation: Activation, s, K: int):
    """h_k(s) = E[σ(sZ) He_k(Z)]/√(k!) and dh_k/ds for k < K, s ≥ 0: two arrays [K, *s.shape].

    Supported σ: ``piecewise`` (t1, t2, s1, s2), ``pwl`` (any continuous piecewise-linear σ,
    a sum of ramps), ``relu``, ``linear``."""
    act = get_activation(activation)
    s = np.asarray(s, dtype=np.float64)
    if (s < 0).any():
        raise ConfigError("hermite_coefficients needs scales s >= 0")
    if act.name == "relu":
        return _ramp_coefficients(s, 0.0, K)
    if act.name == "linear":
        h = np.zeros((K,) + s.shape)
        dh = np.zeros((K,) + s.shape)
        if K > 1:
            h[1], dh[1] = s, 1.0
        return h, dh
    if act.name in ("piecewise", "pwl"):
        p = dict(act.params)
        if act.name == "piecewise":
            slope = (p["s2"] - p["s1"]) / (p["t2"] - p["t1"])
            c, ramps = p["s1"], [(slope, p["t1"]), (-slope, p["t2"])]
        else:
            c, ramps = pwl_ramps(p)
        h = np.zeros((K,) + s.shape)
        dh = np.zeros((K,) + s.shape)
        for a, t in ramps:
            hr, dr = _ramp_coefficients(s, t, K)
            h += a * hr
            dh += a * dr
        h[0] += c
        return h, dh
    raise ConfigError(f"no closed-form Hermite coefficients for activation {act.name!r} "
                      f"(supported: {', '.join(HERMITE_ACTIVATIONS)})")


class IsotropicRadialPotentials:
    """v(r), u(r, r') and their r-derivatives for MMN's isotropic Gaussians task, in the
    low-rank Hermite form of the module docstring.

    Parameters: activation σ, Δ ∈ [0, 1), dimension d (``math.inf`` for the d → ∞ limit),
    ``tol`` for the series truncation (μ_K · max σ² < tol), ``max_terms`` cap.
    """

    def __init__(self, activation, delta: float, d, *, tol: float = 1e-12, max_terms: int = 600):
        self.activation = get_activation(activation)
        if self.activation.name not in HERMITE_ACTIVATIONS:
            raise ConfigError(f"no closed-form Hermite coefficients for activation "
                              f"{self.activation.name!r} (supported: {', '.join(HERMITE_ACTIVATIONS)})")
        self.delta = check_finite_float("delta", delta, nonnegative=True)
        if not self.delta < 1:
            raise ConfigError(f"delta must be in [0, 1), got {delta}")
        if d != math.inf:
            d = check_positive_int("d", d)
            if d < 2:
                raise ConfigError("the radial reduction needs d >= 2")
        self.d = d
        self.scales = (1.0 + self.delta, 1.0 - self.delta)
        bound = self._sigma_sq_bound()
        mu = cosine_moments(d, max_terms)
        keep = np.nonzero(mu * bound >= tol)[0]
        K = int(keep.max()) + 2 if len(keep) else 1
        if K > max_terms - 1:
            raise ConfigError(
                f"the Hermite series needs more than {max_terms} terms at d={d} for tol={tol:g}; "
                "raise max_terms or tol")
        self.K = K
        self.mu = mu[:K]
        self._even = np.nonzero(self.mu)[0]           # only even k contribute for finite d

    def _sigma_sq_bound(self) -> float:
        p = dict(self.activation.params)
        if self.activation.name == "piecewise":
            return max(p["s1"] ** 2, p["s2"] ** 2)
        if self.activation.name == "pwl":
            return max(abs(x) for k, x in p.items() if k.startswith("v")) ** 2
        return 1e6                                    # unbounded σ: be conservative

    def features(self, r):
        """Feature maps F [2, K', *r.shape] and dF/dr with u(r, r') = Σ_{±, k} μ_k/2 F F'."""
        r = np.asarray(r, dtype=np.float64)
        F, dF = [], []
        for s in self.scales:
            h, dh = hermite_coefficients(self.activation, s * r, self.K)
            F.append(h[self._even])
            dF.append(s * dh[self._even])
        return np.stack(F), np.stack(dF)

    @property
    def weights(self) -> np.ndarray:
        """μ_k/2 for the kept terms, shape [K']."""
        return 0.5 * self.mu[self._even]

    def v(self, r):
        """v(r) = −½[q(s_+ r) − q(s_− r)] and v'(r)."""
        r = np.asarray(r, dtype=np.float64)
        (hp, dhp), (hm, dhm) = (hermite_coefficients(self.activation, s * r, 1) for s in self.scales)
        sp, sm = self.scales
        return -0.5 * (hp[0] - hm[0]), -0.5 * (sp * dhp[0] - sm * dhm[0])

    def u(self, r, rp):
        """The reduced kernel u(r_i, r'_j) as a dense [len(r), len(r')] matrix (for tests)."""
        F, _ = self.features(np.atleast_1d(r))
        G, _ = self.features(np.atleast_1d(rp))
        return np.einsum("ski,k,skj->ij", F, self.weights, G)

    def K_pair(self, a, b, c):
        """K(a, b, c) = E[σ(aZ₁)σ(bZ₂)] with corr c, by Mehler's series (|c| < 1)."""
        K = max(self.K, 200)
        ha, _ = hermite_coefficients(self.activation, np.atleast_1d(a), K)
        hb, _ = hermite_coefficients(self.activation, np.atleast_1d(b), K)
        return np.einsum("ki,ki,k->i", ha, hb, np.asarray(c, dtype=np.float64) ** np.arange(K)[:, None]
                         if np.ndim(c) else float(c) ** np.arange(K))

    @property
    def risk_sharp(self) -> float:
        """R_# = E[y²] = 1 (labels ±1), a property as ``Task.risk_sharp``."""
        return 1.0
