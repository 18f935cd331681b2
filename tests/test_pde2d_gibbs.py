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
