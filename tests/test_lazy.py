"""Lazy against mean-field: the output scale α (models.scaled), the tangent kernel
(models.ntk), the linearised flow (models.linearized, dynamics.linearized) and the kernel
diagnostics, each checked against an independent computation: torch autograd Jacobians,
torch SGD on the scaled module, a torch.func.jvp linearisation, Monte Carlo."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import linregress

import meanfield as mf
from meanfield import diagnostics
from meanfield.models import FiniteDataset, TeacherStudent, Unit
from meanfield.models.scaled import ScaledTask

DT = torch.float64


def _data(n=12, d=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=g, dtype=DT)
    y = torch.sin(X @ torch.arange(1.0, d + 1, dtype=DT))
    return X, y


def _theta(N, unit, seed=1, B=None):
    g = torch.Generator().manual_seed(seed)
    shape = (N, unit.D) if B is None else (B, N, unit.D)
    return torch.randn(*shape, generator=g, dtype=DT)


# ---- the tangent kernel -----------------------------------------------------------------
def _autograd_kernel(unit, theta, X):
    """N · J Jᵀ with J the Jacobian of the torch module's output in its parameters (a, W, b):
    the mean-field tangent kernel, computed by autograd (independent of models.ntk)."""
    mod = mf.to_module(unit, theta)
    params = {k: v.detach() for k, v in mod.named_parameters()}

    def f(p):
        return torch.func.functional_call(mod, p, (X,))[:, 0]

    jac = torch.func.jacrev(f)(params)
    J = torch.cat([jac[k].reshape(X.shape[0], -1) for k in sorted(jac)], -1)
    return theta.shape[0] * J @ J.T


@pytest.mark.parametrize("activation,output_weight,bias", [("relu", True, True), ("erf", True, False),
                                                           ("tanh", False, True)])
def test_the_tangent_kernel_is_the_gram_of_autograd_jacobians(activation, output_weight, bias):
    unit = Unit(3, activation, output_weight=output_weight, bias=bias)
    X, _ = _data()
    theta = _theta(9, unit)
    K = mf.tangent_kernel(unit, theta, X, chunk=4)                  # chunks across the units
    torch.testing.assert_close(K, _autograd_kernel(unit, theta, X), rtol=0, atol=1e-10)
    # replicas: one kernel each; another second argument; weights
    th = _theta(9, unit, B=2)
    Kb = mf.tangent_kernel(unit, th, X)
    assert Kb.shape == (2, 12, 12)
    torch.testing.assert_close(Kb[1], _autograd_kernel(unit, th[1], X), rtol=0, atol=1e-10)
    X2 = X[:5] * 0.5
    torch.testing.assert_close(mf.tangent_kernel(unit, theta, X, X2),
                               mf.tangent_kernel(unit, theta, torch.cat([X, X2]))[:12, 12:], rtol=0, atol=1e-12)
    w = torch.rand(9, dtype=DT)
    w = w / w.sum()
    Kw = mf.tangent_kernel(unit, theta, X, weights=w)
    per_unit = torch.stack([mf.tangent_kernel(unit, theta[j:j + 1], X) for j in range(9)])
    torch.testing.assert_close(Kw, (w[:, None, None] * per_unit).sum(0), rtol=0, atol=1e-12)


@pytest.mark.parametrize("activation,bias", [("relu", False), ("relu", True), ("erf", False)])
def test_the_empirical_kernel_approaches_the_infinite_width_kernel_at_rate_n_to_minus_half(activation, bias):
    """Monte Carlo over i.i.d. units: the relative Frobenius error, RMS over 6 seeds, falls as
    N^{-1/2}; against a wrong closed form (w_std off by 20 %) it stops falling — the check can
    fail."""
    unit = Unit(3, activation, output_weight=True, bias=bias)
    X, _ = _data(n=10)
    stds = dict(w_std=0.8, a_mean=0.3, a_std=1.2, b_std=0.5 if bias else None)
    Kinf = mf.infinite_width_tangent_kernel(activation, X, **stds)
    wrong = mf.infinite_width_tangent_kernel(activation, X, **{**stds, "w_std": 0.96})
    Ns = [64, 256, 1024, 4096]
    errs, errs_wrong = [], []
    for N in Ns:
        e, ew = [], []
        for s in range(6):
            g = torch.Generator().manual_seed(1000 * N + s)
            cols = [0.3 + 1.2 * torch.randn(N, 1, generator=g, dtype=DT),
                    0.8 * torch.randn(N, 3, generator=g, dtype=DT)]
            if bias:
                cols.append(0.5 * torch.randn(N, 1, generator=g, dtype=DT))
            K = mf.tangent_kernel(unit, torch.cat(cols, -1), X)
            e.append(float(torch.linalg.norm(K - Kinf) / torch.linalg.norm(Kinf)))
            ew.append(float(torch.linalg.norm(K - wrong) / torch.linalg.norm(wrong)))
        errs.append(math.sqrt(np.mean(np.square(e))))
        errs_wrong.append(math.sqrt(np.mean(np.square(ew))))
    slope = linregress(np.log(Ns), np.log(errs)).slope
    assert -0.65 < slope < -0.35, (slope, errs)
    assert errs[-1] < 0.05
    assert linregress(np.log(Ns), np.log(errs_wrong)).slope > -0.25, errs_wrong


# ---- the scale α ----------------------------------------------------------------------------
def test_alpha_one_without_centring_is_the_unscaled_flow_bit_for_bit():
    unit = Unit(3, "relu")
    X, y = _data()
    cases = [(FiniteDataset(unit, X, y), "population"),
             (TeacherStudent.random(unit, 3, generator=torch.Generator().manual_seed(2)), "population"),
             (TeacherStudent.random(unit, 3, generator=torch.Generator().manual_seed(2)), "sgd")]
    for task, drift in cases:
        assert mf.scaled(task, 1.0) is task
        runs = []
        for t in (task, ScaledTask(task, 1.0)):
            dyn = mf.ParticleDynamics(t, dt=0.1, drift=drift, batch_size=4, backend="torch")
            st = dyn.init(_theta(8, unit, B=2).float(), seed=3)
            for _ in range(15):
                st, info = dyn.step(st)
            runs.append((st.theta, info.potential.risk))
        assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1]), (task.name, drift)


@pytest.mark.parametrize("loss", ["squared", "logistic"])
def test_the_scaled_flow_is_torch_sgd_on_the_scaled_centred_module(loss):
    """f_α = α (f − f_0) trained on R(f_α)/α²: one flow step with dt is one SGD step with
    lr = N·dt on the module's parameters (float64, 10 steps)."""
    unit = Unit(3, "relu", bias=True)
    X, y = _data()
    if loss == "logistic":
        y = torch.sign(y)
    N, alpha, dt = 10, 7.0, 0.05
    theta0 = _theta(N, unit)
    task = FiniteDataset(unit, X, y, loss=loss)
    dyn = mf.gradient_flow(mf.scaled(task, alpha, reference=theta0), dt=dt)
    st = dyn.init(theta0)
    mod, ref = mf.to_module(unit, theta0, loss=loss), mf.to_module(unit, theta0)
    opt = torch.optim.SGD(mod.parameters(), lr=N * dt)
    for _ in range(10):
        st, info = dyn.step(st)
        opt.zero_grad()
        with torch.no_grad():
            f0 = ref(X)[:, 0]
        f_alpha = alpha * (mod(X)[:, 0] - f0)
        from meanfield.models.task_base import loss_terms
        ell = loss_terms(loss, f_alpha, y)[1].mean()
        (ell / alpha ** 2).backward()
        opt.step()
    _, back = mf.from_module(mod)
    torch.testing.assert_close(st.theta, back.positions, rtol=0, atol=1e-12)
    # the reported risk is the scaled network's own, R(f_α)
    with torch.no_grad():
        f_alpha = alpha * (mod(X)[:, 0] - ref(X)[:, 0])
    R = float(loss_terms(loss, f_alpha, y)[1].mean())
    assert abs(float(dyn.potential(st).risk) - R) < 1e-12


