"""The 2-D grid solver (meanfield.pde.grid2d): measured grid orders against exact transported and
Ornstein–Uhlenbeck laws, mass conservation (box with outflow, torus), positivity, the outflow
stop, the Gibbs fixed point, the nonlocal velocity through the interaction backends, W2 and the
kNN entropy.  One torch thread (the machine is shared; two threads were 8× slower under load)."""
import math

import numpy as np
import pytest
import torch
from scipy.stats import linregress

import meanfield as mf
from meanfield.errors import ConfigError
from meanfield.interact import evaluate
from meanfield.models import ConfiningPotential
from meanfield.models import TorusMMD
from meanfield.pde import Grid2D, GridDD, knn_neg_entropy, w2_grid
from meanfield.pde.grid2d import ground_cost


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


K, C = 1.0, np.array([0.3, -0.2])                # V = (K/2)|θ − C|², U = 0
M0, S0 = np.array([-0.4, 0.5]), np.array([0.6, 0.5])


def _confining():
    return ConfiningPotential(2, stiffness=K, center=C.tolist())


def _transport_errors(M, scheme, T=0.2):
    """Noiseless: θ(t) = C + (θ₀ − C) e^{−2Kt}, so N(M0, S0²) stays Gaussian with mean
    C + (M0 − C)e^{−2KT} and std S0 e^{−2KT}.  Returns (L¹ error, variance error)."""
    g = Grid2D.box(-3.0, 3.0, M)
    sol = GridDD(_confining(), g, dtype=torch.float64, scheme=scheme).solve(g.gaussian(M0, S0), [0.0, T])
    e = math.exp(-2 * K * T)
    mean, std = C + (M0 - C) * e, S0 * e
    P = sol.density[-1]
    assert abs(sol.mass[-1] - 1) < 1e-12 and sol.mass_out[-1] == 0.0     # the flow points inwards
    assert P.min() >= 0
    l1 = np.abs(P - g.gaussian(mean, std)).sum() * g.area
    c = g.centers
    m = (P[..., None] * c).sum((0, 1)) * g.area
    var = (P[..., None] * (c - m) ** 2).sum((0, 1)) * g.area + np.array(g.h) ** 2 / 12   # cell variance
    return l1, np.abs(var - std ** 2).max()


def test_grid_refinement_order():
    """Measured orders for h → h/4 (cells 24, 48, 96): MUSCL L¹ 1.56 (the MC limiter clips the
    slope along the lines through the peak, first order there), variance 2.02; upwind L¹ 0.81,
    variance 1.04.  Bounds leave ±0.15–0.2 around those."""
    Ms = [24, 48, 96]
    res = {s: np.array([_transport_errors(M, s) for M in Ms]) for s in ("muscl", "upwind")}
    slope = {(s, j): -linregress(np.log(Ms), np.log(res[s][:, j])).slope for s in res for j in (0, 1)}
    assert 1.4 <= slope["muscl", 0] <= 2.1, slope
    assert slope["muscl", 1] == pytest.approx(2.0, abs=0.2), slope
    assert slope["upwind", 0] == pytest.approx(0.8, abs=0.2), slope
    assert slope["upwind", 1] == pytest.approx(1.0, abs=0.2), slope
    assert res["muscl"][-1, 0] < 5e-3 < res["upwind"][-1, 0] / 10   # measured 3.7e-3 and 6.2e-2


def test_noisy_flow_matches_the_ornstein_uhlenbeck_law():
    """β = 4: the OU law N(C + (M0 − C)e^{−2KT}, σ∞² + (S0² − σ∞²)e^{−4KT}), σ∞² = 1/(βK).
    L¹ errors measured 0.0254, 0.0075 (cells 32, 64; order 1.77); the mass on the grid plus
    the mass that left the box equals 1 to 1e-14 (measured 9e-15)."""
    beta, T = 4.0, 0.5
    e = math.exp(-2 * K * T)
    errs = []
    for M in (32, 64):
        g = Grid2D.box(-3.5, 3.5, M)
        sol = GridDD(_confining(), g, beta=beta, dtype=torch.float64, outflow_tol=1e-3).solve(
            g.gaussian(M0, S0), [0.0, T])
        assert sol.scheme == "implicit"
        assert sol.density.min() >= 0
        assert abs(sol.mass[-1] + sol.mass_out[-1] - 1) < 1e-12
        assert 0 < sol.mass_out[-1] < 1e-6      # diffusion leaks through the edges (measured 3.9e-8)
        var = 1 / (beta * K) + (S0 ** 2 - 1 / (beta * K)) * e * e
        errs.append(np.abs(sol.density[-1] - g.gaussian(C + (M0 - C) * e, np.sqrt(var))).sum() * g.area)
    assert errs[1] < 0.01 and errs[0] / errs[1] > 2.8, errs


