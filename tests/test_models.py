"""models: units and their layouts, activations, closed-form Gaussian kernels vs Monte Carlo,
∇Ψ vs finite differences of R, and ConfigErrors on bad input."""
import math

import numpy as np
import pytest
import scipy.special as sps
import torch

from meanfield.errors import ConfigError
from meanfield.interact import evaluate, get_backend
from meanfield.measure import ParticleMeasure
from meanfield.models import (ACTIVATIONS, ConfiningPotential, FiniteDataset, IsotropicGaussians,
                              TeacherStudent, Unit, gaussian_kernel, get_activation)

PW = dict(t1=0.5, t2=1.5, s1=-2.5, s2=7.5)
PWL = {"z0": -1.0, "v0": 3.0, "z1": 0.0, "v1": -1.0, "z2": 2.0, "v2": 1.0}   # non-monotone
KINKS = {"relu": [0.0], "piecewise": [PW["t1"], PW["t2"]], "pwl": [PWL["z0"], PWL["z1"], PWL["z2"]]}




def _act(name):
    params = {"piecewise": PW, "pwl": PWL}.get(name, {})
    return get_activation(name, **params)


def _np_sigma(name, z):
    """Independent numpy implementations of every activation (the documented conventions)."""
    if name == "relu":
        return np.maximum(z, 0.0)
    if name == "erf":
        return sps.erf(z / np.sqrt(2.0))
    if name == "tanh":
        return np.tanh(z)
    if name == "sigmoid":
        return 1.0 / (1.0 + np.exp(-z))
    if name == "linear":
        return z
    if name == "pwl":
        return np.interp(z, [PWL["z0"], PWL["z1"], PWL["z2"]], [PWL["v0"], PWL["v1"], PWL["v2"]])
    if name == "piecewise":
        t1, t2, s1, s2 = PW["t1"], PW["t2"], PW["s1"], PW["s2"]
        return np.where(z <= t1, s1, np.where(z >= t2, s2, s1 + (s2 - s1) * (z - t1) / (t2 - t1)))
    raise AssertionError(f"no reference for activation {name!r}")


def _grid_away_from_kinks(name, dtype=torch.float64):
    z = torch.linspace(-3.0, 3.0, 1201, dtype=dtype)
    for k in KINKS.get(name, []):
        z = z[(z - k).abs() > 1e-3]
    return z


def _mc(samples):
    """(mean, standard error) along dim 0 of a [n, ...] tensor of i.i.d. samples."""
    n = samples.shape[0]
    return samples.mean(0), samples.std(0) / math.sqrt(n)


# ---------------------------------------------------------------------------------------
# Units: layouts, values, gradients
# ---------------------------------------------------------------------------------------

def test_activation_list_is_covered_by_the_reference():
    assert set(ACTIVATIONS) == {"relu", "erf", "tanh", "sigmoid", "linear", "piecewise", "pwl"}


@pytest.mark.parametrize("output_weight", [True, False])
@pytest.mark.parametrize("bias", [True, False])
def test_layout_param_names_and_split(output_weight, bias):
    d = 3
    unit = Unit(d, "relu", output_weight=output_weight, bias=bias)
    expected = (["a"] if output_weight else []) + ["w0", "w1", "w2"] + (["b"] if bias else [])
    assert unit.param_names == expected
    assert unit.D == len(expected) == d + int(output_weight) + int(bias)
    theta = torch.arange(float(unit.D)).reshape(1, 1, unit.D) + 10.0
    a, w, b = unit.split(theta)
    vals = dict(zip(expected, theta[0, 0].tolist()))
    assert (a is None) == (not output_weight)
    assert (b is None) == (not bias)
    if output_weight:
        assert a.item() == vals["a"]
    if bias:
        assert b.item() == vals["b"]
    assert w[0, 0].tolist() == [vals[f"w{k}"] for k in range(d)]