def test_the_scaled_closed_form_teacher_student_agrees_with_monte_carlo():
    """Centred, α = 3, two replicas with their own references: the exact Ψ_α gradient and
    R(f_α) (a shifted teacher) against the same task by sampling 400 000 inputs."""
    unit = Unit(4, "relu")
    ts = TeacherStudent.random(unit, 3, generator=torch.Generator().manual_seed(5), offset=0.2)
    ref = _theta(6, unit, seed=7, B=2)
    theta = ref + 0.3 * _theta(6, unit, seed=8, B=2)
    task = mf.scaled(ts, 3.0, reference=ref)
    exact = mf.evaluate(task, theta, backend="numpy")
    x, y = ts.sample(400_000, generator=torch.Generator().manual_seed(9), batch=2, dtype=DT)
    mc = task.sample_potential(theta, None, x, y)
    assert (torch.abs(exact.risk - mc.risk) < 5 * mc.risk_se).all(), (exact.risk, mc.risk, mc.risk_se)
    torch.testing.assert_close(exact.grad, mc.grad, rtol=0, atol=0.02 * float(exact.grad.abs().max()))
    # not centred: the same check, and α enters the gradient as 1/α against the plain task
    plain = mf.evaluate(ts, theta, backend="numpy")
    nc = mf.evaluate(mf.scaled(ts, 4.0), theta, backend="numpy")
    mc4 = mf.scaled(ts, 4.0).sample_potential(theta, None, x, y)
    assert (torch.abs(nc.risk - mc4.risk) < 5 * mc4.risk_se).all()
    assert not torch.allclose(nc.grad, plain.grad / 4.0)      # the residual changes too


