"""chaos-rate in its small mode: bias, fluctuation and W1 against the i.i.d. baseline, each rate
against theory; an acceptance that rejects a 10 % time-scale error; resume."""
import dataclasses
import json

import numpy as np
import pytest

from meanfield import io, runner
from meanfield.analysis import chaos
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
    resolves (measured: bias slope −1.05 [−1.15, −0.97]; W1 −0.51 [−0.60, −0.42] beside the
    i.i.d. baseline's −0.56 [−0.63, −0.50]; W1 / W1_iid 0.90, 0.80, 0.94, 1.04 with slope
    0.05 [−0.07, 0.16]; grid error 7e-5, 1 % of the smallest bias)."""
    cfg, out = small
    fit = json.loads((out / "fit.json").read_text())
    s = io.read_metrics(out / "summary.csv")
    assert list(s["N"]) == cfg.grid() == [20, 58, 171, 500]
    # the 1/N bias: its interval contains −1 and is narrow enough to exclude −1/2
    lo, hi = fit["risk_bias"]["ci95"]
    assert lo <= -1.0 <= hi and hi < -0.75, fit["risk_bias"]
    # W1 and its i.i.d. null baseline both fall like N^(−1/2) ...
    for key in ("w1", "w1_iid"):
        lo, hi = fit[key]["ci95"]
        assert lo <= -0.5 <= hi and hi - lo < 0.3, (key, fit[key])
    # ... so the informative number is their ratio: about 1 at every N, N-independent
    assert ((s["w1_ratio_lo"] <= 1.0) & (1.0 <= s["w1_ratio_hi"])).all(), s["w1_ratio"]
    lo, hi = fit["w1_ratio"]["slope_ci95"]
    assert lo <= 0.0 <= hi and hi - lo < 0.4
    np.testing.assert_allclose(s["w1_ratio"], s["w1"] / s["w1_iid"], rtol=1e-12)
    assert (np.diff(s["sup_risk_gap"]) < 0).all(), s["sup_risk_gap"]
    # the control-variate risk is resolved far below the gap it measures
    assert (s["max_risk_se"] < 0.5 * s["sup_risk_gap"]).all()
    # the PDE's grid error is far below the smallest bias it is compared with
    assert fit["pde_grid"]["over_smallest_bias"] < 0.1, fit["pde_grid"]
    assert fit["acceptance"]["passed"], fit["acceptance"]
    assert (out / io.FIGURES / "chaos.png").stat().st_size > 10_000
    with np.load(out / io.PARTICLES) as z:
        assert z["theta_N500"].shape == (4, 500, 20)
        assert z["risk_T"].shape == (4, 4)


def _at_T_against(cfg, out, xi):
    """The run's particles and risks at T against the PDE re-solved with time scale ξ."""
    import torch

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
        u = torch.rand(cfg.n_iid, N, generator=torch.Generator().manual_seed(N), dtype=torch.float64).numpy()
        at["w1_iid"].append(np.array([chaos.w1_to_density(chaos.iid_radii(uj, grid.faces, p, grid.h),
                                                          grid.faces, p, grid.h) for uj in u]))
    return at


def test_acceptance_rejects_a_ten_percent_time_scale_error(small):
    """Re-solving the PDE with ξ × 0.9 or × 1.1 (a 10 % error in the time scale) fails the
    acceptance on the same particles — the law check (W1 / W1_iid at N = 500: 4.9 and 3.4
    against 1.0) and the risk check (the bias changes sign, or its slope flattens to
    −0.76 [−0.80, −0.73]) — while the true ξ passes both."""
    cfg, out = small
    verdicts = {}
    for xi in ("0.9", "1.0", "1.1"):
        summary, fit = chaos.statistics_at_T(cfg.grid(), _at_T_against(cfg, out, xi), n_boot=500)
        verdicts[xi] = fit["acceptance"]
    assert verdicts["1.0"]["law"] and verdicts["1.0"]["risk"], verdicts["1.0"]
    for xi in ("0.9", "1.1"):
        assert not verdicts[xi]["law"] and not verdicts[xi]["risk"], (xi, verdicts[xi])
        assert verdicts[xi]["w1_ratio"] > 2 * verdicts["1.0"]["w1_ratio"]


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
