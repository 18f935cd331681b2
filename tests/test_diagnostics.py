"""diagnostics: W2 (exact and sliced), W1 in 1-D, ‖v‖²_{L²(ρ)}, the PL ratio, and risk."""
import math

import numpy as np
import pytest
import scipy.stats
import torch

from meanfield import diagnostics
from meanfield.errors import ConfigError
from meanfield.interact import evaluate
from meanfield.models import FiniteDataset, IsotropicGaussians, TeacherStudent, Unit


# ---------------------------------------------------------------------------------------
# W2
# ---------------------------------------------------------------------------------------

def test_w2_between_diracs():
    assert diagnostics.w2([[0.0, 0.0]], [[3.0, 4.0]], method="exact") == pytest.approx(5.0, rel=1e-12)
    # one Dirac against two weighted points: W2² = Σ_j b_j |y_j − x|²
    val = diagnostics.w2(np.array([[0.0]]), np.array([[1.0], [3.0]]), y_weights=[0.25, 0.75], method="exact")
    assert val == pytest.approx(math.sqrt(0.25 * 1 + 0.75 * 9), rel=1e-12)


@pytest.mark.parametrize("weighted", [False, True])
def test_w2_of_a_translated_cloud_is_the_shift(weighted, gen):
    g = gen(0)
    x = torch.randn(40, 3, generator=g, dtype=torch.float64)
    shift = torch.tensor([0.3, -1.2, 0.5], dtype=torch.float64)
    wts = None
    if weighted:
        wts = torch.rand(40, generator=g, dtype=torch.float64) + 0.1
        wts = wts / wts.sum()
    got = diagnostics.w2(x, x + shift, wts, wts, method="exact")
    assert got == pytest.approx(shift.norm().item(), rel=1e-9)
    # (the squared-distance matrix carries ~1e-16 rounding on its diagonal, hence √ ~ 1e-8)
    assert diagnostics.w2(x, x.clone(), wts, wts, method="exact") == pytest.approx(0.0, abs=1e-7)
    # "auto" is exact at this size
    assert diagnostics.w2(x, x + shift, wts, wts) == pytest.approx(got, rel=1e-12)


def test_sliced_w2_is_a_lower_bound(gen):
    g = gen(1)
    x = torch.randn(60, 3, generator=g, dtype=torch.float64)
    y = torch.randn(50, 3, generator=g, dtype=torch.float64) * torch.tensor([2.0, 0.5, 1.0],
                                                                             dtype=torch.float64) + 0.7
    exact = diagnostics.w2(x, y, method="exact")
    sliced = diagnostics.w2(x, y, method="sliced", n_projections=300, seed=3)
    assert 0 < sliced <= exact + 1e-12
    # for a pure translation sliced W2 = |s| / √D (E[⟨θ, s⟩²] = |s|²/D): clearly below W2
    s = np.array([3.0, 4.0, 0.0])
    sliced_t = diagnostics.w2(x, x + torch.as_tensor(s), method="sliced", n_projections=2000, seed=0)
    assert sliced_t == pytest.approx(5.0 / math.sqrt(3), rel=0.05)


def test_sliced_equals_exact_in_one_dimension(gen):
    g = gen(2)
    x = torch.randn(30, 1, generator=g, dtype=torch.float64)
    y = 2 * torch.randn(45, 1, generator=g, dtype=torch.float64) + 1.0
    xw = torch.rand(30, generator=g, dtype=torch.float64) + 0.1
    yw = torch.rand(45, generator=g, dtype=torch.float64) + 0.1
    xw, yw = xw / xw.sum(), yw / yw.sum()
    exact = diagnostics.w2(x, y, xw, yw, method="exact")
    sliced = diagnostics.w2(x, y, xw, yw, method="sliced", n_projections=10)
    assert exact > 0.5
    assert sliced == pytest.approx(exact, rel=1e-8)