def test_a_symmetric_initialisation_has_zero_output_and_needs_no_centring():
    unit = Unit(3, "relu", bias=True)
    X, y = _data()
    th = mf.symmetric(_theta(5, unit), unit)
    assert th.shape == (10, unit.D)
    task = FiniteDataset(unit, X, y)
    assert float(task.outputs(th).abs().max()) == 0.0
    centred = mf.evaluate(mf.scaled(task, 20.0, reference=th), th + 0.01)
    plain = mf.evaluate(mf.scaled(task, 20.0), th + 0.01)
    torch.testing.assert_close(centred.grad, plain.grad, rtol=0, atol=1e-12)
    with pytest.raises(mf.ConfigError, match="output weight"):
        mf.symmetric(_theta(5, Unit(3, "relu", output_weight=False)), Unit(3, "relu", output_weight=False))


# ---- the linearised flow ----------------------------------------------------------------
def test_the_linearised_flow_is_a_torch_jvp_linearisation_trained_by_the_same_steps():
    unit = Unit(3, "tanh", bias=True)
    X, y = _data()
    N, alpha, dt = 8, 5.0, 0.05
    theta0 = _theta(N, unit)
    task = FiniteDataset(unit, X, y)
    lin = mf.linearized(mf.gradient_flow(mf.scaled(task, alpha, reference=theta0), dt=dt), theta0)
    st = lin.init(theta0)
    mod = mf.to_module(unit, theta0)
    p0 = {k: v.detach().clone() for k, v in mod.named_parameters()}
    p = {k: v.clone().requires_grad_(True) for k, v in p0.items()}

    def f(params):
        return torch.func.functional_call(mod, params, (X,))[:, 0]

    opt = torch.optim.SGD(list(p.values()), lr=N * dt)
    for _ in range(12):
        st, _ = lin.step(st)
        opt.zero_grad()
        delta = {k: p[k] - p0[k] for k in p}
        _, jvp = torch.func.jvp(f, (p0,), (delta,))             # f(p0 + δ) to first order, minus f(p0)
        ((y - alpha * jvp) ** 2).mean().div(alpha ** 2).backward()
        opt.step()
    mod.load_state_dict({k: v.detach() for k, v in p.items()}, strict=False)
    _, back = mf.from_module(mod)
    torch.testing.assert_close(st.theta, back.positions, rtol=0, atol=1e-12)


def _linearisation_gaps(task, theta0, alphas, centred):
    """sup over 100 steps of the RMS over the data of f_α − f_lin,α, for each α."""
    X = task.X
    gaps = []
    for alpha in alphas:
        dyn = mf.gradient_flow(mf.scaled(task, alpha, reference=theta0 if centred else None), dt=0.02)
        lin = mf.linearized(dyn, theta0)
        a, b = dyn.init(theta0), lin.init(theta0)
        sup = 0.0
        for _ in range(100):
            a, _ = dyn.step(a)
            b, _ = lin.step(b)
            fa = dyn.task.scaled_outputs(X[None], a.theta)
            fb = lin.task.scaled_outputs(X[None], b.theta)
            sup = max(sup, float((fa - fb).pow(2).mean().sqrt()))
        gaps.append(sup)
    return linregress(np.log(alphas), np.log(gaps)).slope, gaps


