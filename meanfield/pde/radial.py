"""Radial distributional dynamics: the 1-D PDE for the law of r = |w| (docs/design.md §1).

For a rotation-invariant task and initial law, ρ_t stays radial and the density P(r, t) of
r = |w| solves (MMN time, Ψ_λ = Ψ + λ|w|²/2, D = 2ξ/β; Mei–Montanari–Nguyen 2018, §"isotropic
Gaussians", and the radial Fokker–Planck equation of docs/design.md §1)

    ∂_t P = ∂_r [ P · 2ξ ∂_r Φ ] + D ∂_r² P,     Φ(r) = ψ_λ(r; P) − ((d − 1)/β) log r,
    ψ(r; P) = v(r) + ∫ u(r, r') P(r') dr',       ψ_λ = ψ + λ r²/2,

whose stationary states are the Gibbs laws P ∝ r^{d−1} exp(−β ψ_λ(r; P)) (β = ∞: no
noise, D = 0, pure transport ∂_t P = ∂_r(P · 2ξ ∂_r ψ_λ)).  The risk is
R(P) = R_# + 2 ∫ v P + ∬ u P P.

Finite volumes on cells [i h, (i+1) h], i < M, of [0, r_max] (cell averages P_i), zero flux
at r = 0 and r = r_max: every step changes P only through face fluxes, so the mass is
conserved to round-off.  Two fluxes:

* ``muscl`` (noiseless steps, the default there): face velocities a_{i+½} = −2ξ (ψ_λ(r_{i+1})
  − ψ_λ(r_i))/h, P reconstructed linearly in each cell with the monotonised-central (MC)
  limiter, the upwind face value taken, and Heun's (SSP-RK2) time stepping with
  dt = cfl · h / max |a|.  Each Euler stage keeps P ≥ 0 when cfl ≤ ½ (a cell loses at most
  2·cfl·P_i), and Heun is a convex combination of such stages.  Second order where P is
  smooth, first order at extrema and kinks (measured in ``tests/test_pde_radial.py``).
  ``upwind`` is the first-order variant (no reconstruction, forward Euler).
* ``implicit`` (noisy steps, β < ∞): the Scharfetter–Gummel flux

      J_{i+½} = (D/h) [ B(−α) P_i − B(α) P_{i+1} ],   α = −β (Φ_{i+1} − Φ_i),   B(x) = x/(eˣ − 1),

  which vanishes exactly on the discrete Gibbs law (so fixed points are exact on the grid),
  with the operator frozen at P^n and (I + dt A) P^{n+1} = P^n solved (A is a tridiagonal
  M-matrix with zero column sums: positivity and mass hold for any dt); dt = cfl · h /
  max |a| is limited by the transport velocity of ψ_λ only, not by the stiff (d − 1)/(β r)
  drift near r = 0.

Potentials are given by an object with ``v(r) -> (v, v')``, ``features(r) -> (F, dF)``
(F [S, K, M]) and ``weights`` [K] so that u(r, r') = Σ_{s,k} weights_k F_{s,k}(r) F_{s,k}(r')
(see ``models.radial.IsotropicRadialPotentials``); the nonlocal term then costs O(S·K·M)
per evaluation.  ``xi`` and ``beta`` are numbers or callables of t (e.g. dynamics schedules).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy.linalg import solve_banded
from scipy.special import exprel, gammaln
from scipy.stats import chi

from ..errors import ConfigError, DivergenceError, check_finite_float, check_positive_int

SCHEMES = ("auto", "muscl", "upwind", "implicit")


def bernoulli(x):
    """B(x) = x/(eˣ − 1), B(0) = 1, stable for all x."""
    x = np.asarray(x, dtype=np.float64)
    out = np.empty_like(x)
    big = x > 700
    out[big] = x[big] * np.exp(-x[big])
    out[~big] = 1.0 / exprel(x[~big])
    return out


def mc_limiter(dl, dr):
    """Monotonised-central slope limiter: minmod(2 dl, (dl + dr)/2, 2 dr) (van Leer 1977)."""
    same = dl * dr > 0
    s = np.minimum(np.minimum(2 * np.abs(dl), 2 * np.abs(dr)), 0.5 * np.abs(dl + dr))
    return np.where(same, np.sign(dl) * s, 0.0)


@dataclass(frozen=True)
class RadialGrid:
    """Cells [i h, (i+1) h], i < ``cells``, on [0, r_max]."""

    r_max: float
    cells: int

    def __post_init__(self):
        check_finite_float("r_max", self.r_max, positive=True)
        check_positive_int("cells", self.cells)
        if self.cells < 3:
            raise ConfigError(f"cells must be >= 3, got {self.cells}")

    @property
    def h(self) -> float:
        """The cell width h = r_max / cells."""
        return self.r_max / self.cells

    @property
    def centers(self) -> np.ndarray:
        """r_i = (i + ½) h, [M]."""
        return (np.arange(self.cells) + 0.5) * self.h

    @property
    def faces(self) -> np.ndarray:
        """i h, i = 0..M, [M + 1]."""
        return np.arange(self.cells + 1) * self.h

    def cell_averages(self, cdf) -> np.ndarray:
        """Cell averages [M] of the density whose CDF is ``cdf`` (mass-exact), normalised to 1."""
        m = np.diff(cdf(self.faces))
        if not m.sum() > 0:
            raise ConfigError("the initial law puts no mass on [0, r_max]")
        return m / (m.sum() * self.h)


def chi_law(d, std):
    """CDF of r = |w| for w ~ N(0, std² I_d) (a chi law with d degrees of freedom, scale std)."""
    return chi(d, scale=std).cdf


@dataclass
class RadialSolution:
    """Densities P [T, M] of r on ``grid`` at ``times`` [T], with risk [T], mass [T], the
    mass in the outermost cell [T], the number of time steps and their smallest / largest
    size, and the CFL number used."""

    grid: RadialGrid
    times: np.ndarray
    density: np.ndarray
    risk: np.ndarray
    mass: np.ndarray
    edge_mass: np.ndarray
    steps: int
    dt_min: float
    dt_max: float
    cfl: float
    info: dict = field(default_factory=dict)

    def mean_r(self) -> np.ndarray:
        """E[r] at every recorded time, [T]."""
        return (self.density * self.grid.centers).sum(-1) * self.grid.h

    def cdf(self, k: int) -> np.ndarray:
        """CDF of r at the faces at snapshot k, [M + 1] (piecewise linear in between)."""
        c = np.concatenate([[0.0], np.cumsum(self.density[k]) * self.grid.h])
        return c / c[-1]

    def quantiles(self, k: int, q) -> np.ndarray:
        """Quantiles of the law of r at snapshot k (inverse of the piecewise-linear CDF)."""
        return np.interp(q, self.cdf(k), self.grid.faces)

    def w1(self, k: int, r_samples, weights=None) -> float:
        """W1 between the law of r at snapshot k and the empirical law of ``r_samples`` [n]
        (optionally weighted): ∫ |F_N(r) − F(r)| dr with the PDE's piecewise-linear CDF,
        computed by POT's ``wasserstein_1d`` against 4096 midpoint quantiles of the PDE law
        (quantisation error ≤ h/2 + r_max/8192)."""
        from ..diagnostics import w1_1d

        q = (np.arange(4096) + 0.5) / 4096
        return w1_1d(np.asarray(r_samples, dtype=np.float64), self.quantiles(k, q), weights, None)


def step_scheme(scheme: str, beta: float, t: float) -> str:
    """The scheme a step at time t uses (shared by RadialDD and GridDD): ``scheme`` itself,
    or for "auto" "muscl" when β = ∞ and "implicit" (Scharfetter–Gummel) otherwise;
    ``ConfigError`` when β ≤ 0, "implicit" has no noise, or a noiseless scheme gets β < ∞."""
    if not beta > 0:
        raise ConfigError(f"beta must be > 0, got {beta} at t={t}")
    if scheme == "auto":
        return "muscl" if beta == math.inf else "implicit"
    if scheme == "implicit" and beta == math.inf:
        raise ConfigError("scheme 'implicit' needs a finite beta (noise)")
    if scheme != "implicit" and beta != math.inf:
        raise ConfigError(f"scheme {scheme!r} is noiseless; use 'implicit' (or 'auto') for β < ∞")
    return scheme


def _as_fn(x, name):
    if callable(x):
        return x
    val = check_finite_float(name, x, positive=True, allow_inf=(name == "beta"))
    return lambda t: val


class RadialDD:
    """Solver for the radial distributional dynamics (see the module docstring).

    Parameters
    ----------
    potentials : v, features, weights (u = Σ weights F F), e.g. ``IsotropicRadialPotentials``.
    grid : a RadialGrid.
    d : dimension of w (enters through the r^{d−1} Jacobian when β < ∞).
    xi, beta : numbers or callables of t; beta = inf for noiseless dynamics.
    lam : L2 strength λ.
    cfl : fraction of the transport-limited time step h / max|a| (≤ ½ for positivity).
    risk_sharp : R_# = E[y²] (default: ``potentials.risk_sharp`` if it exists, else 0).
    scheme : "auto" (muscl when β = ∞, implicit otherwise), "muscl", "upwind" or "implicit".
    edge_tol : the largest mass allowed in the outermost cell before the run stops.
    dt_max : an upper bound on the time step.
    """

    def __init__(self, potentials, grid: RadialGrid, *, d, xi=1.0, beta=math.inf, lam=0.0,
                 cfl: float = 0.4, risk_sharp: float | None = None, edge_tol: float = 1e-8,
                 scheme: str = "auto", dt_max: float = math.inf):
        self.pot, self.grid = potentials, grid
        self.d = d if d == math.inf else check_positive_int("d", d)
        self.xi, self.beta = _as_fn(xi, "xi"), _as_fn(beta, "beta")
        self.lam = check_finite_float("lam", lam, nonnegative=True)
        self.cfl = check_finite_float("cfl", cfl, positive=True)
        if scheme not in SCHEMES:
            raise ConfigError(f"scheme must be one of {list(SCHEMES)}, got {scheme!r}")
        if scheme in ("muscl", "upwind") and self.cfl > 0.5:
            raise ConfigError(f"cfl must be <= 0.5 for positivity with scheme {scheme!r}, got {cfl}")
        self.scheme = scheme
        self.dt_cap = check_finite_float("dt_max", dt_max, positive=True, allow_inf=True)
        if risk_sharp is None:
            risk_sharp = getattr(potentials, "risk_sharp", 0.0)
        self.risk_sharp = float(risk_sharp)
        self.edge_tol = edge_tol
        r = grid.centers
        self._v, _ = potentials.v(r)
        F, _ = potentials.features(r)
        self._F = F.reshape(-1, grid.cells)                               # (S·K, M)
        self._w = np.tile(np.asarray(potentials.weights), F.shape[0])     # (S·K,)
        self._half_r2 = 0.5 * r * r
        self._logr = np.log(r)

    # ---- potentials of the current density ------------------------------------------
    def psi(self, P) -> np.ndarray:
        """ψ(r_i; P) = v(r_i) + Σ_j u(r_i, r_j) P_j h at the cell centres, [M]."""
        m = self._F @ (P * self.grid.h)                                   # (S·K,)
        return self._v + (self._w * m) @ self._F

    def risk(self, P) -> float:
        """R(P) = R_# + 2 Σ v_i P_i h + Σ_k w_k m_k²,  m_k = Σ_i F_k(r_i) P_i h."""
        h = self.grid.h
        m = self._F @ (P * h)
        return float(self.risk_sharp + 2 * (self._v * P).sum() * h + (self._w * m * m).sum())

    def neg_entropy(self, P) -> float:
        """∫ ρ log ρ dw (minus the differential entropy; the spelling of ``GridDD.neg_entropy``)
        of the radial law on R^d with r-density P:
        ∫ P log(P / (ω_d r^{d−1})) dr, ω_d = 2π^{d/2}/Γ(d/2) (cell-average quadrature)."""
        if self.d == math.inf:
            raise ConfigError("∫ρ log ρ needs a finite dimension d")
        log_omega = math.log(2) + 0.5 * self.d * math.log(math.pi) - gammaln(0.5 * self.d)
        h, pos = self.grid.h, P > 0
        return float((P[pos] * (np.log(P[pos]) - log_omega - (self.d - 1) * self._logr[pos])).sum() * h)

    def free_energy(self, P, beta) -> float:
        """F_β(P) = ½ R(P) + (λ/2) ∫ r² P + β⁻¹ ∫ ρ log ρ (docs/design.md §1); β = ∞ drops the entropy."""
        f = 0.5 * self.risk(P) + self.lam * float((self._half_r2 * P).sum() * self.grid.h)
        return f if beta == math.inf else f + self.neg_entropy(P) / beta

    def _phi(self, P):
        return self.psi(P) + self.lam * self._half_r2

    # ---- fluxes ----------------------------------------------------------------------
    def _transport_rate(self, P, t, second_order: bool):
        """dP/dt of the noiseless flux form [M] and max |a| over the faces."""
        h = self.grid.h
        a = -2.0 * self.xi(t) * np.diff(self._phi(P)) / h                 # (M − 1,) face velocities
        if second_order:
            s = np.zeros_like(P)
            s[1:-1] = mc_limiter(P[1:-1] - P[:-2], P[2:] - P[1:-1])
            right, left = P + 0.5 * s, P - 0.5 * s                        # face values of each cell
            J = np.maximum(a, 0.0) * right[:-1] + np.minimum(a, 0.0) * left[1:]
        else:
            J = np.maximum(a, 0.0) * P[:-1] + np.minimum(a, 0.0) * P[1:]
        rate = np.zeros_like(P)
        rate[:-1] -= J / h
        rate[1:] += J / h
        return rate, float(np.abs(a).max())

    def _sg_coefficients(self, P, t, beta):
        """Scharfetter–Gummel face coefficients (c⁺, c⁻) [M − 1] with J = c⁺ P_i − c⁻ P_{i+1},
        and max |a| of the transport part."""
        h, xi = self.grid.h, self.xi(t)
        phi = self._phi(P)
        vmax = float(np.abs(2.0 * xi * np.diff(phi) / h).max())
        D = 2.0 * xi / beta
        alpha = -beta * np.diff(phi - ((self.d - 1) / beta) * self._logr)
        return (D / h) * bernoulli(-alpha), (D / h) * bernoulli(alpha), vmax

    def step(self, P, t, dt_max=math.inf):
        """One time step from (P, t): returns (P_new, dt)."""
        h = self.grid.h
        dt_max = min(dt_max, self.dt_cap)
        beta = self.beta(t)
        scheme = step_scheme(self.scheme, beta, t)
        if scheme == "implicit":
            cp, cm, vmax = self._sg_coefficients(P, t, beta)
            dt = min(dt_max, self.cfl * h / vmax) if vmax > 0 else dt_max
            if not math.isfinite(dt):
                raise ConfigError("give dt_max: the transport velocity vanishes")
            g = dt / h                     # (I + dt A) P_new = P, (A P)_i = (J_{i+½} − J_{i−½})/h
            ab = np.zeros((3, self.grid.cells))
            ab[1] = 1.0
            ab[1, :-1] += g * cp           # out of cell i through its right face
            ab[1, 1:] += g * cm            # out of cell i+1 through its left face
            ab[0, 1:] = -g * cm            # upper diagonal: P_{i+1} flowing into i
            ab[2, :-1] = -g * cp           # lower diagonal: P_i flowing into i+1
            return solve_banded((1, 1), ab, P), dt
        second = scheme == "muscl"
        k1, vmax = self._transport_rate(P, t, second)
        dt = min(dt_max, self.cfl * h / vmax) if vmax > 0 else dt_max
        if not math.isfinite(dt):
            raise ConfigError("the density is stationary and no end time was given")
        P1 = P + dt * k1
        if not second:
            return P1, dt
        k2, _ = self._transport_rate(P1, t + dt, True)
        return 0.5 * P + 0.5 * (P1 + dt * k2), dt                       # Heun / SSP-RK2

    def solve(self, P0, times, *, callback=None) -> RadialSolution:
        """Evolve P0 (cell averages [M]) and record at ``times`` (increasing, ≥ 0).

        ``callback(k, t, P)`` is called at every recorded time.  Raises ConfigError if mass
        reaches the outermost cell (enlarge r_max) and DivergenceError on a non-finite or
        negative density."""
        times = np.asarray(times, dtype=np.float64)
        if times.ndim != 1 or len(times) == 0 or (np.diff(times) < 0).any() or times[0] < 0:
            raise ConfigError("times must be a non-empty increasing array of t >= 0")
        P = np.asarray(P0, dtype=np.float64).copy()
        if P.shape != (self.grid.cells,):
            raise ConfigError(f"P0 must have {self.grid.cells} cell values, got shape {P.shape}")
        if (P < 0).any() or not np.isfinite(P).all():
            raise ConfigError("P0 must be finite and non-negative")
        h = self.grid.h
        t, k, nsteps, dt_lo, dt_hi = 0.0, 0, 0, math.inf, 0.0
        out_P, out_R, out_M, out_E = [], [], [], []
        while k < len(times):
            if t >= times[k] - 1e-13 * max(1.0, times[k]):
                out_P.append(P.copy())
                out_R.append(self.risk(P))
                out_M.append(P.sum() * h)
                out_E.append(P[-1] * h)
                if out_E[-1] > self.edge_tol:
                    raise ConfigError(f"mass {out_E[-1]:.2e} reached r_max={self.grid.r_max} at "
                                      f"t={t:.4g}; enlarge r_max")
                if callback is not None:
                    callback(k, t, P)
                k += 1
                continue
            P, dt = self.step(P, t, dt_max=times[k] - t)
            t += dt
            nsteps += 1
            dt_lo, dt_hi = min(dt_lo, dt), max(dt_hi, dt)
            if not np.isfinite(P).all() or P.min() < -1e-12 * P.max():
                raise DivergenceError(f"radial PDE: non-finite or negative density at t={t:.4g} "
                                      f"(min {P.min():.3g}); lower cfl")
        return RadialSolution(self.grid, times, np.array(out_P), np.array(out_R), np.array(out_M),
                              np.array(out_E), nsteps, dt_lo if nsteps else 0.0, dt_hi, self.cfl)

    # ---- stationary states -------------------------------------------------------------
    def gibbs_map(self, P, beta) -> np.ndarray:
        """G(P) ∝ r^{d−1} exp(−β ψ_λ(r; P)) as cell values normalised to mass 1, [M]."""
        if beta == math.inf or not beta > 0:
            raise ConfigError(f"the Gibbs map needs 0 < beta < inf, got {beta}")
        logg = (self.d - 1) * self._logr - beta * self._phi(P)
        g = np.exp(logg - logg.max())
        return g / (g.sum() * self.grid.h)

    def gibbs_fixed_point(self, beta, P0=None, *, damping: float = 0.3, tol: float = 1e-11,
                          max_iter: int = 20_000):
        """The self-consistent Gibbs law P = G(P) (MMN's fixed point of noisy SGD) by damped
        iteration P ← (1 − damping) P + damping G(P), from P0 (default: G(0), the law without
        interaction).  Returns (P [M], residual ‖G(P) − P‖_{L¹}, iterations); raises
        DivergenceError when it does not reach ``tol``."""
        P = self.gibbs_map(np.zeros(self.grid.cells), beta) if P0 is None else np.asarray(P0, float)
        h = self.grid.h
        for it in range(1, max_iter + 1):
            G = self.gibbs_map(P, beta)
            res = float(np.abs(G - P).sum() * h)
            if res < tol:
                return G, res, it
            P = (1 - damping) * P + damping * G
        raise DivergenceError(f"Gibbs fixed point: residual {res:.3g} after {max_iter} iterations "
                              "(lower damping)")


