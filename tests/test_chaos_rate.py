"""chaos-rate in its small mode: bias, fluctuation and W1 against the i.i.d. baseline, each rate
against theory; an acceptance that rejects a 10 % time-scale error; resume."""
import dataclasses
import json

import numpy as np
import pytest

from meanfield import io, runner
from meanfield.analysis import chaos
from meanfield.errors import ConfigError
from meanfield.experiments import get_experiment
from meanfield.experiments.mmn_common import solve_pde


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    exp = get_experiment("chaos-rate")
    cfg = exp.Config.build(None, ["scale=small"])
    out = tmp_path_factory.mktemp("chaos") / "run"
    runner.run(exp, cfg, out, progress=False)
    return cfg, out


def test_small_mode_separates_bias_fluctuation_and_sampling(small):
    """The statistics that test chaos, each against its theory with an interval the small mode
    resolves (measured: bias slope −1.04 [−1.15, −0.97]; W1 −0.51 [−0.60, −0.42] beside the
    exact i.i.d. expectation's −0.49; W1 / E W1_iid 1.13, 0.81, 0.78, 1.07 with slope −0.02
    [−0.11, 0.07]; the baseline's quadrature error 5e-18; grid error 7e-5, 1 % of the smallest
    bias)."""
    cfg, out = small
    fit = json.loads((out / "fit.json").read_text())
    s = io.read_metrics(out / "summary.csv")
    assert list(s["N"]) == cfg.grid() == [20, 58, 171, 500]
    # the 1/N bias: its interval contains −1 and is narrow enough to exclude −1/2
    lo, hi = fit["risk_bias"]["ci95"]
    assert lo <= -1.0 <= hi and hi < -0.75, fit["risk_bias"]
    # W1 falls like N^(−1/2), and so does its i.i.d. null baseline, now an exact expectation
    lo, hi = fit["w1"]["ci95"]
    assert lo <= -0.5 <= hi and hi - lo < 0.3, fit["w1"]
    assert fit["w1_iid"]["exact"] and abs(fit["w1_iid"]["slope"] + 0.5) < 0.03, fit["w1_iid"]
    assert (s["w1_iid_se"] == 0).all() and (s["w1_iid_err"] < 1e-9 * s["w1_iid"]).all()
    # ... so the informative number is their ratio: of order 1 at every N, N-independent
    assert ((0.6 < s["w1_ratio"]) & (s["w1_ratio"] < 1.5)).all(), s["w1_ratio"]
    lo, hi = fit["w1_ratio"]["slope_ci95"]
    assert lo <= 0.0 <= hi and hi - lo < 0.4
    np.testing.assert_allclose(s["w1_ratio"], s["w1"] / s["w1_iid"], rtol=1e-12)
    # the per-seed ratios' distribution: quartiles around the median, inside the range
    assert ((s["w1_ratio_min"] <= s["w1_ratio_q25"]) & (s["w1_ratio_q25"] <= s["w1_ratio_median"])
            & (s["w1_ratio_median"] <= s["w1_ratio_q75"]) & (s["w1_ratio_q75"] <= s["w1_ratio_max"])).all()
    assert (np.diff(s["sup_risk_gap"]) < 0).all(), s["sup_risk_gap"]
    # the control-variate risk is resolved far below the gap it measures
    assert (s["max_risk_se"] < 0.5 * s["sup_risk_gap"]).all()
    # the fluctuation is reported with both terms: raw² = corrected² + MC s.e.² (when resolved)
    ok = s["risk_sd"] > 0
    np.testing.assert_allclose(s["risk_sd_raw"][ok] ** 2, s["risk_sd"][ok] ** 2 + s["mc_se"][ok] ** 2, rtol=1e-9)
    assert ((s["risk_sd_lo"] <= s["risk_sd"]) & (s["risk_sd"] <= s["risk_sd_hi"])).all()
    # the PDE's grid error is far below the smallest bias it is compared with
    assert fit["pde_grid"]["over_smallest_bias"] < 0.1, fit["pde_grid"]
    assert fit["acceptance"]["passed"], fit["acceptance"]
    assert (out / io.FIGURES / "chaos.png").stat().st_size > 10_000
    with np.load(out / io.PARTICLES) as z:
        assert z["theta_N500"].shape == (4, 500, 20)
        assert z["risk_T"].shape == (4, 4)


