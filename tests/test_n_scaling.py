"""n-scaling: the gap R_N(T) − R_∞ against N, its references, fits, and resume."""
import json

import numpy as np
import pytest
import torch

from meanfield import io, runner
from meanfield.cli import main
from meanfield.analysis import decay
from meanfield.experiments import n_scaling as ns
from meanfield.interact import evaluate


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ns") / "run"
    assert main(["run", "n-scaling", "--set", "scale=small", "--out", str(out), "--no-progress"]) == 0
    return out


def test_small_mode_resolves_the_slope_and_beats_iid(small_run):
    """MMN Prop. 1: inf R_N − inf R ≤ K/N.  The gap sits below K/N at every N and decays at
    least as fast as 1/N: the slope's interval lies below −1 (measured: −1.37 [−1.43, −1.28],
    at T = 75 / 150 / 300: −0.99 / −1.20 / −1.37 — the slope is still steepening with T)."""
    fit = json.loads((small_run / "fit.json").read_text())
    assert fit["N"] == [8, 20, 51, 128]
    g = fit["gap"]
    assert g["half_width"] <= 0.1
    assert g["ci95"][0] <= g["slope"] <= g["ci95"][1] < -1.0, g
    res = io.read_metrics(small_run / "results.csv")
    assert (res["gap_mean"] < fit["mmn_K"] / res["N"]).all()
    np.testing.assert_allclose(res["mmn_K_over_N"] * res["N"], fit["mmn_K"], rtol=1e-12)
    # gradient descent is far below i.i.d. sampling of the limit (measured: 0.12 % at N = 128),
    # whose excess risk K_iid/N is checked by Monte Carlo in test_iid_constant_...
    assert fit["gd_beats_iid"] and fit["gap_over_iid_at_Nmax"] < 0.05
    assert (res["gap_mean"] < 0.05 * res["iid_limit"]).all()
    assert fit["mmn_K"] > fit["K_iid_limit"] > 0            # K = sup U(θ,θ) ≥ ∫U(θ,θ) − ∬U
    # the i.i.d. column is K_iid/N for the one constant K_iid
    np.testing.assert_allclose(res["iid_limit"] * res["N"], fit["K_iid_limit"], rtol=1e-12)
    slopes = [fit["slope_vs_T"][k] for k in sorted(fit["slope_vs_T"], key=float)]
    assert np.all(np.diff(slopes) < 0), slopes
    assert (figs := small_run / "figures" / "n_scaling.png").stat().st_size > 10_000, figs


def test_recorded_gaps_are_the_risks_of_the_saved_particles(small_run):
    """The recorded gaps (R_∞ = 0: the teacher is representable) against a Monte Carlo of
    E(y − f(x))² written out here, independent of the arc-cosine closed form the run used:
    f(x) = mean_i a_i relu(⟨w_i, x⟩), y = mean_k relu(⟨w*_k, x⟩), x ~ N(0, I_d)."""
    cfg = ns.Config.build(None, ["scale=small"])
    task = ns.teacher_task(cfg)
    res = io.read_metrics(small_run / "results.csv")
    tt = task.teacher_theta.numpy()
    x = np.random.default_rng(1).standard_normal((100_000, cfg.d))
    y = np.maximum(x @ tt[:, 1:].T, 0).mean(-1)
    with np.load(small_run / io.PARTICLES) as z:
        np.testing.assert_array_equal(z["teacher_theta"], tt)
        for k, N in enumerate(res["N"].astype(int)):
            th = z[f"theta_N{N}"]
            assert th.shape == (4, N, 5)
            for b in range(4):
                sq = (y - np.maximum(x @ th[b, :, 1:].T, 0) @ th[b, :, 0] / N) ** 2
                gap = res[f"gap_r{b}"][k]
                assert abs(sq.mean() - gap) < 4 * sq.std() / np.sqrt(len(sq)) + 1e-9, (N, b, sq.mean(), gap)


def test_iid_constant_is_the_excess_risk_of_iid_draws(gen):
    """(1/N)[∫U(θ,θ)dρ − ∬U dρdρ] is E R(ρ_N) − R(ρ) for θ_i i.i.d. from ρ: here ρ = the
    teacher's law (R(ρ) = 0), so 400 draws of N = 6 teacher units must average K/N."""
    cfg = ns.Config.build(None, ["scale=small", "m0=300"])
    task = ns.teacher_task(cfg)
    tt = task.teacher_theta
    K = float(decay.iid_constant(task, tt[None])[0])
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
    progress, done, current = runner.load_records(crashed)
    assert not progress["finished"] and list(done) == ["N=8"] and current.key == "N=15"
    assert progress == {"phases_done": 1, "phases": 3, "phase": "N=15", "step": 20, "steps": 40,
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