def test_w2_bad_input():
    with pytest.raises(ConfigError, match="simplex"):
        diagnostics.w2(np.zeros((3, 2)), np.ones((3, 2)), method="simplex")
    with pytest.raises(ConfigError, match=r"\(3, 3\)"):
        diagnostics.w2(np.zeros((3, 2)), np.ones((3, 3)))


# ---------------------------------------------------------------------------------------
# W1 in one dimension
# ---------------------------------------------------------------------------------------

def test_w1_1d_matches_scipy(gen):
    g = gen(3)
    u = torch.randn(25, generator=g, dtype=torch.float64)
    v = 0.5 * torch.randn(40, generator=g, dtype=torch.float64) + 0.8
    uw = torch.rand(25, generator=g, dtype=torch.float64) + 0.05
    vw = torch.rand(40, generator=g, dtype=torch.float64) + 0.05
    uw, vw = uw / uw.sum(), vw / vw.sum()
    ref = scipy.stats.wasserstein_distance(u.numpy(), v.numpy(), uw.numpy(), vw.numpy())
    assert diagnostics.w1_1d(u, v, uw, vw) == pytest.approx(ref, rel=1e-10)
    ref_uniform = scipy.stats.wasserstein_distance(u.numpy(), v.numpy())
    assert diagnostics.w1_1d(u, v) == pytest.approx(ref_uniform, rel=1e-10)
    # hand-checkable: a point mass moved by 2
    assert diagnostics.w1_1d([1.0], [3.0]) == pytest.approx(2.0)


def test_distances_with_unnormalised_weights():
    """Counts as weights: either normalise them (scipy's convention) or refuse them."""
    u, v = np.array([0.0, 1.0, 3.0]), np.array([0.5, 2.0])
    uw, vw = np.array([1.0, 2.0, 3.0]), np.array([2.0, 1.0])
    ref = scipy.stats.wasserstein_distance(u, v, uw, vw)          # 1.0
    try:
        got = diagnostics.w1_1d(u, v, uw, vw)                      # currently 5.0
    except ConfigError:
        got = ref
    assert got == pytest.approx(ref, rel=1e-10)
    x = np.array([[0.0, 0.0], [1.0, 0.0]])
    try:
        got2 = diagnostics.w2(x, x + np.array([3.0, 4.0]), [1.0, 1.0], [1.0, 1.0])   # currently 5√2
    except ConfigError:
        got2 = 5.0
    assert got2 == pytest.approx(5.0, rel=1e-10)


# ---------------------------------------------------------------------------------------
# velocity norm and PL ratio
# ---------------------------------------------------------------------------------------

def test_velocity_sq_norm(gen):
    g = gen(4)
    v = torch.randn(2, 6, 3, generator=g, dtype=torch.float64)
    m = torch.rand(6, generator=g, dtype=torch.float64)
    m = m / m.sum()
    hand = [sum(m[i].item() * sum(v[b, i, k].item() ** 2 for k in range(3)) for i in range(6)) for b in range(2)]
    assert diagnostics.velocity_sq_norm(v, m).tolist() == pytest.approx(hand, rel=1e-13)
    # per-replica weights [B, N]
    mb = torch.stack([m, m.flip(0)])
    hand_b = [hand[0], sum(mb[1, i].item() * (v[1, i] ** 2).sum().item() for i in range(6))]
    assert diagnostics.velocity_sq_norm(v, mb).tolist() == pytest.approx(hand_b, rel=1e-13)
    # uniform: the mean of |v_i|²; an unbatched [N, D] velocity gives a [1] result
    assert diagnostics.velocity_sq_norm(v).tolist() == pytest.approx(
        [(v[b] ** 2).sum().item() / 6 for b in range(2)], rel=1e-13)
    assert diagnostics.velocity_sq_norm(v[0], m).tolist() == pytest.approx([hand[0]], rel=1e-13)