def _at_T_against(cfg, out, xi):
    """The run's particles and risks at T against the PDE re-solved with time scale ξ."""
    with np.load(out / io.PARTICLES) as z:
        risk_T, se_T = z["risk_T"], z["risk_se_T"]
        thetas = {N: z[f"theta_N{N}"] for N in cfg.grid()}
    times, grid, dens, risks, _, _ = solve_pde(dataclasses.replace(cfg, xi=xi))
    p = dens[0, -1]
    at = {"risk": list(risk_T), "risk_se": list(se_T), "risk_pde": [float(risks[0, -1])] * len(thetas),
          "w1": [], "w1_iid": []}
    for N, th in thetas.items():
        r = np.linalg.norm(th, axis=-1)
        at["w1"].append(np.array([chaos.w1_to_density(rb, grid.faces, p, grid.h) for rb in r]))
        at["w1_iid"].append(chaos.expected_w1_iid(N, grid.faces, p, grid.h))
    return at


def test_acceptance_rejects_a_ten_percent_time_scale_error(small):
    """Re-solving the PDE with ξ × 0.9 or × 1.1 (a 10 % error in the time scale) fails the
    acceptance on the same particles — the law check (W1 / E W1_iid at N = 500: 5.5 and 3.9
    against 1.07) and the risk check (the bias changes sign, or its slope flattens to
    −0.76 [−0.80, −0.73], an interval that misses −1 ± 0.1) — while the true ξ passes both
    (bias slope −1.04 [−1.15, −0.97])."""
    cfg, out = small
    verdicts = {}
    for xi in ("0.9", "1.0", "1.1"):
        summary, fit = chaos.statistics_at_T(cfg.grid(), _at_T_against(cfg, out, xi), n_boot=500)
        verdicts[xi] = fit["acceptance"]
    assert verdicts["1.0"]["law"] and verdicts["1.0"]["risk"], verdicts["1.0"]
    for xi in ("0.9", "1.1"):
        assert not verdicts[xi]["law"] and not verdicts[xi]["risk"], (xi, verdicts[xi])
        assert verdicts[xi]["w1_ratio"] > 2 * verdicts["1.0"]["w1_ratio"]


def test_the_iid_baseline_expectation_and_its_error_bound(small):
    """E W1(N i.i.d. draws of the PDE law at T, its quantile measure) by quadrature, against
    Monte Carlo over 300 and 2000 exact draws (N = 58 and 500): each estimate within 3.5 of its
    standard errors of the quadrature, whose own error (8 against 16 Gauss nodes) is below
    1e-9 relative (measured ≤ 1.3e-16) — far inside 2 % of the ratio it divides (measured:
    |z| ≤ 1.7; s.e. 0.7–0.8 % of the value at 2000 draws).  The same draws reject the
    quadrature of a wrong N (N × 1.3: E W1 12 % lower), and the mean of 16 draws, the earlier
    baseline, has an s.e. of 6–7 %."""
    cfg, out = small
    with np.load(out / "pde.npz") as z:
        r, dens, r_max = z["r"], z["density"][0, -1], float(z["r_max"])
    h = r[1] - r[0]
    faces = np.append(r - h / 2, r[-1] + h / 2)
    assert faces[-1] == pytest.approx(r_max)
    rng = np.random.default_rng(5)
    for N in (58, 500):
        exact = chaos.expected_w1_iid(N, faces, dens, h)
        assert abs(chaos.expected_w1_iid(N, faces, dens, h, nodes=16) - exact) < 1e-9 * exact
        draws = np.array([chaos.w1_to_density(chaos.iid_radii(rng.random(N), faces, dens, h), faces, dens, h)
                          for _ in range(2000)])
        ses = []
        for n in (300, 2000):
            mean, se = draws[:n].mean(), draws[:n].std(ddof=1) / np.sqrt(n)
            assert abs(mean - exact) < 3.5 * se, (N, n, mean, exact, se)
            ses.append(se)
        assert ses[1] < 0.02 * exact and ses[0] / ses[1] == pytest.approx(np.sqrt(2000 / 300), rel=0.3)
        wrong = chaos.expected_w1_iid(int(1.3 * N), faces, dens, h)
        assert abs(draws.mean() - wrong) > 5 * ses[1], (N, wrong, exact)
        assert draws[:16].std(ddof=1) / 4 > 0.04 * exact          # 16 draws: several % of noise


