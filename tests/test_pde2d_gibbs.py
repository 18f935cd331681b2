"""GridDD.gibbs_fixed_point at the torus experiment's β = 10 on its 64² grid: the Newton–Krylov
solution is checked through quantities the fixed-point map does not compute — the free
energy F_β (stationary and minimal along perturbations: F_β is convex, so its minimiser is the
unique Gibbs law), the Scharfetter–Gummel flow (which must not move it), and the plain damped
iteration where that one converges."""
import math

import numpy as np
import pytest
import torch

from meanfield.errors import DivergenceError
from meanfield.experiments.pde2d_torus import Config, build_task
from meanfield.figures.pde2d import PERIOD
from meanfield.pde import Grid2D, GridDD


@pytest.fixture(scope="module")
def solved():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cfg = Config()
        assert cfg.beta == 10.0 and cfg.cells == 64
        grid = Grid2D.torus(cfg.cells, PERIOD)
        dd = GridDD(build_task(cfg), grid, xi=cfg.xi, beta=cfg.beta, cfl=cfg.pde_cfl,
                    dtype=torch.float64, dt_max=cfg.pde_dt_max)
        P, res, its = dd.gibbs_fixed_point(cfg.beta)           # from the uniform law
        yield cfg, grid, dd, P, res, its
    finally:
        torch.set_num_threads(n)


def test_converges_at_beta_10_from_uniform(solved):
    """Measured: 20 Newton steps, L¹ residual 1.2e-11 (the damped map with damping 0.3 left
    1.29 after 3000 iterations)."""
    cfg, grid, dd, P, res, its = solved
    assert res < 1e-8 and 0 < its <= 60, (res, its)
    assert P.shape == (64, 64) and P.min() > 0
    assert grid.mass(P) == pytest.approx(1.0, abs=1e-12)
    assert dd.gibbs_residual(P, cfg.beta) < 1e-8
    # not the uniform law: β = 10 concentrates mass near the targets (measured max/min = 703)
    assert P.max() / P.min() > 100


def test_fixed_point_minimises_the_free_energy(solved, gen):
    """F_β(P e^{εf}/Z) − F_β(P) > 0 and ∝ ε² (no first-order term: P is stationary) for random
    smooth-free directions f; F_β is ½R + β⁻¹∫ρ log ρ, never the Gibbs map."""
    cfg, grid, dd, P, _, _ = solved
    F0 = dd.free_energy(P, cfg.beta)
    for s in range(3):
        f = torch.randn(grid.cells, generator=gen(10 + s), dtype=torch.float64).numpy()
        d = []
        for eps in (0.1, 0.05, -0.05):
            Q = P * np.exp(eps * f)
            Q /= grid.mass(Q)
            d.append(dd.free_energy(Q, cfg.beta) - F0)
        assert min(d) > 0, d
        # quadratic: halving ε quarters the excess; ±ε give the same excess
        assert d[0] / d[1] == pytest.approx(4.0, rel=0.05), d
        assert d[1] / d[2] == pytest.approx(1.0, rel=0.05), d
    # a large move (halfway to uniform) costs a lot more than round-off
    assert dd.free_energy(0.5 * P + 0.5 * grid.uniform(), cfg.beta) > F0 + 1e-3


def test_the_grid_flow_leaves_the_fixed_point_in_place(solved):
    """The implicit Scharfetter–Gummel flux vanishes on the discrete Gibbs law: the flow from P
    stays within 1e-8 (L¹) over t = 1 (measured 2.6e-12), while from a 10 % perturbation it moves by ≥ 1e-3."""
    cfg, grid, dd, P, _, _ = solved
    sol = dd.solve(P, [0.0, 1.0])
    assert np.abs(sol.density[-1] - P).sum() * grid.area < 1e-8
    Q = 0.9 * P + 0.1 * grid.uniform()
    moved = dd.solve(Q, [0.0, 1.0]).density[-1]
    assert np.abs(moved - Q).sum() * grid.area > 1e-3
    assert np.abs(moved - P).sum() < np.abs(Q - P).sum()          # and towards P