def test_noisy_flow_reaches_the_discrete_gibbs_law_on_the_torus(gen):
    """On the torus the Scharfetter–Gummel flux vanishes on P ∝ exp(−βΨ(·; P)): the grid
    solution converges exponentially to the self-consistent Gibbs law (the residual
    ‖G(P) − P‖₁ fell from 2.0 to 2.7e-10 by t = 60, log-linearly at rate 0.384, r = −0.99999996
    — Chizat 2022's exponential convergence), which equals the damped fixed-point iteration's
    (L¹ 8e-11); mass stays 1 to 1e-12 and the free energy decreases (16² cells, cfl 4)."""
    task = TorusMMD.random(n_targets=4, generator=gen(3), modes=3)
    g = Grid2D.torus(16)
    beta = 3.0
    dd = GridDD(task, g, beta=beta, xi=0.5, dtype=torch.float64, cfl=4.0)
    res = []
    sol = dd.solve(g.gaussian([1.0, 2.0], 0.8), np.linspace(0.0, 60.0, 13),
                   callback=lambda k, t, P: res.append(dd.gibbs_residual(P, beta)))
    assert np.abs(sol.mass - 1).max() < 1e-12 and (sol.mass_out == 0).all()
    assert (np.diff(sol.free_energy) < 1e-12).all(), sol.free_energy
    assert res[-1] < 1e-8, res
    fit = linregress(sol.times[2:], np.log(res[2:]))
    assert fit.rvalue < -0.999 and -0.5 < fit.slope < -0.25, (fit, res)
    P_fp, res_fp, _ = dd.gibbs_fixed_point(beta, tol=1e-11)
    assert res_fp < 1e-11
    assert np.abs(P_fp - sol.density[-1]).sum() * g.area < 1e-8


def test_torus_transport_conserves_mass_and_positivity(gen):
    """Noiseless MUSCL on the torus: fluxes wrap around, mass 1 to 1e-12, P ≥ 0, the risk
    (MMD², a gradient flow) decreases."""
    task = TorusMMD.random(n_targets=3, generator=gen(1), modes=3)
    g = Grid2D.torus(20)
    sol = GridDD(task, g, dtype=torch.float64).solve(g.gaussian([0.5, 6.0], 0.7), np.linspace(0, 2.0, 5))
    assert np.abs(sol.mass - 1).max() < 1e-12
    assert sol.density.min() >= 0
    assert (np.diff(sol.risk) < 0).all(), sol.risk


def _teacher(activation="erf"):
    unit = mf.Unit(2, activation, output_weight=False)
    return mf.TeacherStudent(unit, torch.tensor([[2.0, 0.0], [0.0, 2.0]], dtype=torch.float64))


@pytest.mark.parametrize("beta", [math.inf, 16.0])
def test_teacher_flow_conserves_mass_and_decreases_the_free_energy(beta):
    """Teacher–student (erf, w ∈ R²) on a box: mass on the grid + mass out = 1 to 1e-12
    (measured 2e-16), P ≥ 0, F_β decreasing; the CFL rule is reported.  (With β = 16 the
    empty exterior absorbs what diffuses across the edge: 4e-3 by t = 3, measured; hence the
    loose outflow_tol.)"""
    g = Grid2D.box(-2.5, 3.5, 30)
    sol = GridDD(_teacher(), g, beta=beta, outflow_tol=1e-2).solve(g.gaussian(0.0, 0.3),
                                                                    np.linspace(0, 3.0, 4))
    assert np.abs(sol.mass + sol.mass_out - 1).max() < 1e-12
    assert sol.density.min() >= 0
    assert (np.diff(sol.free_energy) < 0).all(), sol.free_energy
    assert sol.cfl == 0.4 and 0 < sol.dt_min <= sol.dt_max and sol.steps > 3
    assert sol.scheme == ("muscl" if beta == math.inf else "implicit")


def test_cell_velocity_is_the_backends_particle_velocity():
    """Ψ, ∇Ψ at the cell centres are those of the cells as weighted particles (one
    interact.evaluate call): the grid's values equal a direct evaluation (float32 both)."""
    task = _teacher()
    g = Grid2D.box(-1.5, 2.5, 12)
    P = g.gaussian([0.2, 0.1], 0.5)
    dd = GridDD(task, g, backend="torch", active_tol=0.0)
    phi, grad, R = dd.potential(P)
    th = torch.as_tensor(g.centers.reshape(-1, 2), dtype=torch.float32)
    ref = evaluate(task, th, torch.as_tensor(P.ravel() * g.area, dtype=torch.float32), backend="torch")
    np.testing.assert_allclose(phi.ravel(), ref.psi[0].double().numpy(), rtol=0, atol=1e-7)
    np.testing.assert_allclose(grad.reshape(-1, 2), ref.grad[0].double().numpy(), rtol=0, atol=1e-7)
    assert R == pytest.approx(float(ref.risk[0]), abs=1e-7)
    # and the float64 numpy reference agrees to float32 accuracy (measured 2e-7)
    ref64 = evaluate(task, th.double(), torch.as_tensor(P.ravel() * g.area), backend="numpy")
    assert np.abs(grad.reshape(-1, 2) - ref64.grad[0].numpy()).max() < 1e-5