def test_corrected_sd_matches_a_brute_force_reestimate_with_ten_times_the_samples(small):
    """Each seed's risk at T re-estimated from its saved particles with 10 × n_mc fresh
    samples (the same control variate): the seeds' s.d. with the Monte Carlo error taken out
    (s.d.² − mean s.e.²) from the run lies within its Monte Carlo interval of the brute-force
    value at every N; the raw s.d. (no correction) lies above the brute-force value's upper
    bound at every N (measured: run 0.0067, 0.0012, 0.0012, 0.0019 against brute force 0.0060,
    0.0015, 0.0010, 0.0010; raw 0.0090, 0.0030, 0.0018, 0.0020), so the comparison resolves
    the correction."""
    import torch

    from meanfield.experiments.chaos_rate import f_pde_table, risk_cv
    from meanfield.models import IsotropicGaussians, Unit

    cfg, out = small
    s = io.read_metrics(out / "summary.csv")
    with np.load(out / io.PARTICLES) as z:
        risk_T, se_T = z["risk_T"], z["risk_se_T"]
        thetas = {N: torch.as_tensor(z[f"theta_N{N}"]) for N in cfg.grid()}
    _, grid, dens, risks, _, _ = solve_pde(cfg)
    table = f_pde_table(cfg, grid, dens[0, -1])
    task = IsotropicGaussians(Unit(cfg.d, cfg.activation(), output_weight=False), cfg.delta)
    g = torch.Generator().manual_seed(7)
    for i, N in enumerate(cfg.grid()):
        run = chaos.corrected_sd(risk_T[i], se_T[i])
        assert run["sd"] == pytest.approx(s["risk_sd"][i], rel=1e-9)
        R, se = risk_cv(task, thetas[N], 10 * cfg.n_mc, g, table, float(risks[0, -1]))
        big = chaos.corrected_sd(R, se)
        assert big["mc_se"] < 0.5 * run["mc_se"]                 # 10× the samples: √10 smaller
        lo, hi = run["mc_ci95"]
        assert lo <= big["sd"] <= hi, (N, run, big)
        assert run["sd_raw"] > big["mc_ci95"][1], (N, run["sd_raw"], big)