def solve_quantiles(potentials, r0, times, *, xi=1.0, lam=0.0, dt=1e-3, risk_sharp=None):
    """The noiseless radial DD by characteristics, an independent check of :class:`RadialDD`.

    In 1-D the flow ṙ = −2ξ ∂_r ψ_λ(r; P_t) preserves the order of radii, so the quantiles
    r_q(t) of the law of r move as particles of mass 1/M: ``r0`` [M] (e.g. the initial law's
    midpoint quantiles) evolves by classical RK4 with step ``dt``, ψ computed from the
    low-rank features of the M quantile nodes.  Returns (r [T, M], risk [T])."""
    r = np.asarray(r0, dtype=np.float64).copy()
    xi_f = _as_fn(xi, "xi")
    w = np.tile(np.asarray(potentials.weights), 1)
    if risk_sharp is None:
        risk_sharp = getattr(potentials, "risk_sharp", 0.0)

    def rate(r, t):
        F, dF = potentials.features(r)                                  # (S, K, M)
        m = F.mean(-1)                                                  # (S, K)
        _, dv = potentials.v(r)
        dpsi = dv + np.einsum("k,sk,skm->m", w, m, dF) + lam * r
        return -2.0 * xi_f(t) * dpsi

    def risk(r):
        F, _ = potentials.features(r)
        m = F.mean(-1)
        v, _ = potentials.v(r)
        return float(risk_sharp + 2 * v.mean() + (w * m * m).sum())

    t, out_r, out_R = 0.0, [], []
    for T in np.asarray(times, dtype=np.float64):
        while t < T - 1e-12:
            s = min(dt, T - t)
            k1 = rate(r, t)
            k2 = rate(r + 0.5 * s * k1, t + 0.5 * s)
            k3 = rate(r + 0.5 * s * k2, t + 0.5 * s)
            k4 = rate(r + s * k3, t + s)
            r = r + (s / 6) * (k1 + 2 * k2 + 2 * k3 + k4)
            t += s
        out_r.append(r.copy())
        out_R.append(risk(r))
    return np.array(out_r), np.array(out_R)


class QuadraticRadialPotentials:
    """v(r) = (k/2) r², u ≡ 0: the solver's closed-form check (noiseless r(t) = r₀ e^{−2ξkt};
    with noise the Gibbs law of r is chi(d) with scale 1/√(β(k + λ)))."""

    def __init__(self, stiffness: float):
        self.k = check_finite_float("stiffness", stiffness, nonnegative=True)
        self.weights = np.zeros(0)

    def v(self, r):
        """(v(r), v'(r)) = ((k/2) r², k r), float64 arrays shaped like r."""
        r = np.asarray(r, dtype=np.float64)
        return 0.5 * self.k * r * r, self.k * r

    def features(self, r):
        """Empty feature maps (F, dF/dr), each [1, 0, *r.shape]: u ≡ 0 has rank 0."""
        r = np.asarray(r, dtype=np.float64)
        return np.zeros((1, 0) + r.shape), np.zeros((1, 0) + r.shape)

    @property
    def risk_sharp(self) -> float:
        """R_# = 0 (no labels: the risk is 2∫v dP)."""
        return 0.0