def test_the_linearised_flow_tracks_the_flow_within_one_over_alpha():
    """sup_t ‖f_α − f_lin,α‖ shrinks like 1/α for a smooth unit from a generic centred start
    (Chizat–Oyallon–Bach Thm 2.3: the remainder α·O(|δθ|²) with δθ = O(1/α)); from a
    symmetric start it shrinks like 1/α²: the second-order terms of the two units of a pair
    (a → −a, so δw → −δw) cancel, leaving α·O(|δθ|³)."""
    unit = Unit(2, "tanh", bias=True)
    X, y = _data(n=20, d=2)
    task = FiniteDataset(unit, X, y)
    alphas = [2.0, 8.0, 32.0]
    slope, gaps = _linearisation_gaps(task, _theta(40, unit), alphas, centred=True)
    assert -1.2 < slope < -0.8, (slope, gaps)
    slope_sym, gaps_sym = _linearisation_gaps(task, mf.symmetric(_theta(20, unit), unit), alphas,
                                              centred=False)
    assert -2.3 < slope_sym < -1.7, (slope_sym, gaps_sym)


# ---- kernel diagnostics -----------------------------------------------------------------------
def test_the_pl_ratio_is_four_times_the_kernel_rayleigh_quotient_along_the_residual():
    unit = Unit(3, "relu", bias=True)
    X, y = _data()
    task = FiniteDataset(unit, X, y)
    for alpha in (1.0, 10.0):
        theta = mf.symmetric(_theta(6, unit), unit) + 0.1 * _theta(12, unit, seed=4)
        dyn = mf.gradient_flow(mf.scaled(task, alpha), dt=0.1)
        st = dyn.init(theta)
        pot = dyn.potential(st)
        v2 = diagnostics.velocity_sq_norm(dyn.velocity(st, pot).unsqueeze(0))
        K = mf.tangent_kernel(unit, theta, X)
        r = alpha * task.outputs(theta)[0] - y
        q = diagnostics.kernel_rayleigh(K, r)
        torch.testing.assert_close(v2 * alpha ** 2, 4 * q * pot.risk, rtol=1e-10, atol=0)
    spec = diagnostics.kernel_spectrum(K, k=2)
    ev = torch.linalg.eigvalsh(K / 12)
    assert abs(float(spec.lam_min[0] - ev[0])) < 1e-12 and abs(float(spec.top[0, 0] - ev[-1])) < 1e-12
    assert float(diagnostics.kernel_change(K, K)[0]) == 0.0
    assert abs(float(diagnostics.kernel_change(2 * K, K)[0]) - 1.0) < 1e-12
    # fewer units than points: λ_min = 0 while the quotient along a residual stays positive
    small = _theta(2, unit)
    Ks = mf.tangent_kernel(unit, small, X)
    assert float(diagnostics.kernel_spectrum(Ks).lam_min[0]) < 1e-12
    assert float(diagnostics.kernel_rayleigh(Ks, task.outputs(small)[0] - y)[0]) > 1e-3


# ---- the experiment ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def lazy_run(tmp_path_factory):
    from meanfield import runner
    from meanfield.experiments import get_experiment

    exp = get_experiment("lazy-vs-meanfield")
    cfg = exp.Config.build(None, ["scale=small"])
    out = tmp_path_factory.mktemp("lazy") / "run"
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        runner.run(exp, cfg, out, progress=False)
    finally:
        torch.set_num_threads(n)
    return cfg, out


def test_the_small_lazy_run_writes_its_figures_and_fits(lazy_run):
    import json

    from meanfield import io

    cfg, out = lazy_run
    assert {p.name for p in (out / "figures").iterdir()} == {"paths.png", "alpha.png", "crossover.png",
                                                           "linearization.png"}
    fit = json.loads((out / "fit.json").read_text())
    widths = [8, 16, 32]
    for key in ("displacement_slope", "linearization_slope"):
        for N in widths:
            f = fit[key][str(N)]
            assert f["ci95"][0] <= f["slope"] <= f["ci95"][1] and f["alphas"] == [10.0, 100.0, 1000.0]
    assert set(fit["crossover"]["rate"]) >= {"slope", "ci95", "geiger_slope"}
    # lazy side: the displacement falls as 1/α (measured: −1.00 [−1.05, −0.96] … in small mode)
    for N in widths:
        f = fit["displacement_slope"][str(N)]
        assert -1.1 < f["slope"] < -0.9 and f["ci95"][0] < -1.0 < f["ci95"][1] + 0.02, (N, f)
    t = io.read_metrics(out / "summary.csv")
    for N in widths:
        row = {a: i for i, (n, a) in enumerate(zip(t["N"], t["alpha"])) if n == N}
        big, one, small = row[1000.0], row[1.0], row[0.01]
        # at α = 1000 the flow is close to its linearisation (a ReLU unit whose preactivation
        # crosses 0 on a data point flips its kernel term: 2 % of the test risk at N = 16) …
        assert abs(t["test_risk"][big] / t["lin_test_risk"][big] - 1) < 0.05
        assert t["lin_gap_sup"][big] < t["lin_gap_sup"][small] / 50
        # … at α = 0.01 it is not (the linearised flow's test risk is several times larger)
        assert t["lin_test_risk"][small] > 3 * t["test_risk"][small]
        # the kernel moves by more than its size at small α, by ≤ 5 % at α = 1000
        assert t["ntk_change"][small] > 10 and t["ntk_change"][big] < 0.05
        # feature learning generalises better than lazy training (α = 1 against α = 1000)
        assert t["test_risk"][one] < t["test_risk"][big]