def test_pl_ratio(gen):
    g = gen(5)
    v = torch.randn(2, 5, 4, generator=g, dtype=torch.float64)
    m = torch.rand(5, generator=g, dtype=torch.float64)
    m = m / m.sum()
    risk = torch.tensor([0.9, 0.4], dtype=torch.float64)
    norm = diagnostics.velocity_sq_norm(v, m)
    got = diagnostics.pl_ratio(v, risk, risk_inf=0.15, weights=m)
    assert got.tolist() == pytest.approx((norm / (risk - 0.15)).tolist(), rel=1e-13)
    assert diagnostics.pl_ratio(v, risk).tolist() == pytest.approx(
        (diagnostics.velocity_sq_norm(v) / risk).tolist(), rel=1e-13)
    # a plain float risk for one replica
    assert diagnostics.pl_ratio(v[:1], 0.5, 0.25).item() == pytest.approx(
        diagnostics.velocity_sq_norm(v[:1]).item() / 0.25, rel=1e-13)


# ---------------------------------------------------------------------------------------
# risk
# ---------------------------------------------------------------------------------------

def test_risk_closed_form_is_exact(gen):
    unit = Unit(3, "relu")
    task = TeacherStudent(unit, torch.randn(2, 4, generator=gen(6), dtype=torch.float64))
    theta = torch.randn(2, 8, 4, generator=gen(7), dtype=torch.float64)
    r, se = diagnostics.risk(task, theta, backend="numpy")
    assert se is None
    assert r.shape == (2,)
    assert r.tolist() == pytest.approx(evaluate(task, theta, backend="torch").risk.tolist(), rel=1e-12)
    # the teacher itself has zero risk
    r0, _ = diagnostics.risk(task, task.teacher_theta, task.teacher_weights, backend="numpy")
    assert abs(r0.item()) < 1e-12


def _dataset_case(gen):
    g = gen(8)
    X = torch.randn(20, 2, generator=g, dtype=torch.float64)
    Y = torch.randn(20, generator=g, dtype=torch.float64)
    task = FiniteDataset(Unit(2, "tanh", bias=True), X, Y)
    theta = torch.randn(5, 4, generator=g, dtype=torch.float64)
    return task, theta, X, Y


def test_risk_dataset_is_exact(gen):
    task, theta, X, Y = _dataset_case(gen)
    r, _ = diagnostics.risk(task, theta)
    f = (theta[:, 0] * torch.tanh(X @ theta[:, 1:3].T + theta[:, 3])).mean(-1)
    assert r.item() == pytest.approx(((Y - f) ** 2).mean().item(), rel=1e-12)


def test_risk_dataset_has_no_standard_error(gen):
    task, theta, _, _ = _dataset_case(gen)
    _, se = diagnostics.risk(task, theta)
    assert se is None


def test_risk_monte_carlo_has_standard_error(gen):
    d, N, n = 4, 6, 5000
    unit = Unit(d, "relu", output_weight=False)
    task = IsotropicGaussians(unit, 0.3)
    theta = torch.randn(N, d, generator=gen(9), dtype=torch.float64)
    r, se = diagnostics.risk(task, theta, n_mc=n, generator=gen(10))
    x, y = task.sample(n, generator=gen(10), dtype=torch.float64)
    sq = (torch.relu(x[0] @ theta.T).mean(-1) - y[0]) ** 2
    assert r.item() == pytest.approx(sq.mean().item(), rel=1e-12)
    assert se.item() == pytest.approx(sq.std().item() / math.sqrt(n), rel=1e-12)
    with pytest.raises(ConfigError, match="n_mc"):
        diagnostics.risk(task, theta)


