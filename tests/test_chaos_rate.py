"""chaos-rate in its small mode: fitted rates in N against theory, and resume."""
import json

import numpy as np
import pytest

from meanfield import io, runner
from meanfield.experiments import get_experiment


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    exp = get_experiment("chaos-rate")
    cfg = exp.Config.build(None, ["scale=small"])
    out = tmp_path_factory.mktemp("chaos") / "run"
    runner.run(exp, cfg, out, progress=False)
    return cfg, out


def test_small_mode_rates(small):
    """The W1 slope lies within 0.15 of −1/2 and sup_t |R_N − R_PDE| decreases with N
    (measured in small mode: W1 slope −0.51, risk-gap slope −0.75)."""
    cfg, out = small
    fit = json.loads((out / "fit.json").read_text())
    s = io.read_metrics(out / "summary.csv")
    assert list(s["N"]) == cfg.grid() == [20, 58, 171, 500]
    assert abs(fit["w1_T"]["slope"] + 0.5) <= 0.15, fit["w1_T"]
    lo, hi = fit["w1_T"]["ci95"]
    assert lo < fit["w1_T"]["slope"] < hi and hi - lo < 0.4
    assert (np.diff(s["sup_risk_gap"]) < 0).all(), s["sup_risk_gap"]
    assert fit["sup_risk_gap"]["slope"] < -0.4
    # the control-variate risk is resolved far below the gap it measures
    assert (s["max_risk_se"] < 0.5 * s["sup_risk_gap"]).all()
    assert (out / io.FIGURES / "chaos.png").stat().st_size > 10_000
    with np.load(out / io.PARTICLES) as z:
        assert z["theta_N500"].shape == (4, 500, 20)


def test_resume_skips_finished_N_and_reproduces_the_results(tmp_path, monkeypatch, stop_after_phases):
    exp = get_experiment("chaos-rate")
    cfg = exp.Config.build(None, ["scale=small", "N=40", "N_min=10", "n_values=3", "replicas=2",
                                  "steps=2000", "log_every=500", "save_every=2000",
                                  "checkpoint_every=2000", "n_mc=1000", "pde_cells=200",
                                  "n_boot=200"])
    runner.run(exp, cfg, tmp_path / "a", progress=False)
    ck = io.load_checkpoint(tmp_path / "a" / io.CHECKPOINT)
    assert ck["finished"] and list(ck["done"]) == [f"N={N}" for N in cfg.grid()]
    # a run stopped after the first N: resume computes the other two
    stop_after_phases(1)
    with pytest.raises(KeyboardInterrupt):
        runner.run(exp, cfg, tmp_path / "b", progress=False)
    monkeypatch.undo()
    assert list(io.load_checkpoint(tmp_path / "b" / io.CHECKPOINT)["done"]) == [f"N={cfg.grid()[0]}"]
    runner.resume(tmp_path / "b", progress=False)
    for f in ("summary.csv", io.METRICS, "fit.json"):
        assert (tmp_path / "b" / f).read_text() == (tmp_path / "a" / f).read_text(), f
