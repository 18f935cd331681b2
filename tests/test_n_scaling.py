"""n-scaling: the gap R_N(T) − R_∞ against N, its references, fits, and resume."""
import json

import numpy as np
import pytest
import torch

from meanfield import io
from meanfield.cli import main
from meanfield.experiments import n_scaling as ns
from meanfield.interact import evaluate


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ns") / "run"
    assert main(["run", "n-scaling", "--set", "scale=small", "--out", str(out), "--no-progress"]) == 0
    return out


def test_small_mode_resolves_the_slope_and_beats_iid(small_run):
    fit = json.loads((small_run / "fit.json").read_text())
    assert fit["N"] == [8, 20, 51, 128]
    g = fit["gap"]
    # measured (scale=small): slope −1.37, 95 % bootstrap interval [−1.43, −1.28]; the
    # acceptance asks for a half-width ≤ 0.1, and any decay faster than N^(−1/2)
    assert g["half_width"] <= 0.1
    assert g["ci95"][0] <= g["slope"] <= g["ci95"][1]
    assert g["slope"] < -0.5
    # gradient descent is far below i.i.d. sampling (measured: 0.12 % of it at N = 128)
    assert fit["gd_beats_iid"] and fit["gap_over_iid_at_Nmax"] < 0.05
    assert fit["mmn_K"] > fit["K_iid_limit"] > 0            # K = sup U(θ,θ) ≥ ∫U(θ,θ) − ∬U
    res = io.read_metrics(small_run / "results.csv")
    np.testing.assert_allclose(res["iid_limit"] * res["N"], fit["K_iid_limit"], rtol=1e-12)
    assert (figs := small_run / "figures" / "n_scaling.png").stat().st_size > 10_000, figs


def test_recorded_gaps_are_the_exact_risks_of_the_saved_particles(small_run):
    cfg = ns.Config.build(None, ["scale=small"])
    task = ns.teacher_task(cfg)
    res = io.read_metrics(small_run / "results.csv")
    with np.load(small_run / io.PARTICLES) as z:
        for k, N in enumerate(res["N"].astype(int)):
            th = torch.tensor(z[f"theta_N{N}"], dtype=torch.float64)
            assert th.shape == (4, N, 5)
            r = evaluate(task, th, backend="torch").risk.numpy()
            np.testing.assert_allclose([res[f"gap_r{b}"][k] for b in range(4)], r, rtol=1e-9)
        np.testing.assert_array_equal(z["teacher_theta"], task.teacher_theta.numpy())


def test_iid_constant_is_the_excess_risk_of_iid_draws(gen):
    """(1/N)[∫U(θ,θ)dρ − ∬U dρdρ] is E R(ρ_N) − R(ρ) for θ_i i.i.d. from ρ: here ρ = the
    teacher's law (R(ρ) = 0), so 400 draws of N = 6 teacher units must average K/N."""
    cfg = ns.Config.build(None, ["scale=small", "m0=300"])
    task = ns.teacher_task(cfg)
    tt = task.teacher_theta
    K = float(ns.iid_constant(task, tt[None])[0])
    idx = torch.randint(0, tt.shape[0], (400, 6), generator=gen(3))
    r = evaluate(task, tt[idx], backend="torch").risk.numpy()
    # standard error of the mean of 400 draws: measured ≈ 3 % of K/6; allow 4 s.e.
    se = r.std(ddof=1) / np.sqrt(len(r))
    assert abs(r.mean() - K / 6) < 4 * se
    assert se < 0.1 * K / 6


def test_interrupted_run_resumes_bit_for_bit(tmp_path, capsys, monkeypatch):
    from meanfield.dynamics import ParticleDynamics

    sets = ["--set", "scale=small", "--set", "m0=300", "--set", "steps=40", "--set", "log_every=5",
            "--set", "checkpoint_every=10", "--set", "N=30", "--set", "n_values=3", "--no-progress"]
    ref, crashed = tmp_path / "ref", tmp_path / "crashed"
    assert main(["run", "n-scaling", "--out", str(ref), *sets]) == 0
    real, calls = ParticleDynamics.step, {"n": 0}

    class Crash(Exception):
        pass

    def step(self, state, **kw):
        calls["n"] += 1
        if calls["n"] == 40 + 25:           # N = 8 done; the second N between checkpoints 20 and 30
            raise Crash
        return real(self, state, **kw)

    monkeypatch.setattr(ParticleDynamics, "step", step)
    with pytest.raises(Crash):
        main(["run", "n-scaling", "--out", str(crashed), *sets])
    monkeypatch.setattr(ParticleDynamics, "step", real)
    ck = io.load_checkpoint(crashed / io.CHECKPOINT)
    assert not ck["finished"] and list(ck["done"]) == ["N=8"] and ck["current"]["key"] == "N=15"
    assert ck["progress"] == {"phases_done": 1, "phases": 3, "phase": "N=15", "step": 20, "steps": 40,
                              "finished": False}
    assert main(["resume", str(crashed), "--no-progress"]) == 0
    assert (ref / io.METRICS).read_bytes() == (crashed / io.METRICS).read_bytes()
    assert (ref / "results.csv").read_bytes() == (crashed / "results.csv").read_bytes()
    capsys.readouterr()


@pytest.mark.parametrize("sets, needle", [
    (["N_min=1000"], "N_min must be in [1, N)"),
    (["n_values=2"], "n_values must be >= 3"),
    (["replicas=1"], "replicas (seeds per N) must be >= 2"),
    (["teacher_std_min=0"], "teacher_std_min must be in (0, 1]"),
    (["scale=huge"], "scale must be one of"),
])
def test_bad_config_is_one_line_and_status_2(tmp_path, capsys, sets, needle):
    argv = ["run", "n-scaling", "--out", str(tmp_path / "r")]
    for s in sets:
        argv += ["--set", s]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert needle in err and err.count("\n") == 1
    assert not (tmp_path / "r").exists()
