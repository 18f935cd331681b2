"""The radial PDE limit: reduced potentials against quadrature, the finite-volume solver against
closed forms, grid refinement (measured order), mass, positivity, the characteristics solver,
noisy dynamics against the Gibbs fixed point.  float64 numpy throughout."""
import math

import numpy as np
import pytest
from scipy import integrate
from scipy.special import roots_jacobi
from scipy.stats import chi, linregress

from meanfield.errors import ConfigError
from meanfield.models.activations import get_activation
from meanfield.models.radial import IsotropicRadialPotentials, cosine_moments
from meanfield.pde import QuadraticRadialPotentials, RadialDD, RadialGrid, chi_law, solve_quantiles

T1, T2, S1, S2 = 0.5, 1.5, -2.5, 7.5            # MMN's piecewise-linear σ (Fig. 1)
ACT = get_activation("piecewise", t1=T1, t2=T2, s1=S1, s2=S2)


# ------------------------------------------------------------------ exact references
SQRT_2PI = math.sqrt(2 * math.pi)


def sigma(z):
    return S1 + (S2 - S1) / (T2 - T1) * (min(max(z, T1), T2) - T1)


def gauss_mean_sigma(m, sd):
    """E σ(m + sd Z) in closed form (σ = S1 + slope · [(z − T1)_+ − (z − T2)_+]); scalars."""
    def ramp(t):
        u = (m - t) / sd
        return (m - t) * 0.5 * math.erfc(-u / math.sqrt(2)) + sd * math.exp(-0.5 * u * u) / SQRT_2PI
    return S1 + (S2 - S1) / (T2 - T1) * (ramp(T1) - ramp(T2))


def K_exact(a, b, c):
    """E[σ(a Z₁) σ(b Z₂)], corr(Z₁, Z₂) = c: the inner expectation in closed form, the outer
    one by adaptive quadrature split at σ(a z)'s kinks."""
    s = math.sqrt(1 - c * c)
    f = lambda z: (math.exp(-0.5 * z * z) / SQRT_2PI  # noqa: E731
                   * sigma(a * z) * gauss_mean_sigma(b * c * z, b * s))
    return integrate.quad(f, -12, 12, points=sorted([T1 / a, T2 / a]), limit=200,
                          epsabs=1e-13, epsrel=1e-13)[0]


def u_exact(r, rp, delta, d, nodes=24):
    """u(r, r') = E_c ½ Σ_± K(s_± r, s_± r', c), c with density ∝ (1 − c²)^((d−3)/2):
    Gauss–Jacobi quadrature in c (exact weight), K by quadrature."""
    c, wc = roots_jacobi(nodes, (d - 3) / 2, (d - 3) / 2)
    wc = wc / wc.sum()
    return sum(0.5 * sum(wk * K_exact(s * r, s * rp, ck) for ck, wk in zip(c, wc))
               for s in (1 + delta, 1 - delta))


# ------------------------------------------------------------------ reduced potentials
def test_cosine_moments_match_the_exact_cosine_density():
    d = 7
    dens = lambda c: (1 - c * c) ** ((d - 3) / 2)  # noqa: E731
    Z = integrate.quad(dens, -1, 1)[0]
    mu = cosine_moments(d, 9)
    for k in range(9):
        ref = integrate.quad(lambda c: c ** k * dens(c), -1, 1)[0] / Z
        assert mu[k] == pytest.approx(ref, abs=1e-13), k
    assert list(cosine_moments(math.inf, 4)) == [1.0, 0.0, 0.0, 0.0]


@pytest.mark.parametrize("d", [40, 320])
def test_reduced_kernel_matches_angle_averaged_quadrature(d):
    """u(r, r') from the truncated Mehler series equals ½ Σ_± E_c K(s r, s r', c) to 1e-11
    (measured: 2e-15) at radii where σ's kinks sit inside the Gaussian bulk."""
    pot = IsotropicRadialPotentials(ACT, 0.8, d)
    for r, rp in [(0.5, 0.9), (2.0, 1.2)]:
        ref = u_exact(r, rp, 0.8, d)
        assert pot.u(np.array([r]), np.array([rp]))[0, 0] == pytest.approx(ref, rel=1e-11, abs=1e-11)


def test_infinite_d_kernel_is_the_product_of_means():
    """d = ∞: independent directions are orthogonal, u(r, r') = ½ Σ_± E σ(s r Z) E σ(s r' Z)."""
    pot = IsotropicRadialPotentials(ACT, 0.5, math.inf)
    r, rp = 0.7, 1.9
    ref = 0.5 * sum(gauss_mean_sigma(0.0, s * r) * gauss_mean_sigma(0.0, s * rp) for s in (1.5, 0.5))
    assert pot.u(np.array([r]), np.array([rp]))[0, 0] == pytest.approx(ref, rel=1e-12)