def test_alpha_is_a_key_of_the_two_layer_experiments_and_a_sweep_axis(tmp_path):
    """``--set alpha=1`` is today's run to the byte (metrics and particles), another α is
    another run whose risk is the scaled network's; a sweep over α is a sweep like one over N."""
    from meanfield import io, runner, sweep
    from meanfield.experiments import get_experiment

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for name in ("teacher-student", "dataset", "cb-relu2d"):
            exp = get_experiment(name)
            outs = {}
            for tag, extra in (("default", []), ("one", ["alpha=1"]), ("ten", ["alpha=10", "centred=true"])):
                outs[tag] = tmp_path / f"{name}-{tag}"
                runner.run(exp, exp.Config.build(None, [*exp.TINY, *extra]), outs[tag], progress=False)
            same = [(outs["default"] / f).read_bytes() == (outs["one"] / f).read_bytes()
                    for f in (io.METRICS, io.PARTICLES)]
            assert all(same), name
            a, b = io.read_metrics(outs["default"] / io.METRICS), io.read_metrics(outs["ten"] / io.METRICS)
            assert not np.array_equal(a["risk"], b["risk"]), name
        rows = sweep.run_sweep("teacher-student", {"alpha": ["1", "10", "100"]}, tmp_path / "sw",
                               sets=list(get_experiment("teacher-student").TINY), progress=False)
    finally:
        torch.set_num_threads(n)
    assert sorted(float(r["alpha"]) for r in rows) == [1.0, 10.0, 100.0]
    assert all(r["status"] == "ok" for r in rows)


def test_the_rayleigh_certificate_holds_where_the_kernel_is_singular():
    """Fewer parameters than data points (6 units × 3 < 40 points), a teacher they can
    represent: λ_min(K_t) = 0 at every step, yet the Rayleigh quotient along the residual
    stays above 2·10⁻³ and the risk falls 800× exactly as R(0) exp(−4∫q) says (to the
    Euler step's 3 %); a quotient overstated by 1.5× gives a bound the run violates."""
    from meanfield.analysis.lazy import rayleigh_certificate

    g = torch.Generator().manual_seed(0)
    ang = 2 * math.pi * torch.rand(40, generator=g, dtype=DT)
    X = torch.stack([ang.cos(), ang.sin()], -1)
    w = torch.tensor([[1.0, 0.3], [-0.4, 1.0]], dtype=DT)
    y = torch.relu(X @ (w / w.norm(dim=-1, keepdim=True)).T).mean(-1)
    unit = Unit(2, "relu")
    task = FiniteDataset(unit, X, y)
    dyn = mf.gradient_flow(task, dt=0.05)
    st = dyn.init(torch.randn(6, 3, generator=g, dtype=DT))
    t, q, R, lam = [], [], [], []
    for _ in range(2001):
        K = mf.tangent_kernel(unit, st.theta, X)
        t.append(st.t)
        q.append(float(diagnostics.kernel_rayleigh(K, task.outputs(st.theta)[0] - y)[0]))
        R.append(float(task.risk(st.theta)[0]))
        lam.append(float(diagnostics.kernel_spectrum(K).lam_min[0]))
        st, _ = dyn.step(st)
    assert max(abs(v) for v in lam) < 1e-12 and min(q) > 2e-3 and R[-1] < R[0] / 800
    cert = rayleigh_certificate(t, q, R)
    ratio = np.array(R) / cert["bound"]
    assert ratio.max() <= 1 + 1e-9 and ratio.min() > 0.97, (ratio.min(), ratio.max())
    assert np.all(np.array(R) <= cert["bound_inf"] * (1 + 1e-9)) and cert["rate"] > 8e-3
    assert rayleigh_certificate(t, 1.5 * np.array(q), R)["ratio"] > 1.05