def test_outflow_beyond_the_tolerance_stops_the_run():
    """A box that cuts the flow: the mass crossing its edge is counted and the run stops."""
    g = Grid2D.box(-1.0, 1.0, 16)
    dd = GridDD(_teacher(), g, outflow_tol=1e-4)
    with pytest.raises(ConfigError, match="left the box"):
        dd.solve(g.gaussian(0.6, 0.3), [0.0, 5.0])


def test_w2_and_knn_entropy(gen):
    """W2(grid law, its own i.i.d. samples) shrinks with N (measured 0.39 → 0.18 for N = 40 → 400);
    the periodic ground cost wraps; the kNN estimate of ∫ρ log ρ from N = 20000 samples is
    within 0.05 of −log(4π²) for the uniform law on the torus and of −(1 + log 2πσ²) for a
    Gaussian on the plane (its s.d. is √(π²/6/N) ≈ 0.009; errors measured over 4 seeds: at
    most 0.026)."""
    g = Grid2D.box(-3.0, 3.0, 30)
    P = g.gaussian(0.0, 0.7)
    w = [np.mean([w2_grid(g, P, g.sample(P, n, generator=gen(s)), sub=1) for s in range(3)])
         for n in (40, 400)]
    assert w[1] < 0.6 * w[0], w
    assert g.quantisation(2) == pytest.approx(math.sqrt(2 * 0.2 ** 2 / 12) / 2)
    t = Grid2D.torus(8)
    d2 = ground_cost(np.array([[0.1, 0.1]]), np.array([[2 * math.pi - 0.1, 0.2]]), t.period)
    assert d2[0, 0] == pytest.approx(0.2 ** 2 + 0.1 ** 2)
    x = torch.rand(20000, 2, generator=gen(5), dtype=torch.float64) * 2 * math.pi
    assert knn_neg_entropy(x, period=2 * math.pi) == pytest.approx(-math.log(4 * math.pi ** 2), abs=0.05)
    y = 0.5 * torch.randn(20000, 2, generator=gen(6), dtype=torch.float64)
    assert knn_neg_entropy(y) == pytest.approx(-(1 + math.log(2 * math.pi * 0.25)), abs=0.05)


def test_bad_input_is_rejected():
    with pytest.raises(ConfigError, match="cells must be >= 3"):
        Grid2D.box(0.0, 1.0, 2)
    with pytest.raises(ConfigError, match="must exceed"):
        Grid2D.box(1.0, 0.0, 8)
    g = Grid2D.box(-1.0, 1.0, 8)
    with pytest.raises(ConfigError, match="dimension 2"):
        GridDD(ConfiningPotential(3), g)
    with pytest.raises(ConfigError, match="cfl must be <= 0.5"):
        GridDD(_confining(), g, scheme="muscl", cfl=0.8)
    with pytest.raises(ConfigError, match="lam must be 0 on the torus"):
        GridDD(_confining(), Grid2D.torus(8), lam=0.1)
    with pytest.raises(ConfigError, match="P0 must have shape"):
        GridDD(_confining(), g).solve(np.ones((7, 8)), [0.0, 1.0])
    with pytest.raises(ConfigError, match="needs a finite beta"):
        GridDD(_confining(), g, scheme="implicit").solve(g.gaussian(0.0, 0.3), [0.0, 1.0])


def test_torus_mmd_fourier_sums_match_the_direct_kernel(gen):
    """TorusMMD's mode sums equal the direct cosine-sum kernel: Ψ, R to 1e-12 and ∇Ψ against
    autograd of the direct sums (measured 2e-15)."""
    task = TorusMMD.random(10, generator=gen(0))
    th = torch.rand(7, 2, generator=gen(1), dtype=torch.float64) * 7.0
    m = torch.rand(7, generator=gen(2), dtype=torch.float64)
    m = m / m.sum()
    pot = evaluate(task, th, m)
    x = th.clone().requires_grad_(True)
    psi = task.kernel(x, th) @ m - task.kernel(x, task.targets) @ task.target_weights
    grad, = torch.autograd.grad(psi.sum(), x)
    nu = task.target_weights
    R = m @ task.kernel(th, th) @ m - 2 * m @ task.kernel(th, task.targets) @ nu \
        + nu @ task.kernel(task.targets, task.targets) @ nu
    assert (pot.psi[0] - psi.detach()).abs().max() < 1e-12
    assert (pot.grad[0] - grad).abs().max() < 1e-12
    assert float(pot.risk[0]) == pytest.approx(float(R), abs=1e-12)
    assert task.kernel(th[:1], th[:1])[0, 0] == pytest.approx((1 + 2 * sum(1 / (1 + k) for k in range(1, 6))) ** 2)