def test_v_and_its_derivative_match_quadrature():
    pot = IsotropicRadialPotentials(ACT, 0.8, 40)
    r = np.array([0.2, 0.8, 3.0])
    v, dv = pot.v(r)
    ref = [-0.5 * (gauss_mean_sigma(0.0, 1.8 * x) - gauss_mean_sigma(0.0, 0.2 * x)) for x in r]
    np.testing.assert_allclose(v, ref, rtol=1e-12)
    eps = 1e-6
    fd = (pot.v(r + eps)[0] - pot.v(r - eps)[0]) / (2 * eps)
    np.testing.assert_allclose(dv, fd, rtol=1e-7)


def test_feature_derivatives_match_finite_differences():
    pot = IsotropicRadialPotentials(ACT, 0.8, 40)
    r = np.array([0.3, 1.1, 4.0])
    _, dF = pot.features(r)
    eps = 1e-6
    fd = (pot.features(r + eps)[0] - pot.features(r - eps)[0]) / (2 * eps)
    np.testing.assert_allclose(dF, fd, rtol=1e-6, atol=1e-8)


def test_bad_potential_arguments_are_rejected():
    with pytest.raises(ConfigError, match="delta"):
        IsotropicRadialPotentials(ACT, 1.2, 40)
    with pytest.raises(ConfigError, match="d >= 2"):
        IsotropicRadialPotentials(ACT, 0.5, 1)
    with pytest.raises(ConfigError, match="Hermite"):
        IsotropicRadialPotentials("erf", 0.5, 40)


# ------------------------------------------------------------------ solver: closed forms
def _quadratic_l1_error(M, scheme, k=1.0, d=10, T=0.2):
    """Noiseless v = k r²/2, u = 0: r(t) = r₀ e^{−2kt}, so P_t(r) = e^{2kt} P₀(r e^{2kt})."""
    grid = RadialGrid(4.0, M)
    law = chi(d, scale=1 / math.sqrt(d))
    sol = RadialDD(QuadraticRadialPotentials(k), grid, d=d, scheme=scheme).solve(
        grid.cell_averages(law.cdf), [0.0, T])
    exact = np.diff(law.cdf(grid.faces * math.exp(2 * k * T))) / grid.h
    assert abs(sol.mass[-1] - 1) < 1e-12
    assert sol.density.min() >= 0
    return np.abs(sol.density[-1] - exact).sum() * grid.h


@pytest.mark.parametrize("scheme, order", [("muscl", 2.0), ("upwind", 1.0)])
def test_grid_refinement_order(scheme, order):
    """L¹ error against the exact transported law for h → h/8; measured slopes 1.96 (MUSCL)
    and 0.93 (upwind)."""
    Ms = [100, 200, 400, 800]
    errs = [_quadratic_l1_error(M, scheme) for M in Ms]
    fit = linregress(np.log(Ms), np.log(errs))
    assert -fit.slope == pytest.approx(order, abs=0.15), (errs, fit.slope)
    assert errs[-1] < (3e-3 if scheme == "muscl" else 3e-2)


def test_noisy_quadratic_relaxes_to_its_chi_gibbs_law():
    """v = k r²/2, λ, β: the stationary law of r is chi(d) with scale 1/√(β(k + λ)); the
    Scharfetter–Gummel flux is exact on the discrete Gibbs law, so the L¹ gap is tiny
    (measured 3e-5 at h = 0.01; the rest is relaxation from the initial law)."""
    d, k, lam, beta = 10, 1.0, 0.5, 4.0
    grid = RadialGrid(4.0, 400)
    dd = RadialDD(QuadraticRadialPotentials(k), grid, d=d, beta=beta, lam=lam, dt_max=0.01)
    sol = dd.solve(grid.cell_averages(chi_law(d, 0.3)), [0.0, 0.5, 6.0])
    gibbs = np.diff(chi(d, scale=1 / math.sqrt(beta * (k + lam))).cdf(grid.faces)) / grid.h
    assert np.abs(sol.density[-1] - gibbs).sum() * grid.h < 1e-3
    assert np.abs(sol.density[0] - gibbs).sum() * grid.h > 0.5      # it did have to relax
    assert np.abs(sol.mass - 1).max() < 1e-12 and sol.density.min() >= 0
    P, res, _ = dd.gibbs_fixed_point(beta)
    assert res < 1e-10 and np.abs(P - gibbs).sum() * grid.h < 1e-3


# ------------------------------------------------------------------ solver: the MMN task
@pytest.fixture(scope="module")
def mmn_small():
    """MMN Fig. 1 potentials (Δ = 0.8, d = 40), ρ₀ = N(0, 0.8²/d I), up to t = 4."""
    pot = IsotropicRadialPotentials(ACT, 0.8, 40)
    return pot, chi(40, scale=0.8 / math.sqrt(40))


def test_finite_volume_matches_characteristics_and_conserves_mass(mmn_small):
    """The FV solution and the quantile (characteristics) solution of the same PDE agree;
    measured at t = 2 with 800 cells: |ΔR| = 2e-4, W1 = 4e-3 (both → 0 under refinement)."""
    pot, law = mmn_small
    times = [0.0, 1.0, 2.0]
    grid = RadialGrid(5.0, 800)
    sol = RadialDD(pot, grid, d=40).solve(grid.cell_averages(law.cdf), times)
    assert np.abs(sol.mass - 1).max() < 1e-12
    assert sol.density.min() >= 0
    q = (np.arange(400) + 0.5) / 400
    r, risk = solve_quantiles(pot, law.ppf(q), times, dt=0.01)
    assert risk[0] == pytest.approx(sol.risk[0], abs=2e-4)        # two quadratures of R(ρ₀)
    assert abs(risk[-1] - sol.risk[-1]) < 2e-3
    assert sol.w1(2, r[-1]) < 0.01
    # the law moved far more than that
    assert sol.w1(2, r[0]) > 0.5 and sol.risk[-1] < 0.7 * sol.risk[0]