@pytest.mark.parametrize("name", ACTIVATIONS)
@pytest.mark.parametrize("output_weight,bias", [(True, True), (True, False), (False, True), (False, False)])
def test_unit_value_matches_hand_computation(name, output_weight, bias, gen):
    g = gen(11)
    d, B, n, N = 3, 2, 7, 5
    unit = Unit(d, _act(name), output_weight=output_weight, bias=bias)
    x = torch.randn(B, n, d, generator=g, dtype=torch.float64)
    theta = torch.randn(B, N, unit.D, generator=g, dtype=torch.float64)
    th = theta.numpy()
    a = th[..., 0] if output_weight else np.ones((B, N))
    w = th[..., 1:1 + d] if output_weight else th[..., :d]
    b = th[..., -1] if bias else np.zeros((B, N))
    expected = np.zeros((B, n, N))
    for r in range(B):
        for k in range(n):
            for i in range(N):
                z = float(np.dot(w[r, i], x[r, k].numpy()) + b[r, i])
                expected[r, k, i] = a[r, i] * _np_sigma(name, np.array(z))
    got = unit(x, theta)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12, atol=1e-12)
    # the network is the m-weighted average of the units
    m = torch.rand(B, N, generator=g, dtype=torch.float64)
    m = m / m.sum(-1, keepdim=True)
    np.testing.assert_allclose(unit.network(x, theta, m).numpy(),
                               (expected * m.numpy()[:, None, :]).sum(-1), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", ACTIVATIONS)
@pytest.mark.parametrize("output_weight,bias", [(True, True), (True, False), (False, True), (False, False)])
def test_weighted_grad_matches_autograd(name, output_weight, bias, gen):
    g = gen(12)
    d, B, n, N = 4, 2, 9, 6
    unit = Unit(d, _act(name), output_weight=output_weight, bias=bias)
    x = torch.randn(B, n, d, generator=g, dtype=torch.float64)
    theta = torch.randn(B, N, unit.D, generator=g, dtype=torch.float64)
    coef = torch.randn(B, n, generator=g, dtype=torch.float64)
    # keep every preactivation away from the kinks (autograd and σ' differ only there)
    z = unit.preactivation(x, theta)
    for k in KINKS.get(name, []):
        assert (z - k).abs().min() > 1e-6
    th = theta.clone().requires_grad_(True)
    total = (unit(x, th) * coef.unsqueeze(-1)).sum()
    (ref,) = torch.autograd.grad(total, th)
    got = unit.weighted_grad(x, theta, coef)
    assert got.shape == ref.shape
    np.testing.assert_allclose(got.numpy(), ref.numpy(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_activation_values_and_derivatives(name):
    act = _act(name)
    z = _grid_away_from_kinks(name)
    np.testing.assert_allclose(act(z).numpy(), _np_sigma(name, z.numpy()), rtol=1e-13, atol=1e-14)
    zz = z.clone().requires_grad_(True)
    (auto,) = torch.autograd.grad(act(zz).sum(), zz)
    np.testing.assert_allclose(act.derivative(z).numpy(), auto.numpy(), rtol=1e-12, atol=1e-12)
    h = 1e-6
    fd = (act(z + h) - act(z - h)) / (2 * h)
    np.testing.assert_allclose(act.derivative(z).numpy(), fd.numpy(), rtol=1e-6, atol=1e-7)


def test_erf_convention_is_two_phi_minus_one():
    z = torch.linspace(-4, 4, 81, dtype=torch.float64)
    act = get_activation("erf")
    np.testing.assert_allclose(act(z).numpy(), 2 * sps.ndtr(z.numpy()) - 1, rtol=1e-13, atol=1e-14)
    # σ'(z) = 2 × standard normal density
    np.testing.assert_allclose(act.derivative(z).numpy(),
                               2 * np.exp(-z.numpy() ** 2 / 2) / np.sqrt(2 * np.pi), rtol=1e-13)


def test_piecewise_values_at_named_points():
    act = get_activation("piecewise", **PW)
    z = torch.tensor([-10.0, 0.5, 1.0, 1.5, 10.0], dtype=torch.float64)
    assert act(z).tolist() == pytest.approx([-2.5, -2.5, 2.5, 7.5, 7.5])
    assert act.derivative(torch.tensor([0.0, 1.0, 2.0], dtype=torch.float64)).tolist() == \
        pytest.approx([0.0, 10.0, 0.0])


# ---------------------------------------------------------------------------------------
# Closed forms vs Monte Carlo (x ~ N(0, I_d))
# ---------------------------------------------------------------------------------------

# (activation, output_weight, offset, noise_std)
CLOSED_CASES = [
    ("relu", True, 0.0, 0.0),
    ("relu", False, 0.0, 0.0),
    ("relu", True, 0.7, 0.3),
    ("relu", False, -0.5, 0.0),
    ("erf", True, 0.0, 0.0),
    ("erf", False, 0.4, 0.2),
]
N_MC = 100_000


def _teacher_student(act, output_weight, offset, noise, g, d=4, m0=3):
    unit = Unit(d, act, output_weight=output_weight)
    tt = torch.randn(m0, unit.D, generator=g, dtype=torch.float64)
    tw = torch.tensor([0.5, -0.3, 0.8], dtype=torch.float64)[:m0]
    return TeacherStudent(unit, tt, tw, offset=offset, noise_std=noise)


def _student(unit, N, g, replicas=None):
    shape = (N, unit.D) if replicas is None else (replicas, N, unit.D)
    theta = torch.randn(*shape, generator=g, dtype=torch.float64)
    m = torch.rand(N, generator=g, dtype=torch.float64) + 0.2
    return theta, m / m.sum()


def _within(est, se, exact, k=4.0):
    est, se, exact = (torch.as_tensor(t, dtype=torch.float64) for t in (est, se, exact))
    assert (se > 0).all()
    z = ((est - exact).abs() / se)
    assert (z < k).all(), f"|MC − closed form| / se = {z.tolist()} (MC {est.tolist()}, exact {exact.tolist()})"


@pytest.mark.parametrize("act,output_weight,offset,noise", CLOSED_CASES)
def test_closed_forms_match_monte_carlo(act, output_weight, offset, noise, gen):
    task = _teacher_student(act, output_weight, offset, noise, gen(1))
    assert task.closed_form
    unit = task.unit
    theta, m = _student(unit, 4, gen(2))
    rs = task.risk_sharp                     # available before any evaluation, then cached
    assert rs is not None and task.risk_sharp is rs
    pot = evaluate(task, theta, m, backend="numpy")
    x, y = task.sample(N_MC, generator=gen(3), dtype=torch.float64)
    x, y = x[0], y[0]                        # [n, d], [n]

    # (a) R_# = E[y²]
    _within(*_mc(y * y), task.risk_sharp)

    # (b) V(θ_i) = −E[y φ(x; θ_i)]
    phi = unit(x[None], theta[None])[0]     # [n, N]
    _within(*_mc(-y[:, None] * phi), pot.V[0])

    # (c) U(θ_i, θ_j) = E[φ(x; θ_i) φ(x; θ_j)], also against teacher units
    kern = gaussian_kernel(unit)
    tt, _ = task.teacher()
    pts = torch.cat([theta, tt], 0)
    phi_all = unit(x[None], pts[None])[0]    # [n, N + m0]
    be = get_backend("numpy")
    for j in range(pts.shape[0]):
        S, _ = be.kernel_sum(kern, unit, pts[None], pts[j][None, None], torch.ones(1, 1, dtype=torch.float64),
                             grad=False)
        _within(*_mc(phi_all * phi_all[:, j:j + 1]), S[0])

    # (d) R(ρ_N) (and Ψ) vs the sample estimate on a fresh batch
    x2, y2 = task.sample(N_MC, generator=gen(4), dtype=torch.float64)
    est = task.sample_potential(theta, m, x2, y2)
    _within(est.risk, est.risk_se, pot.risk)
    r = unit.network(x2, theta[None], m[None])[0] - y2[0]
    phi2 = unit(x2, theta[None])[0]
    mean, se = _mc(r[:, None] * phi2)
    torch.testing.assert_close(mean, est.psi[0], rtol=1e-12, atol=1e-12)
    _within(mean, se, pot.psi[0])


def test_risk_sharp_of_a_known_teacher():
    """One ReLU teacher unit a=2, |w|=1, offset c: E[y²] = c² + 2c·2/√(2π) + 4·½ + σ²."""
    unit = Unit(3, "relu")
    c, s = 0.3, 0.5
    task = TeacherStudent(unit, [[2.0, 0.0, 1.0, 0.0]], [1.0], offset=c, noise_std=s)
    evaluate(task, torch.zeros(1, 4, dtype=torch.float64) + 0.1, backend="numpy")
    expected = c * c + 2 * c * 2 / math.sqrt(2 * math.pi) + 4 * 0.5 + s * s
    assert task.risk_sharp == pytest.approx(expected, rel=1e-12)


# ---------------------------------------------------------------------------------------
# ∇Ψ vs finite differences of R: dR/dε [θ + εh] = Σ_i 2 m_i ⟨∇Ψ(θ_i), h_i⟩
# ---------------------------------------------------------------------------------------

def _fd_check(task, theta, m, h, eps, rtol, backend="torch"):
    pot = evaluate(task, theta, m, backend=backend)
    mm = torch.full((theta.shape[-2],), 1.0 / theta.shape[-2], dtype=theta.dtype) if m is None else m
    analytic = 2 * ((pot.grad * h).sum(-1) * mm).sum(-1)                    # [B]
    fd = (evaluate(task, theta + eps * h, m, backend=backend).risk
          - evaluate(task, theta - eps * h, m, backend=backend).risk) / (2 * eps)
    assert analytic.abs().min() > 1e-3, "degenerate direction"
    err = ((fd - analytic).abs() / analytic.abs()).max().item()
    assert err < rtol, f"relative FD error {err:.3g}: fd={fd.tolist()} analytic={analytic.tolist()}"


@pytest.mark.parametrize("act,output_weight,offset", [("relu", True, 0.0), ("relu", False, 0.6),
                                                      ("erf", True, 0.0), ("erf", False, 0.0)])
@pytest.mark.parametrize("weighted", [True, False])
def test_grad_psi_is_half_the_first_variation_closed_form(act, output_weight, offset, weighted, gen):
    task = _teacher_student(act, output_weight, offset, 0.0, gen(5))
    theta, m = _student(task.unit, 12, gen(6), replicas=2)
    h = torch.randn(theta.shape, generator=gen(7), dtype=torch.float64)
    _fd_check(task, theta, m if weighted else None, h, eps=1e-5, rtol=1e-7)


@pytest.mark.parametrize("act", ["tanh", "piecewise"])
@pytest.mark.parametrize("weighted", [True, False])
def test_grad_psi_is_half_the_first_variation_dataset(act, weighted, gen):
    g = gen(8)
    d, n = 3, 200
    X = torch.randn(n, d, generator=g, dtype=torch.float64)
    Y = torch.sin(X @ torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)) + 0.1 * torch.randn(
        n, generator=g, dtype=torch.float64)
    unit = Unit(d, _act(act), output_weight=True, bias=True)
    task = FiniteDataset(unit, X, Y)
    theta, m = _student(unit, 10, g)
    h = torch.randn(theta.shape, generator=g, dtype=torch.float64)
    # piecewise: R is piecewise quadratic in ε, so the central difference is exact unless a
    # preactivation crosses a kink within ±ε
    _fd_check(task, theta, m if weighted else None, h, eps=1e-6, rtol=1e-6)


@pytest.mark.parametrize("weighted", [True, False])
def test_grad_psi_is_half_the_first_variation_confining(weighted, gen):
    task = ConfiningPotential(3, stiffness=1.7, center=[0.5, -1.0, 2.0])
    theta = torch.randn(2, 8, 3, generator=gen(13), dtype=torch.float64)
    m = torch.rand(8, generator=gen(14), dtype=torch.float64)
    m = m / m.sum()
    h = torch.randn(theta.shape, generator=gen(15), dtype=torch.float64)
    _fd_check(task, theta, m if weighted else None, h, eps=1e-5, rtol=1e-8)
    pot = evaluate(task, theta, m)
    c = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64)
    torch.testing.assert_close(pot.risk, 1.7 * (((theta - c) ** 2).sum(-1) * m).sum(-1), rtol=1e-13, atol=0)


def test_dataset_population_potential_is_the_empirical_risk(gen):
    g = gen(9)
    d, n, N = 3, 50, 7
    X = torch.randn(n, d, generator=g, dtype=torch.float64)
    Y = torch.randn(n, generator=g, dtype=torch.float64)
    unit = Unit(d, "tanh", output_weight=True, bias=True)
    task = FiniteDataset(unit, X, Y)
    theta, m = _student(unit, N, g)
    th = theta.numpy()
    f = (th[:, 0][None, :] * np.tanh(X.numpy() @ th[:, 1:1 + d].T + th[:, -1][None, :])) @ m.numpy()
    pot = evaluate(task, theta, m)
    assert pot.risk.item() == pytest.approx(np.mean((Y.numpy() - f) ** 2), rel=1e-12)
    assert task.risk_sharp == pytest.approx(float(np.mean(Y.numpy() ** 2)), rel=1e-12)
    psi = ((f - Y.numpy())[:, None] * th[:, 0][None, :]
           * np.tanh(X.numpy() @ th[:, 1:1 + d].T + th[:, -1][None, :])).mean(0)
    np.testing.assert_allclose(pot.psi[0].numpy(), psi, rtol=1e-12)


# ---------------------------------------------------------------------------------------
# Data laws
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("delta", [0.0, 0.6])
def test_isotropic_gaussians_sample(delta, gen):
    d, n = 5, N_MC
    task = IsotropicGaussians(Unit(d, "relu", output_weight=False), delta)
    x, y = task.sample(n, generator=gen(10), dtype=torch.float64)
    x, y = x[0], y[0]
    assert set(y.unique().tolist()) == {-1.0, 1.0}
    # balanced: P(y = 1) = ½ within 4 standard errors of a fair coin
    assert abs(y.mean().item()) < 4 / math.sqrt(n)
    r2 = (x * x).sum(-1) / d
    for s in (-1.0, 1.0):
        _within(*_mc(r2[y == s]), (1 + s * delta) ** 2)
    assert task.risk_sharp == 1.0


def test_isotropic_sample_steps_equal_consecutive_samples_and_are_gaussian(gen):
    """One call for K steps draws exactly the numbers of K one-step calls (the fast SGD path
    relies on it), and each coordinate of x/(1 + Δy) is N(0, 1) (Kolmogorov–Smirnov)."""
    from scipy.stats import kstest

    task = IsotropicGaussians(Unit(7, "relu", output_weight=False), 0.3)
    xs, ys = task.sample_steps(6, 2, generator=gen(3), batch=3, dtype=torch.float64)
    g = gen(3)
    for k in range(6):
        x1, y1 = task.sample(2, generator=g, batch=3, dtype=torch.float64)
        assert torch.equal(x1, xs[k]) and torch.equal(y1, ys[k])
    x, y = task.sample(20_000, generator=gen(4), dtype=torch.float64)
    z = x[0] / (1 + 0.3 * y[0]).unsqueeze(-1)
    for j in (0, 3, 6):                       # a cosine, a sine and the last (odd d) coordinate
        assert kstest(z[:, j].numpy(), "norm").pvalue > 1e-3


def test_teacher_sample_is_the_teacher_network(gen):
    unit = Unit(3, "erf", output_weight=True)
    task = TeacherStudent(unit, [[1.5, 1.0, 0.0, 0.0], [-0.5, 0.0, 2.0, 0.0]], [0.25, 0.75], offset=0.1)
    x, y = task.sample(20, generator=gen(0), batch=2, dtype=torch.float64)
    z = x.numpy()
    expected = 0.1 + 0.25 * 1.5 * sps.erf(z[..., 0] / np.sqrt(2)) + 0.75 * -0.5 * sps.erf(2 * z[..., 1] / np.sqrt(2))
    np.testing.assert_allclose(y.numpy(), expected, rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------------------------
# ConfigError on bad input, naming the offending value
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("d", [-3, 0])
def test_bad_dimension(d):
    with pytest.raises(ConfigError, match=rf"\bd\b.*{d}"):
        Unit(d, "relu")


def test_unknown_activation():
    with pytest.raises(ConfigError, match="softplus"):
        Unit(3, "softplus")
    with pytest.raises(ConfigError, match="softplus"):
        get_activation("softplus")


@pytest.mark.parametrize("t1,t2", [(1.5, 0.5), (1.0, 1.0)])
def test_piecewise_needs_increasing_breakpoints(t1, t2):
    with pytest.raises(ConfigError, match=rf"t1={t1}.*t2={t2}"):
        get_activation("piecewise", t1=t1, t2=t2, s1=0.0, s2=1.0)


def test_teacher_theta_wrong_D():
    unit = Unit(3, "relu")                    # D = 4
    with pytest.raises(ConfigError, match=r"\[2, 5\]"):
        TeacherStudent(unit, torch.zeros(2, 5))
    with pytest.raises(ConfigError, match=r"\[3\]"):
        TeacherStudent(unit, torch.zeros(2, 4), teacher_weights=[1.0, 2.0, 3.0])


def test_dataset_shapes():
    unit = Unit(3, "tanh")
    with pytest.raises(ConfigError, match=r"\[9\]"):
        FiniteDataset(unit, np.zeros((10, 3)), np.zeros(9))
    with pytest.raises(ConfigError, match=r"\[10, 4\]"):
        FiniteDataset(unit, np.zeros((10, 4)), np.zeros(10))


@pytest.mark.parametrize("delta", [1.0, 1.5, -0.1])
def test_isotropic_gaussians_delta(delta):
    with pytest.raises(ConfigError, match=rf"delta.*{delta}"):
        IsotropicGaussians(Unit(3, "relu"), delta)


def test_no_closed_form_kernel_with_bias_or_other_activation():
    with pytest.raises(ConfigError, match="bias"):
        gaussian_kernel(Unit(3, "relu", bias=True))
    with pytest.raises(ConfigError, match="tanh"):
        gaussian_kernel(Unit(3, "tanh"))
    # such tasks are not closed form, and evaluate says so instead of computing garbage
    task = TeacherStudent(Unit(3, "erf", bias=True), torch.zeros(1, 5))
    assert not task.closed_form
    with pytest.raises(ConfigError, match="n_mc"):
        evaluate(task, torch.zeros(2, 5, dtype=torch.float64))


def test_particle_measure_weights_must_sum_to_one():
    with pytest.raises(ConfigError, match="0.9"):
        ParticleMeasure(torch.zeros(3, 2), weights=torch.tensor([0.3, 0.3, 0.3]))
    with pytest.raises(ConfigError, match=r"\[3\]"):
        ParticleMeasure(torch.zeros(3, 2), weights=torch.tensor([0.5, 0.5]))
    pm = ParticleMeasure(torch.zeros(3, 2), weights=torch.tensor([0.2, 0.3, 0.5]))
    assert pm.masses().tolist() == pytest.approx([0.2, 0.3, 0.5])


@pytest.mark.parametrize("weights", [[0.5, 0.5], np.array([0.5, 0.5]), [0.7, 0.7]])
def test_particle_measure_weights_not_a_tensor(weights):
    try:
        pm = ParticleMeasure(torch.zeros(2, 3, dtype=torch.float64), weights=weights)
    except ConfigError:
        assert sum(weights) != 1.0        # only weights that are actually bad may be refused
        return
    assert pm.masses().tolist() == pytest.approx(list(weights))


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_teacher_weights_must_be_finite(bad):
    with pytest.raises(ConfigError, match="teacher_weights"):
        TeacherStudent(Unit(3, "relu"), torch.ones(2, 4), teacher_weights=[bad, 1.0])


def test_particle_measure_gaussian(gen):
    with pytest.raises(ConfigError, match=r"N.*-2"):
        ParticleMeasure.gaussian(-2, 3, generator=gen(0))
    pm = ParticleMeasure.gaussian(20_000, 2, generator=gen(0), mean=[1.0, -2.0], std=[0.5, 2.0],
                                  dtype=torch.float64)
    assert pm.N == 20_000 and pm.D == 2 and pm.replicas == 1
    p = pm.positions
    _within(*_mc(p), torch.tensor([1.0, -2.0], dtype=torch.float64))
    assert p.std(0).tolist() == pytest.approx([0.5, 2.0], rel=0.03)
    # same seed, same draw
    again = ParticleMeasure.gaussian(20_000, 2, generator=gen(0), mean=[1.0, -2.0], std=[0.5, 2.0],
                                     dtype=torch.float64)
    assert torch.equal(again.positions, p)


def test_pwl_activation_values_derivative_and_validation():
    import torch as _t

    from meanfield.errors import ConfigError as _CE
    from meanfield.models.activations import get_activation as _ga

    knots, vals = [-1.0, 0.0, 2.0], [3.0, -1.0, 1.0]
    act = _ga("pwl", z0=-1.0, v0=3.0, z1=0.0, v1=-1.0, z2=2.0, v2=1.0)
    z = _t.linspace(-3, 4, 57, dtype=_t.float64)
    np.testing.assert_allclose(act(z).numpy(), np.interp(z.numpy(), knots, vals), atol=1e-14)
    zi = z[((z[:, None] - _t.tensor(knots, dtype=_t.float64)).abs() > 0.01).all(-1)]  # off kinks
    eps = 1e-6
    fd = (act(zi + eps) - act(zi - eps)) / (2 * eps)
    np.testing.assert_allclose(act.derivative(zi).numpy(), fd.numpy(), atol=1e-6)
    with pytest.raises(_CE, match="increase"):
        _ga("pwl", z0=1.0, v0=0.0, z1=0.0, v1=1.0)
    with pytest.raises(_CE, match="pwl"):
        _ga("pwl", z0=1.0, v0=0.0)