def test_agrees_with_the_damped_iteration_where_that_converges(solved):
    """At β = 1 the plain damped map contracts; both methods reach the same law.  At β = 10 it
    does not (a residual that stays O(1)), and the error says what to do."""
    cfg, grid, dd, _, _, _ = solved
    P_n, r_n, _ = dd.gibbs_fixed_point(1.0, tol=1e-10)
    P_d, r_d, _ = dd.gibbs_fixed_point(1.0, tol=1e-10, method="damped", damping=0.5, max_iter=500)
    assert max(r_n, r_d) < 1e-10
    assert np.abs(P_n - P_d).sum() * grid.area < 1e-9
    with pytest.raises(DivergenceError, match="damped.*newton-krylov"):
        dd.gibbs_fixed_point(cfg.beta, method="damped", max_iter=100)


def test_continuation_in_beta_rescues_a_short_newton_budget(solved):
    """With 8 Newton steps per stage, Newton from the uniform law fails at β = 10 (it needs 20);
    solving at β/2, β/4, … first and climbing back reaches the same law (measured: 21 steps
    in all, L¹ 3e-12 from the direct solution)."""
    cfg, grid, dd, P, _, _ = solved
    Q, res, its = dd.gibbs_fixed_point(cfg.beta, max_iter=8)
    assert res < 1e-8 and its > 8
    assert np.abs(Q - P).sum() * grid.area < 1e-9


def test_failure_is_a_clear_divergence_error(solved):
    cfg, grid, dd, _, _, _ = solved
    with pytest.raises(DivergenceError, match=r"beta=10.*raise max_iter"):
        dd.gibbs_fixed_point(cfg.beta, max_iter=2, continuation=0)
    assert math.isfinite(dd.free_energy(grid.uniform(), cfg.beta))


# ---- the flow linearised at the Gibbs state: its spectrum is the asymptotic rate --------------
@pytest.fixture(scope="module")
def small_torus():
    """pde2d-torus's task and β on a 12² torus: its Gibbs state and the linearised flow there."""
    from meanfield.pde.grid2d_spectrum import linearise_at_gibbs, spectral_rates

    cfg = Config()
    grid = Grid2D.torus(12, PERIOD)
    dd = GridDD(build_task(cfg), grid, xi=cfg.xi, beta=cfg.beta, cfl=1e9, dtype=torch.float64,
                dt_max=0.05)
    rates = spectral_rates(dd, cfg.beta, k=3)
    return cfg, grid, dd, rates, linearise_at_gibbs(dd, rates["P"], cfg.beta)


def test_spectral_rate_is_the_late_local_log_slope_of_a_long_grid_run(small_torus):
    """The smallest non-zero eigenvalue μ₁ of the grid flow linearised at its Gibbs state (the
    Scharfetter–Gummel flux's derivative, with Ψ's dependence on ρ through the kernel) against
    the grid solver itself, run from the uniform law to t = 50 (dt = 0.05): over t ∈ [40, 50]
    F − F_∞ decays at 2μ₁ and the Gibbs residual at μ₁, each within 1 % (measured: 0.2544
    against 2μ₁ = 0.2541, 0.1268 against 0.1271).  Perturbed operators miss by far more:
    without the kernel term (the Fokker–Planck operator in the frozen potential Φ*) 2μ₁ =
    0.022, and with the kernel weights 10 % too large μ₁ moves by 7 %."""
    from scipy.stats import linregress

    cfg, grid, dd, rates, lin = small_torus
    mu = rates["mu"][0]
    times = np.arange(0.0, 50.001, 1.0)
    residual = []
    sol = dd.solve(grid.uniform(), times,
                   callback=lambda k, t, P: residual.append(dd.gibbs_residual(P, cfg.beta)))
    late = times >= 40
    gap = sol.free_energy[late] - dd.free_energy(rates["P"], cfg.beta)
    assert gap.min() > 1e-12                                       # far above round-off
    slope_F = -linregress(times[late], np.log(gap)).slope
    slope_res = -linregress(times[late], np.log(np.asarray(residual)[late])).slope
    assert slope_F == pytest.approx(2 * mu, rel=0.01), (slope_F, 2 * mu)
    assert slope_res == pytest.approx(mu, rel=0.01), (slope_res, mu)
    # the wrong linearisations are rejected by the same comparison
    frozen = rates["mu_frozen_potential"]
    assert abs(slope_F / (2 * frozen) - 1) > 0.5, frozen
    lin.lam = 1.1 * lin.lam
    try:
        wrong = lin.eigenvalues(1)[0][0]
    finally:
        lin.lam = lin.lam / 1.1
    assert abs(slope_F / (2 * wrong) - 1) > 0.03, wrong