def test_risk_decreases_along_the_noiseless_flow(mmn_small):
    pot, law = mmn_small
    grid = RadialGrid(6.0, 600)
    sol = RadialDD(pot, grid, d=40).solve(grid.cell_averages(law.cdf), np.linspace(0, 4, 21))
    assert (np.diff(sol.risk) < 1e-9).all()
    assert sol.risk[0] == pytest.approx(1.7045, abs=1e-3)   # ≈ 1.72 (calibration N = 800, ±MC)


def test_noisy_flow_approaches_the_self_consistent_gibbs_law(mmn_small):
    """With β, λ the long-time law is the fixed point P = G(P) ∝ r^{d−1} e^{−βψ_λ(r; P)}."""
    pot, law = mmn_small
    grid = RadialGrid(6.0, 300)
    beta, lam = 20.0, 0.5
    dd = RadialDD(pot, grid, d=40, beta=beta, lam=lam, dt_max=0.02)
    P_star, res, _ = dd.gibbs_fixed_point(beta)
    assert res < 1e-10
    sol = dd.solve(grid.cell_averages(law.cdf), [0.0, 2.0, 30.0])
    gap = [np.abs(P - P_star).sum() * grid.h for P in sol.density]
    assert gap[-1] < 1e-3 < gap[0], gap
    assert np.abs(dd.gibbs_map(sol.density[-1], beta) - sol.density[-1]).sum() * grid.h < 1e-3
    # the free energy decreases along the noisy flow
    F = [dd.free_energy(P, beta) for P in sol.density]
    assert F[0] > F[1] > F[2]


def test_w1_against_samples_of_the_same_law():
    law = chi(5, scale=0.5)
    grid = RadialGrid(4.0, 2000)
    dd = RadialDD(QuadraticRadialPotentials(0.0), grid, d=5, dt_max=1.0)
    sol = dd.solve(grid.cell_averages(law.cdf), [0.0])
    rng = np.random.default_rng(0)
    small = sol.w1(0, law.rvs(size=20000, random_state=rng))
    shifted = sol.w1(0, law.rvs(size=20000, random_state=rng) + 0.1)
    assert small < 0.01 and shifted == pytest.approx(0.1, abs=0.01)


def test_solver_rejects_bad_input(mmn_small):
    pot, law = mmn_small
    grid = RadialGrid(2.0, 50)
    with pytest.raises(ConfigError, match="cfl"):
        RadialDD(pot, grid, d=40, cfl=0.9, scheme="muscl")
    with pytest.raises(ConfigError, match="scheme"):
        RadialDD(pot, grid, d=40, scheme="weno")
    dd = RadialDD(pot, grid, d=40)
    with pytest.raises(ConfigError, match="times"):
        dd.solve(grid.cell_averages(law.cdf), [1.0, 0.5])
    with pytest.raises(ConfigError, match="non-negative"):
        dd.solve(-grid.cell_averages(law.cdf), [0.0])
    with pytest.raises(ConfigError, match="r_max"):              # the flow pushes mass outward
        dd.solve(grid.cell_averages(law.cdf), [0.0, 20.0])
    with pytest.raises(ConfigError, match="cells"):
        RadialGrid(1.0, 2)


def test_pwl_hermite_coefficients_match_quadrature():
    """A non-monotone continuous piecewise-linear σ (sum of ramps): h_k(s) = E[σ(sZ) He_k(Z)]/√k!
    against adaptive quadrature split at the kinks."""
    from numpy.polynomial.hermite_e import hermeval

    from meanfield.models.radial import hermite_coefficients

    knots, vals = [-1.25, -0.5, 0.0, 0.5, 1.25], [4.0, -2.0, 0.0, -2.0, 4.0]
    act = get_activation("pwl", **{f"z{j}": z for j, z in enumerate(knots)},
                         **{f"v{j}": v for j, v in enumerate(vals)})
    sig = lambda z: float(np.interp(z, knots, vals))  # noqa: E731 (constant outside)
    for s in (0.3, 1.7):
        h, _ = hermite_coefficients(act, np.array([s]), 6)
        for k in range(6):
            e = np.zeros(k + 1)
            e[k] = 1.0
            f = lambda z: sig(s * z) * hermeval(z, e) * math.exp(-0.5 * z * z) / SQRT_2PI  # noqa: E731
            ref = integrate.quad(f, -12, 12, points=[x / s for x in knots], limit=200,
                                 epsabs=1e-13)[0] / math.sqrt(math.factorial(k))
            assert h[k, 0] == pytest.approx(ref, abs=1e-11), (s, k)
