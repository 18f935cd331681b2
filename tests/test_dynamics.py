"""Particle dynamics on the MMN time axis (docs/design.md §1, "Time and dynamics").

GD monotonicity, SGD ≈ GD flow at small ε, the time convention t = k·dt (curves overlay
across N and dt), Langevin → Gibbs (Ornstein–Uhlenbeck), replicas and bit-for-bit
reproducibility, schedules, bad input, weighted particles.

All randomness comes from seeded ``torch.Generator`` objects or ``init(seed=...)``; the
torch interaction backend is used throughout (no KeOps compilation).
"""
from __future__ import annotations

import io
import math
import re

import pytest
import torch

from meanfield.diagnostics import risk as exact_risk
from meanfield.dynamics import (ParticleDynamics, ParticleState, as_schedule, gradient_flow,
                                langevin, minibatch_sgd, online_sgd)
from meanfield.dynamics.schedules import Schedule
from meanfield.errors import ConfigError, DivergenceError
from meanfield.interact import evaluate
from meanfield.measure import ParticleMeasure
from meanfield.models import ConfiningPotential, IsotropicGaussians, TeacherStudent, Unit

F64 = torch.float64
BACKEND = "torch"


# ---------------------------------------------------------------------------- threads
@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """These systems are small (N ≤ 2000, tiny SGD batches): a second intra-op thread gains
    nothing, and when another process holds the other core OpenMP oversubscription made this
    file ~9× slower (120 s vs 13.6 s measured under load 4 on 2 cores).  Restored afterwards."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# ---------------------------------------------------------------------------- helpers
def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def teacher_student(d: int = 5, activation: str = "relu", m0: int = 3, seed: int = 0):
    return TeacherStudent.random(Unit(d, activation), m0, generator=gen(seed))


def init_theta(N: int, d: int, generator: torch.Generator, replicas: int = 1) -> torch.Tensor:
    """θ = (a, w) i.i.d. with a ~ N(0, 1), w ~ N(0, I_d / d): [replicas, N, 1 + d], float64."""
    std = [1.0] + [1.0 / math.sqrt(d)] * d
    pm = ParticleMeasure.gaussian(N, d + 1, generator=generator, std=std, replicas=replicas,
                                  dtype=F64)
    return pm.batched


def risk_curve(dyn: ParticleDynamics, state: ParticleState, steps: int):
    """Exact population risks R(ρ_k) for k = 0..steps ([B, steps + 1]) and the final state.

    R(ρ_k) for k < steps is what step k saw (StepInfo.potential.risk, free with population
    drift); the last one is evaluated at the final positions."""
    risks = []
    for _ in range(steps):
        state, info = dyn.step(state)
        risks.append(info.potential.risk)
    risks.append(evaluate(dyn.task, state.theta, state.weights, backend=BACKEND).risk)
    return torch.stack(risks, -1), state


def sampled_risk_curve(dyn: ParticleDynamics, state: ParticleState, steps: int, every: int):
    """Exact risks (meanfield.diagnostics.risk) every ``every`` steps of a (sample-driven)
    dynamics, at steps 0, every, 2·every, …, steps: [B, steps // every + 1]."""
    assert steps % every == 0
    risks = []
    for k in range(steps + 1):
        if k % every == 0:
            r, se = exact_risk(dyn.task, state.theta, state.weights, backend=BACKEND)
            assert se is None                       # exact, not Monte Carlo
            risks.append(r)
        if k < steps:
            state, _ = dyn.step(state)
    return torch.stack(risks, -1)


def assert_non_increasing(r: torch.Tensor, rel: float = 1e-7):
    """r[k+1] ≤ r[k] (1 + rel) for all k, along the last axis."""
    inc = r[..., 1:] - r[..., :-1] * (1 + rel)
    worst = int(inc.flatten().argmax())
    assert (inc <= 0).all(), f"risk increased at step {worst}: {r.flatten()[worst:worst + 2].tolist()}"


# ------------------------------------------------------------------ 1. GD is monotone
@pytest.mark.parametrize("activation", ["relu", "erf"])
def test_gradient_flow_risk_decreases_monotonically(activation):
    task = teacher_student(5, activation, m0=3, seed=0)
    dyn = gradient_flow(task, dt=0.05, backend=BACKEND)
    state = dyn.init(init_theta(200, 5, gen(1)), seed=2)
    r, final = risk_curve(dyn, state, 200)
    r = r[0]
    assert r.dtype == F64 and torch.isfinite(r).all()
    assert_non_increasing(r, rel=1e-7)
    # well below the start: here R(T=10) / R(0) ≈ 0.006 (relu), 0.017 (erf); every step
    # lowers R by ≥ 0.7 % (relu), ≥ 0.18 % (erf), far beyond the 1e-7 slack
    assert r[-1] < 0.1 * r[0], (float(r[0]), float(r[-1]))
    assert final.step == 200 and final.t == pytest.approx(10.0, abs=1e-12)


# ------------------------------------------------------- 2. SGD tracks the GD flow
# Online SGD with step ε moves every particle with the *same* sample, so its deviation from
# the flow is O(√ε) independently of N (MMN Thm. 3).  Measured with this code over 16 draws
# (8 teachers × 2 seeds) at ε = 5e-4, N = 300, T = 2: max_t |R_sgd − R_gd| / R(0) ≤ 0.033
# (online) and ≤ 0.0064 (batch 32, whose sampling noise is √32 smaller; what is left is
# mostly the GD dt = 0.01 discretisation); online/batch-32 error ratio ≥ 3.3.
SGD_EPS, GD_DT, T_SGD, T_CMP, N_SGD = 5e-4, 0.01, 2.0, 0.1, 300
ONLINE_TOL, MINIBATCH_TOL = 0.1, 0.025


@pytest.mark.parametrize("seed", [0, 1])
def test_sgd_tracks_gradient_flow_on_the_time_axis(seed):
    task = teacher_student(5, "relu", m0=3, seed=0)
    theta0 = init_theta(N_SGD, 5, gen(100 + seed))

    gd = gradient_flow(task, dt=GD_DT, backend=BACKEND)
    r_gd, _ = risk_curve(gd, gd.init(theta0, seed=seed), round(T_SGD / GD_DT))
    r_gd = r_gd[0, ::round(T_CMP / GD_DT)]                       # at t = 0, 0.1, …, 2

    steps, every = round(T_SGD / SGD_EPS), round(T_CMP / SGD_EPS)   # step k sits at t = kε
    online = online_sgd(task, eps=SGD_EPS, backend=BACKEND)
    r_on = sampled_risk_curve(online, online.init(theta0, seed=seed), steps, every)[0]
    mb = minibatch_sgd(task, eps=SGD_EPS, batch_size=32, backend=BACKEND)
    r_mb = sampled_risk_curve(mb, mb.init(theta0, seed=seed), steps, every)[0]

    assert r_gd.shape == r_on.shape == r_mb.shape == (round(T_SGD / T_CMP) + 1,)
    R0 = float(r_gd[0])
    assert float(r_on[0]) == pytest.approx(R0, rel=1e-12)        # same initial measure
    assert r_gd[-1] < 0.2 * R0                                     # the curve actually moves
    err_online = float((r_on - r_gd).abs().max()) / R0
    err_mb = float((r_mb - r_gd).abs().max()) / R0
    assert err_online < ONLINE_TOL, err_online
    assert err_mb < MINIBATCH_TOL, err_mb
    assert err_mb < err_online, (err_mb, err_online)
    # and SGD on a wrong time axis (t = k·ε/2) would be far off the flow: the test can fail
    r_gd_half = r_gd[: (len(r_gd) + 1) // 2]                        # GD at t = 0, 0.1, …, 1
    r_mb_double = r_mb[::2][: len(r_gd_half)]                       # SGD at t = 0, 0.2, …, 2
    assert float((r_mb_double - r_gd_half).abs().max()) / R0 > 5 * MINIBATCH_TOL


# --------------------------------------------------------- 3. the time convention
N_SMALL, N_LARGE, SEEDS_SMALL, DT3, T3 = 200, 2000, 12, 0.05, 2.0


def test_risk_curves_for_different_N_overlay_on_the_time_axis():
    """R_N(t) for N = 200 (12 i.i.d. draws) and N = 2000 from the same law, same t axis.

    The finite-N effects are O(1/√N) fluctuations (σ(t): the spread over the N = 200 draws)
    plus an O(1/N) self-interaction bias.  Measured over 12 draws of the whole setup
    (teacher, N = 200 and N = 2000 particles): per-draw gaps ≤ 2.8 σ_max (bound: 4 σ_max +
    1/N); mean-curve gap ≤ 0.47 tol(t) pointwise and ≤ 0.1 × decrease (bound 0.15); the
    risk decrease is 8–15 σ_max."""
    task = teacher_student(5, "relu", m0=3, seed=0)
    dyn = gradient_flow(task, dt=DT3, backend=BACKEND)
    steps = round(T3 / DT3)
    r_small, _ = risk_curve(dyn, dyn.init(init_theta(N_SMALL, 5, gen(10), SEEDS_SMALL), seed=0), steps)
    r_large, _ = risk_curve(dyn, dyn.init(init_theta(N_LARGE, 5, gen(20)), seed=0), steps)
    r_large = r_large[0]

    sigma = r_small.std(0)                             # [steps + 1] fluctuation scale at N = 200
    bias = 1.0 / N_SMALL                               # O(1/N) term (U(θ, θ) = O(1))
    decrease = r_large[0] - r_large[-1]
    assert decrease > 0.2 and decrease > 5 * sigma.max()   # a curve that moves, above noise

    per_draw_gap = (r_small - r_large).abs().max(-1).values          # [12]
    assert (per_draw_gap <= 4 * sigma.max() + bias).all(), (per_draw_gap, sigma.max())

    # the mean of the 12 draws, pointwise in t: its own noise σ/√12 and the N = 2000 draw's
    # σ·√(200/2000), 3 standard errors, plus 3/N
    tol = 3 * (sigma * math.sqrt(1 / SEEDS_SMALL + N_SMALL / N_LARGE) + bias)
    mean_gap = (r_small.mean(0) - r_large).abs()
    assert (mean_gap <= tol).all(), (mean_gap / tol).max()
    assert mean_gap.max() <= 0.15 * decrease

    # discriminating: the same comparison against t ↦ R_2000(t/2) (a factor 2 in the time
    # convention, e.g. ½R vs R) fails it (measured: max_t wrong/tol = 2.2–4.5, wrong ≈ 0.27 ×
    # decrease)
    wrong = (r_small.mean(0)[::2] - r_large[: steps // 2 + 1]).abs()
    assert (wrong > tol[::2]).any(), (wrong / tol[::2]).max()
    assert wrong.max() > 0.2 * decrease


def test_risk_curves_are_indexed_by_time_not_by_step_count():
    task = teacher_student(5, "relu", m0=3, seed=0)
    theta0 = init_theta(N_SMALL, 5, gen(3))
    T, t_cmp = 2.0, 0.1

    def curve(dt, T=T):
        dyn = gradient_flow(task, dt=dt, backend=BACKEND)
        r, st = risk_curve(dyn, dyn.init(theta0, seed=0), round(T / dt))
        assert st.t == pytest.approx(T, abs=1e-12)
        return r[0]

    c025, c05, c1 = curve(0.025), curve(0.05), curve(0.1)
    on_grid = lambda c, dt: c[::round(t_cmp / dt)]      # risks at t = 0, 0.1, …, 2
    e_coarse = (on_grid(c1, 0.1) - on_grid(c05, 0.05)).abs().max()
    e_fine = (on_grid(c05, 0.05) - on_grid(c025, 0.025)).abs().max()
    R0, decrease = c05[0], c05[0] - c05[-1]
    # same curve to O(dt): the gap is a few per mille of R(0) and halves with dt (Euler)
    assert e_coarse < 0.02 * R0, (e_coarse, R0)
    assert 1.6 < e_coarse / e_fine < 2.5, (e_coarse, e_fine)

    # the same number of STEPS at different dt does not overlay: step k of dt = 0.1 is at
    # t = 0.1k, step k of dt = 0.05 at t = 0.05k
    c1_long = curve(0.1, T=2 * T)
    same_steps_gap = (c05 - c1_long[: len(c05)]).abs().max()
    assert same_steps_gap > 0.1 * decrease
    assert same_steps_gap > 20 * e_coarse, (same_steps_gap, e_coarse)


# ------------------------------------------------ 4. Langevin → Gibbs (Ornstein–Uhlenbeck)
K_OU, LAM_OU, BETA_OU, DT_OU = 2.0, 0.5, 2.0, 0.02
CENTER_OU = [1.0, -2.0, 0.5, 0.0, 3.0]
B_OU, N_OU = 4, 2500


def _ou_run(beta, steps, seed=0):
    task = ConfiningPotential(len(CENTER_OU), stiffness=K_OU, center=CENTER_OU)
    dyn = langevin(task, dt=DT_OU, beta=beta, lam=LAM_OU, backend=BACKEND)
    state = dyn.init(torch.zeros(B_OU, N_OU, len(CENTER_OU), dtype=F64), seed=seed)
    betas = []
    for _ in range(steps):
        state, info = dyn.step(state)
        betas.append(info.beta)
    return state, betas


def _pooled_variance(theta):
    """Per-coordinate sample variance (over replicas and particles), pooled over coordinates."""
    x = theta.reshape(-1, theta.shape[-1])
    return float(x.var(0, unbiased=True).mean()), x.mean(0), x.shape[0]


def test_langevin_reaches_the_gibbs_law_of_a_quadratic_potential():
    steps = 300                                       # (1 − a dt)^300 ≈ 2e-14: stationary
    state, _ = _ou_run(BETA_OU, steps)
    a = 2 * (K_OU + LAM_OU)                           # drift rate
    v_cont = 1 / (BETA_OU * (K_OU + LAM_OU))          # Gibbs variance exp(−β Ψ_λ)
    v_disc = (4 * DT_OU / BETA_OU) / (1 - (1 - a * DT_OU) ** 2)   # Euler–Maruyama stationary
    mean_exact = torch.tensor(CENTER_OU, dtype=F64) * K_OU / (K_OU + LAM_OU)

    v_hat, mean_hat, n_per_coord = _pooled_variance(state.theta)
    n = n_per_coord * len(CENTER_OU)                  # independent chains × coordinates
    se_var = math.sqrt(2 * v_disc ** 2 / n)          # Var(sample variance) ≈ 2σ⁴/n
    se_mean = math.sqrt(v_disc / n_per_coord)

    assert abs(v_hat - v_disc) < 4 * se_var, (v_hat, v_disc, se_var)
    # the continuous-time Gibbs variance, within the O(dt) relative bias a·dt/2 (≈ 5 %)
    assert abs(v_hat - v_cont) / v_cont < a * DT_OU, (v_hat, v_cont)
    # the bias is real and resolved (5 % ≫ 4 SE ≈ 2.5 %): the discrete formula fits better
    assert abs(v_hat - v_disc) < abs(v_hat - v_cont)
    assert torch.allclose(mean_hat, mean_exact, rtol=0, atol=4 * se_mean), (mean_hat, mean_exact)


def test_langevin_annealed_beta_follows_its_schedule_and_cools():
    steps = 300                                       # T = 6: β(T) = 2 (1 + 6) = 14
    spec = "linear:2,1"
    state_a, betas = _ou_run(spec, steps, seed=1)
    state_c, _ = _ou_run(BETA_OU, steps, seed=2)
    sched = as_schedule(spec)
    # β is read at t_k = k dt before step k
    assert betas == pytest.approx([sched(k * DT_OU) for k in range(steps)], rel=1e-12)

    # exact variance of the annealed Euler–Maruyama chain started at a point:
    # v_{k+1} = (1 − a dt)² v_k + 4 dt / β(t_k)
    a = 2 * (K_OU + LAM_OU)
    v = 0.0
    for b in betas:
        v = (1 - a * DT_OU) ** 2 * v + 4 * DT_OU / b
    v_hat, _, n_per_coord = _pooled_variance(state_a.theta)
    n = n_per_coord * len(CENTER_OU)
    assert abs(v_hat - v) < 4 * math.sqrt(2 * v * v / n), (v_hat, v)
    v_const, _, _ = _pooled_variance(state_c.theta)
    assert v_hat < 0.25 * v_const, (v_hat, v_const)
    # cooling lags behind the instantaneous Gibbs variance 1/(β(T)(k+λ)), never ahead of it
    assert v_hat > 1 / (sched(steps * DT_OU) * (K_OU + LAM_OU))


# ------------------------------------------------------------------ 5. replicas
def test_batched_gradient_flow_equals_unbatched_runs():
    task = teacher_student(4, "relu", m0=3, seed=0)
    dyn = gradient_flow(task, dt=0.05, backend=BACKEND)
    theta0 = init_theta(60, 4, gen(5), replicas=3)
    batched = dyn.run(dyn.init(theta0, seed=0), 30)
    assert batched.theta.shape == (3, 60, 5)
    for r in range(3):
        single = dyn.run(dyn.init(theta0[r], seed=0), 30)
        torch.testing.assert_close(batched.theta[r], single.theta, rtol=0, atol=1e-12)
    # the replicas really are different systems
    assert (batched.theta[0] - batched.theta[1]).abs().max() > 0.1


def _noisy_dynamics(kind, task):
    if kind == "online":
        return online_sgd(task, eps=0.01, backend=BACKEND)
    if kind == "minibatch":
        return minibatch_sgd(task, eps=0.01, batch_size=8, backend=BACKEND)
    return langevin(task, dt=0.01, beta=100.0, lam=0.1, backend=BACKEND)


@pytest.mark.parametrize("kind", ["online", "minibatch", "langevin"])
def test_replicas_get_independent_noise_and_runs_reproduce_bit_for_bit(kind):
    task = teacher_student(4, "relu", m0=3, seed=0)
    dyn = _noisy_dynamics(kind, task)
    theta0 = init_theta(40, 4, gen(6)).expand(3, 40, 5).contiguous()   # identical replicas

    run1 = dyn.run(dyn.init(theta0, seed=7), 20)
    run2 = dyn.run(dyn.init(theta0, seed=7), 20)
    assert torch.equal(run1.theta, run2.theta)
    other = dyn.run(dyn.init(theta0, seed=8), 20)
    assert not torch.equal(run1.theta, other.theta)
    # same start, different samples/noise per replica
    for r, s in ((0, 1), (0, 2), (1, 2)):
        assert (run1.theta[r] - run1.theta[s]).abs().max() > 1e-6, (r, s)
    # a generator passed explicitly works like a seed
    run3 = dyn.run(dyn.init(theta0, generator=gen(7)), 20)
    assert torch.equal(run1.theta, run3.theta)


@pytest.mark.parametrize("kind", ["online", "minibatch", "langevin"])
def test_resume_from_state_dict_continues_bit_for_bit(kind):
    task = teacher_student(4, "relu", m0=3, seed=0)
    dyn = _noisy_dynamics(kind, task)
    theta0 = init_theta(40, 4, gen(6), replicas=2)

    uninterrupted = dyn.run(dyn.init(theta0, seed=11), 30)

    half = dyn.run(dyn.init(theta0, seed=11), 15)
    buf = io.BytesIO()
    torch.save(half.state_dict(), buf)                 # as a checkpoint would
    # the original state keeps going (its generator advances); the saved copy must not care
    dyn.run(half, 5)
    buf.seek(0)
    resumed = ParticleState.from_state_dict(torch.load(buf))
    assert resumed.step == 15 and resumed.t == pytest.approx(0.15, abs=1e-12)
    resumed = dyn.run(resumed, 15)

    assert torch.equal(resumed.theta, uninterrupted.theta)
    assert resumed.step == uninterrupted.step == 30
    assert resumed.t == uninterrupted.t
    assert torch.equal(resumed.generator.get_state(), uninterrupted.generator.get_state())


# ------------------------------------------------------------------ 6. schedules
@pytest.mark.parametrize("spec, formula", [
    ("0.5", lambda t: 0.5),
    ("const:1", lambda t: 1.0),
    ("power:1,0.25,1", lambda t: (1.0 + t) ** -0.25),
    ("power:3,0.5,2", lambda t: 3.0 * (2.0 + t) ** -0.5),
    ("log:2,1", lambda t: 2.0 * math.log(math.e + t)),
    ("log:1.5,4", lambda t: 1.5 * math.log(math.e + t / 4.0)),
    ("linear:2,1", lambda t: 2.0 * (1.0 + t)),
    ("linear:0.5,3", lambda t: 0.5 * (1.0 + t / 3.0)),
])
def test_schedule_specs_follow_the_documented_formulas(spec, formula):
    sched = as_schedule(spec, "xi")
    assert isinstance(sched, Schedule)
    for t in (0.0, 0.3, 1.0, 7.5, 100.0):
        assert sched(t) == pytest.approx(formula(t), rel=1e-14)
    # a spec round-trips, numbers are constants, a Schedule passes through
    assert as_schedule(sched.spec()) == sched
    assert as_schedule(sched) is sched


def test_numbers_and_inf_are_constant_schedules():
    assert as_schedule(0.25)(3.0) == 0.25
    assert as_schedule(2)(0.0) == 2.0 and as_schedule(2).is_constant
    assert as_schedule(math.inf, "beta")(1.0) == math.inf
    assert as_schedule("inf", "beta")(1.0) == math.inf
    assert not as_schedule("power:1,0.25,1").is_constant


@pytest.mark.parametrize("spec, fragment", [
    ("power:1,0.25", "power"),           # wrong number of parameters
    ("const:1,2", "const"),
    ("cosine:1,2", "cosine"),            # unknown kind
    ("power:a,b,c", "power:a,b,c"),      # unparsable
    ("", "''"),
    ("log:2,0", "log"),                  # t0 must be > 0
    ("linear:2,-1", "linear"),
    ("power:1,0.25,-1", "power"),        # t0 >= 0
    ("power:nan,0.25,1", "power"),       # non-finite
    ("nan", "nan"),
    ("-inf", "inf"),
    ("0", "0"),                          # xi must be > 0
    ("-0.5", "-0.5"),
    ("log:-2,1", "log"),
    (True, "True"),
    (None, "None"),
    ([1.0], "[1.0]"),
])
def test_bad_schedule_specs_raise_config_error(spec, fragment):
    with pytest.raises(ConfigError) as exc:
        as_schedule(spec, "xi")
    msg = str(exc.value)
    assert "xi" in msg and fragment in msg, msg


def test_power_schedule_at_t0_zero_is_undefined_at_time_zero():
    sched = as_schedule("power:1,0.25,0")
    assert sched(1.0) == pytest.approx(1.0)
    with pytest.raises(ConfigError, match="t=0"):
        sched(0.0)


def test_step_size_follows_the_xi_schedule_on_the_time_axis():
    task = teacher_student(4, "relu", m0=3, seed=0)
    dt, spec = 0.1, "power:1,0.25,1"
    xi = as_schedule(spec)
    dyn = ParticleDynamics(task, dt=dt, xi=spec, backend=BACKEND)
    state = dyn.init(init_theta(30, 4, gen(4)), seed=0)
    for k in range(25):
        assert state.step == k and state.t == pytest.approx(k * dt, abs=1e-12)
        old = state.theta
        state, info = dyn.step(state)
        s_k = dt * xi(k * dt)
        assert info.step_size == pytest.approx(s_k, rel=1e-12), k
        assert info.beta == math.inf
        # the schedule really scales the move: θ_{k+1} − θ_k = −2 s_k ∇Ψ(θ_k)
        torch.testing.assert_close(state.theta - old, -2 * s_k * info.potential.grad,
                                   rtol=0, atol=1e-13)
    # the step sizes decay (not a constant schedule in disguise)
    assert dt * xi(24 * dt) < 0.8 * dt


# ------------------------------------------------------------------ 7. bad input
@pytest.fixture
def ts_task():
    return teacher_student(5, "relu", m0=3, seed=0)


@pytest.mark.parametrize("kwargs, fragments", [
    (dict(dt=-0.1), ["dt", "-0.1"]),
    (dict(dt=0.0), ["dt", "0.0"]),
    (dict(dt=float("nan")), ["dt", "nan"]),
    (dict(dt=float("inf")), ["dt", "inf"]),
    (dict(dt="fast"), ["dt", "fast"]),
    (dict(dt=0.1, drift="adam"), ["drift", "adam"]),
    (dict(dt=0.1, backend="cuda-magic"), ["backend", "cuda-magic"]),
    (dict(dt=0.1, drift="sgd", batch_size=0), ["batch_size", "0"]),
    (dict(dt=0.1, drift="sgd", batch_size=-3), ["batch_size", "-3"]),
    (dict(dt=0.1, lam=-0.5), ["lam", "-0.5"]),
    (dict(dt=0.1, lam=float("nan")), ["lam", "nan"]),
    (dict(dt=0.1, xi="power:1,0.25"), ["xi", "power"]),
    (dict(dt=0.1, xi=-1.0), ["xi", "-1.0"]),
    (dict(dt=0.1, beta=0.0), ["beta", "0.0"]),
    (dict(dt=0.1, beta="sometimes"), ["beta", "sometimes"]),
])
def test_bad_dynamics_arguments_raise_config_error(ts_task, kwargs, fragments):
    with pytest.raises(ConfigError) as exc:
        ParticleDynamics(ts_task, **kwargs)
    for f in fragments:
        assert f in str(exc.value), str(exc.value)


def test_bad_dt_in_helpers_and_in_step(ts_task):
    with pytest.raises(ConfigError, match=r"dt.*-0\.2"):
        gradient_flow(ts_task, dt=-0.2, backend=BACKEND)
    with pytest.raises(ConfigError, match=r"dt.*nan"):
        online_sgd(ts_task, eps=float("nan"))
    with pytest.raises(ConfigError, match="batch_size"):
        minibatch_sgd(ts_task, eps=0.01, batch_size=0)
    with pytest.raises(ConfigError, match=r"lam.*-1"):
        langevin(ts_task, dt=0.01, beta=1.0, lam=-1.0)
    dyn = gradient_flow(ts_task, dt=0.1, backend=BACKEND)
    state = dyn.init(init_theta(10, 5, gen(0)), seed=0)
    with pytest.raises(ConfigError, match=r"dt.*inf"):
        dyn.step(state, dt=float("inf"))
    with pytest.raises(ConfigError, match=r"dt.*-0\.1"):
        dyn.step(state, dt=-0.1)


def test_population_drift_without_closed_form_is_rejected():
    task = IsotropicGaussians(Unit(5, "relu", output_weight=False), delta=0.5)
    with pytest.raises(ConfigError) as exc:
        ParticleDynamics(task, dt=0.1, drift="population", backend=BACKEND)
    assert "isotropic-gaussians" in str(exc.value) and "sgd" in str(exc.value)
    # with drift="sgd" the same task runs
    dyn = online_sgd(task, eps=0.01, backend=BACKEND)
    state = dyn.run(dyn.init(torch.randn(20, 5, generator=gen(0), dtype=F64), seed=0), 3)
    assert state.step == 3 and torch.isfinite(state.theta).all()


def test_bad_initial_state_raises_config_error(ts_task):
    dyn = gradient_flow(ts_task, dt=0.1, backend=BACKEND)
    good = init_theta(10, 5, gen(0))[0]
    with pytest.raises(ConfigError, match=r"4.*D=6"):
        dyn.init(good[:, :4], seed=0)
    with pytest.raises(ConfigError, match="shape"):
        dyn.init(good.reshape(1, 1, 10, 6), seed=0)
    for bad_value in (float("nan"), float("inf")):
        bad = good.clone()
        bad[3, 2] = bad_value
        with pytest.raises(ConfigError, match="non-finite"):
            dyn.init(bad, seed=0)
    with pytest.raises(ConfigError, match="seed"):       # noisy dynamics need their randomness
        langevin(ts_task, dt=0.1, beta=10.0, backend=BACKEND).init(good)
    with pytest.raises(ConfigError, match=r"weights.*3.*10 particles"):
        dyn.init(good, seed=0, weights=torch.full((3,), 1 / 3, dtype=F64))


def test_beta_schedule_going_non_positive_is_rejected():
    task = ConfiningPotential(2, stiffness=1.0)
    with pytest.raises(ConfigError, match="beta"):
        langevin(task, dt=0.1, beta=-1.0)


def test_diverging_step_raises_divergence_error_naming_the_step(ts_task):
    dyn = gradient_flow(ts_task, dt=1e4, backend=BACKEND)
    state = dyn.init(init_theta(50, 5, gen(0)), seed=0)
    last_ok = None
    with pytest.raises(DivergenceError) as exc:
        for _ in range(200):
            last_ok = state.step
            state, _ = dyn.step(state)
    assert last_ok is not None and last_ok < 200
    # the failing step is the one the state was at when the error was raised
    assert re.search(rf"\bstep {state.step}\b", str(exc.value)), (str(exc.value), state.step)
    assert state.step == last_ok and torch.isfinite(state.theta).all()
    # run() raises the same error
    with pytest.raises(DivergenceError, match=rf"step {state.step}\b"):
        dyn.run(dyn.init(init_theta(50, 5, gen(0)), seed=0), 200)


# ------------------------------------------------------------- 8. weighted particles
def test_weighted_gradient_flow_risk_decreases_monotonically():
    task = teacher_student(5, "relu", m0=3, seed=0)
    g = gen(9)
    theta0 = init_theta(100, 5, g)
    w = 0.05 + torch.rand(100, generator=g, dtype=F64) ** 3       # spread over ~20×
    w = w / w.sum()
    dyn = gradient_flow(task, dt=0.05, backend=BACKEND)
    state = dyn.init(theta0, seed=0, weights=w)
    r, _ = risk_curve(dyn, state, 150)
    assert_non_increasing(r[0], rel=1e-7)
    assert r[0, -1] < 0.2 * r[0, 0]
    # the weights matter (the uniform-weight run from the same positions is different)
    r_uniform, _ = risk_curve(dyn, dyn.init(theta0, seed=0), 150)
    assert abs(float(r_uniform[0, 0] - r[0, 0])) > 1e-3
    # a weighted ParticleMeasure carries its weights into the state
    via_measure = dyn.run(dyn.init(ParticleMeasure(theta0[0], weights=w), seed=0), 10)
    torch.testing.assert_close(via_measure.theta, dyn.run(state, 10).theta[0], rtol=0, atol=0)


def test_two_coincident_half_particles_move_like_one_unit_particle():
    task = teacher_student(4, "relu", m0=3, seed=0)
    dyn = gradient_flow(task, dt=0.05, backend=BACKEND)
    theta = init_theta(1, 4, gen(2))[0]                              # [1, D]
    single = dyn.init(theta, seed=0, weights=torch.ones(1, dtype=F64))
    pair = dyn.init(theta.repeat(2, 1), seed=0, weights=torch.tensor([0.5, 0.5], dtype=F64))
    for _ in range(60):
        single, i1 = dyn.step(single)
        pair, i2 = dyn.step(pair)
        torch.testing.assert_close(i2.potential.risk, i1.potential.risk, rtol=0, atol=1e-12)
    for j in range(2):
        torch.testing.assert_close(pair.theta[j], single.theta[0], rtol=0, atol=1e-12)
    assert (single.theta - theta).abs().max() > 0.05             # it did move


def test_splitting_a_particle_in_two_halves_changes_nothing():
    """A weighted measure with particle 0 split into two coincident copies of mass m_0/2."""
    task = teacher_student(4, "erf", m0=3, seed=0)
    dyn = gradient_flow(task, dt=0.05, backend=BACKEND)
    g = gen(12)
    theta = init_theta(20, 4, g)[0]
    w = torch.rand(20, generator=g, dtype=F64) + 0.1
    w = w / w.sum()
    theta_split = torch.cat([theta[:1], theta], 0)
    w_split = torch.cat([w[:1] / 2, w[:1] / 2, w[1:]])
    a = dyn.run(dyn.init(theta, seed=0, weights=w), 40)
    b = dyn.run(dyn.init(theta_split, seed=0, weights=w_split), 40)
    torch.testing.assert_close(b.theta[1:], a.theta, rtol=0, atol=1e-12)
    torch.testing.assert_close(b.theta[0], a.theta[0], rtol=0, atol=1e-12)
    ra = evaluate(task, a.theta, a.weights, backend=BACKEND).risk
    rb = evaluate(task, b.theta, b.weights, backend=BACKEND).risk
    torch.testing.assert_close(rb, ra, rtol=0, atol=1e-12)


# ----------------------------------------- per-replica and invalid weights (regressions)
def test_per_replica_weights_are_used_by_each_replica():
    """Weights [B, N] give each replica its own measure (once silently truncated to row 0)."""
    task = teacher_student(3, "relu", m0=2, seed=0)
    dyn = gradient_flow(task, dt=0.05, backend=BACKEND)
    g = gen(1)
    theta = init_theta(5, 3, g, replicas=2)
    w = torch.rand(2, 5, generator=g, dtype=F64) + 0.1
    w = w / w.sum(-1, keepdim=True)
    state = dyn.init(theta, seed=0, weights=w)
    assert state.weights.shape == (2, 5)
    batched = dyn.run(state, 5)
    for r in range(2):
        single = dyn.run(dyn.init(theta[r], seed=0, weights=w[r]), 5)
        torch.testing.assert_close(batched.theta[r], single.theta, rtol=0, atol=1e-12)
    # shared weights [N] still broadcast to every replica
    shared = dyn.run(dyn.init(theta, seed=0, weights=w[0]), 5)
    torch.testing.assert_close(shared.theta[0], batched.theta[0], rtol=0, atol=1e-12)
    assert (shared.theta[1] - batched.theta[1]).abs().max() > 1e-6
    with pytest.raises(ConfigError, match="per-replica"):
        batched.measure()


@pytest.mark.parametrize("weights", [[0.3] * 5, [-0.2, 0.3, 0.3, 0.3, 0.3],
                                     [float("nan"), 0.25, 0.25, 0.25, 0.25]],
                         ids=["sum-1.5", "negative", "nan"])
def test_init_rejects_weights_that_are_not_a_probability(weights):
    task = teacher_student(3, "relu", m0=2, seed=0)
    dyn = gradient_flow(task, dt=0.05, backend=BACKEND)
    theta = init_theta(5, 3, gen(1))[0]
    w = torch.tensor(weights, dtype=F64)
    with pytest.raises(ConfigError):
        ParticleMeasure(theta, weights=w)         # the measure refuses them, and so does init
    with pytest.raises(ConfigError, match="weights"):
        dyn.init(theta, seed=0, weights=w)