def test_linearised_flow_conserves_mass_and_is_self_adjoint_in_the_hessian_metric(small_torus):
    """A = L H with H = diag(1/P*) + βK (β⁻¹H is the Hessian of F_β at P*): the mass mode
    H⁻¹·1 has eigenvalue 0 (measured 1e-16), 1ᵀA = 0 (the flux conserves mass), A is
    self-adjoint for ⟨x, y⟩_H (so its spectrum is real: the eigensolver's imaginary parts
    vanish), and the kernel term K is the solver's own Φ(P* + δ) − Φ(P*) for a perturbation δ."""
    cfg, grid, dd, rates, lin = small_torus
    assert abs(rates["mass_mode"]) < 1e-10 and rates["max_imag"] < 1e-10
    assert rates["gibbs_residual"] < 1e-10
    mu = rates["mu"]
    assert 0 < mu[0] <= mu[1] <= mu[2] and rates["gap_ratio"] == pytest.approx(mu[1] / mu[0])
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((2, lin.n))
    H = lambda v: v / lin.P.ravel() + cfg.beta * lin.kernel(v)        # noqa: E731
    assert abs(lin.generator(x).sum()) < 1e-10 * np.abs(lin.generator(x)).max()
    a, b = H(x) @ lin.generator(y), H(y) @ lin.generator(x)
    assert a == pytest.approx(b, rel=1e-10) and H(x) @ lin.generator(x) < 0
    delta = 1e-3 * rng.standard_normal(grid.cells)
    full = np.ones(grid.cells, bool)
    dphi = dd.potential(lin.P + delta, full)[0] - dd.potential(lin.P, full)[0]
    np.testing.assert_allclose(lin.kernel(delta.ravel()), dphi.ravel(), atol=1e-12)


def test_richardson_extrapolation_and_the_torus_only_assembly():
    """Richardson's three-grid extrapolation is exact on a + b h^p (order fitted) and the
    two-grid one on a + b h²; a box grid is refused with one line (the kernel term is
    block-circulant only on the torus).  The refinement sequence itself is checked on
    pde2d-torus's small-mode run (tests/test_pde2d_experiments.py)."""
    from meanfield.analysis.rates import richardson
    from meanfield.errors import ConfigError
    from meanfield.pde.grid2d_spectrum import linearise_at_gibbs

    h = np.array([0.4, 0.2, 0.1])
    r = richardson(h, 0.3 + 2.0 * h ** 1.5)
    assert r["extrapolated"] == pytest.approx(0.3, abs=1e-12) and r["order"] == pytest.approx(1.5)
    assert richardson(h[1:], 0.3 + 2.0 * h[1:] ** 2)["extrapolated"] == pytest.approx(0.3, abs=1e-12)
    # a perturbed sequence (the finest value off by 1e-3) moves the estimate well beyond 1e-12
    assert abs(richardson(h, 0.3 + 2.0 * h ** 1.5 + [0, 0, 1e-3])["extrapolated"] - 0.3) > 1e-4
    box = GridDD(build_task(Config()), Grid2D.box(0.0, 1.0, 8), beta=10.0, dtype=torch.float64)
    with pytest.raises(ConfigError, match="torus"):
        linearise_at_gibbs(box, np.ones((8, 8)), 10.0)