def test_paired_seeds_separate_initial_sampling_from_sgd_noise():
    """Seeds in pairs that share their initial particles: synthetic risks R = I_k + S_kj + E_kj
    with Var I = 4e-6, Var S = 1e-6 and Monte Carlo s.e. 1e-3 (so the estimation error is as
    large as the rest): the within-pair and between-pair variances recover both parts (the
    estimation error cancels from the initial sampling's), the total corrected s.d. their sum;
    the same risks with the pairs broken (each seed's partner drawn independently) give an
    initial-sampling part ≈ 0, so the decomposition sees a pairing error.  With Var I = A/N
    over N = 20 … 320 the fitted slope of its s.d. brackets −½ while the total's, with the
    N-independent SGD part, is flatter.  ``build(paired=True)`` starts pairs from one draw."""
    import torch

    from meanfield.experiments.mmn_common import build

    rng = np.random.default_rng(0)
    P, vI, vS, se = 400, 4e-6, 1e-6, 1e-3

    def draw(vi, pairs=P, shared=True):
        I = rng.normal(0, np.sqrt(vi), pairs)
        I2 = I if shared else rng.normal(0, np.sqrt(vi), pairs)
        R = np.stack([I, I2], 1) + rng.normal(0, np.sqrt(vS), (pairs, 2)) + rng.normal(0, se, (pairs, 2))
        return R.ravel(), np.full(2 * pairs, se)

    R, s = draw(vI)
    pc = chaos.paired_components(R, s)
    assert pc["var_init"] == pytest.approx(vI, rel=0.35) and pc["var_sgd"] == pytest.approx(vS, rel=0.6)
    tot = chaos.corrected_sd(R, s)
    assert tot["var"] == pytest.approx(vI + vS, rel=0.35)
    R, s = draw(vI, shared=False)
    assert chaos.paired_components(R, s)["var_init"] < 0.3 * vI
    Ns = [20, 40, 80, 160, 320]
    data = [draw(80e-6 / N, pairs=64) for N in Ns]
    init = chaos.fluctuation_rate(Ns, [d[0] for d in data], [d[1] for d in data], component="init", n_boot=500)
    total = chaos.fluctuation_rate(Ns, [d[0] for d in data], [d[1] for d in data], n_boot=500)
    assert init["ci95"][0] <= -0.5 <= init["ci95"][1], init
    assert total["slope"] > init["slope"] and total["slope"] > -0.45, total
    cfg = get_experiment("chaos-rate").Config.build(None, ["scale=small", "replicas=4", "paired=true"])
    theta = build(cfg, 20, paired=True)[2].theta
    assert torch.equal(theta[0], theta[1]) and torch.equal(theta[2], theta[3])
    assert not torch.equal(theta[0], theta[2])
    with pytest.raises(ConfigError, match="paired seeds need an even number"):
        get_experiment("chaos-rate").Config.build(None, ["scale=small", "replicas=5", "paired=true"])


def test_the_iid_baseline_draws_the_pde_law_exactly():
    """iid_radii inverts the piecewise-linear CDF of a cell density: a Kolmogorov–Smirnov test
    against that CDF (computed independently by integrating the cells) accepts 20 000 draws,
    and rejects draws of a density shifted by one cell."""
    from scipy.stats import kstest

    faces = np.linspace(0.0, 3.0, 31)
    h = faces[1] - faces[0]
    c = 0.5 * (faces[1:] + faces[:-1])
    dens = c ** 2 * np.exp(-c ** 2)
    dens /= dens.sum() * h
    u = np.random.default_rng(0).random(20_000)

    def cdf(x):
        x = np.clip(x, 0.0, 3.0)
        k = np.minimum((x / h).astype(int), len(c) - 1)
        return np.concatenate([[0.0], np.cumsum(dens) * h])[k] + dens[k] * (x - faces[k])

    assert kstest(chaos.iid_radii(u, faces, dens, h), cdf).pvalue > 0.01
    assert kstest(chaos.iid_radii(u, faces, np.roll(dens, 1), h), cdf).pvalue < 1e-6


def test_resume_skips_finished_N_and_reproduces_the_results(tmp_path, monkeypatch, stop_after_phases):
    exp = get_experiment("chaos-rate")
    cfg = exp.Config.build(None, ["scale=small", "N=40", "N_min=10", "n_values=3", "replicas=2",
                                  "steps=2000", "log_every=500", "save_every=2000",
                                  "checkpoint_every=2000", "n_mc=1000", "pde_cells=200",
                                  "n_boot=200"])
    runner.run(exp, cfg, tmp_path / "a", progress=False)
    progress, done, _ = runner.load_records(tmp_path / "a")
    assert progress["finished"] and list(done) == [f"N={N}" for N in cfg.grid()]
    # a run stopped after the first N: resume computes the other two
    stop_after_phases(1)
    with pytest.raises(KeyboardInterrupt):
        runner.run(exp, cfg, tmp_path / "b", progress=False)
    monkeypatch.undo()
    assert list(runner.load_records(tmp_path / "b")[1]) == [f"N={cfg.grid()[0]}"]
    runner.resume(tmp_path / "b", progress=False)
    for f in ("summary.csv", io.METRICS, "fit.json"):
        assert (tmp_path / "b" / f).read_text() == (tmp_path / "a" / f).read_text(), f