def test_loglog_rate_recovers_a_power_law_and_brackets_it():
    """Samples with mean 3·N^−0.7 and 10 % noise: the slope is −0.7 within its interval;
    the interval shrinks with more seeds; bad input is refused."""
    from meanfield.diagnostics import loglog_rate

    rng = np.random.default_rng(0)
    Ns = np.array([10, 30, 100, 300, 1000])
    few = [3 * n ** -0.7 * (1 + 0.1 * rng.standard_normal(4)) for n in Ns]
    many = [3 * n ** -0.7 * (1 + 0.1 * rng.standard_normal(64)) for n in Ns]
    a, b = loglog_rate(Ns, few, n_boot=500, seed=1), loglog_rate(Ns, many, n_boot=500, seed=1)
    for fit in (a, b):
        lo, hi = fit["ci95"]
        assert lo < fit["slope"] < hi and abs(fit["slope"] + 0.7) < 0.05
        assert fit["half_width"] == pytest.approx((hi - lo) / 2)
    assert b["half_width"] < 0.5 * a["half_width"]
    assert loglog_rate(Ns, few, n_boot=500, seed=1) == a          # reproducible from its seed
    with pytest.raises(ConfigError, match="positive"):
        loglog_rate(Ns, [np.array([1.0, -1.0])] * 5)
    with pytest.raises(ConfigError, match="at least 3"):
        loglog_rate(Ns[:2], few[:2])


def test_rate_of_separates_a_bias_from_a_fluctuation():
    """Seeds R_N = 2/N + 0.1 N^−½ ξ (a 1/N bias and an N^−½ spread, as a risk gap over seeds):
    the mean's slope is −1 and the s.d.'s −½, each inside its interval (whereas the mean of
    |R_N|, a single gap statistic, mixes the two)."""
    from meanfield.diagnostics import rate_of

    rng = np.random.default_rng(0)
    Ns = np.array([20, 60, 200, 600, 2000])
    samples = [2 / n + 0.1 * n ** -0.5 * rng.standard_normal(400) for n in Ns]
    bias = rate_of(Ns, samples, statistic="mean", n_boot=1000)
    sd = rate_of(Ns, samples, statistic="sd", n_boot=1000)
    for fit, want in ((bias, -1.0), (sd, -0.5)):
        lo, hi = fit["ci95"]
        assert lo <= want <= hi and hi - lo < 0.4, (want, fit)
    with pytest.raises(ConfigError, match="statistic"):
        rate_of(Ns, samples, statistic="median")
    with pytest.raises(ConfigError, match="> 0"):                  # a bias that changes sign
        rate_of(Ns, [s - 2 / Ns[2] for s in samples], statistic="mean")


def test_ratio_rate_sees_a_ratio_that_grows_with_n():
    """W1-like samples a = c·N^−½ and b = N^−½: ratio c at every N, slope 0 inside its
    interval; with a = N^−0.3 the ratio grows (slope 0.2, interval excluding 0)."""
    from meanfield.diagnostics import ratio_of_means, ratio_rate

    rng = np.random.default_rng(1)
    Ns = np.array([50, 150, 500, 1500])
    b = [n ** -0.5 * (1 + 0.1 * rng.standard_normal(16)) for n in Ns]
    flat = ratio_rate(Ns, [0.8 * n ** -0.5 * (1 + 0.1 * rng.standard_normal(8)) for n in Ns], b,
                      n_boot=1000)
    np.testing.assert_allclose(flat["ratio"], 0.8, rtol=0.1)
    assert flat["slope_ci95"][0] <= 0.0 <= flat["slope_ci95"][1]
    assert all(lo <= r <= hi for r, (lo, hi) in zip(flat["ratio"], flat["ci95"]))
    grow = ratio_rate(Ns, [n ** -0.3 * (1 + 0.1 * rng.standard_normal(8)) for n in Ns], b, n_boot=1000)
    assert grow["slope_ci95"][0] > 0.1 and abs(grow["slope"] - 0.2) < 0.05
    r = ratio_of_means(np.full(5, 2.0), np.full(7, 4.0))
    assert r["ratio"] == 0.5 and r["ci95"] == [0.5, 0.5]
