"""The `meanfield` command: run directories, resume, plots, and one-line errors."""
import json

import numpy as np
import pytest
import torch

from meanfield import io, runner
from meanfield.cli import main
from meanfield.dynamics import ParticleDynamics
from meanfield.interact import evaluate
from meanfield.models import TeacherStudent, Unit

SMALL = ["--set", "N=40", "--set", "d=4", "--set", "steps=30", "--set", "backend=torch",
         "--set", "log_every=5", "--set", "save_every=10", "--set", "checkpoint_every=10",
         "--no-progress"]


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_run_writes_the_run_directory_contract(tmp_path, capsys):
    out = tmp_path / "run"
    code, stdout, err = run_cli(capsys, "run", "teacher-student", "--out", str(out), *SMALL)
    assert code == 0, err
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["experiment"] == "teacher-student"
    assert cfg["meanfield_version"]
    assert cfg["config"]["N"] == 40 and cfg["config"]["backend"] == "torch"
    m = io.read_metrics(out / "metrics.csv")
    assert list(m)[:3] == ["step", "t", "risk"]
    np.testing.assert_array_equal(m["step"], np.arange(0, 31, 5))
    np.testing.assert_allclose(m["t"], 0.2 * m["step"], rtol=1e-12)
    with np.load(out / "particles.npz") as z:
        assert z["theta"].shape == (4, 40, 5)           # snapshots at steps 0, 10, 20, 30
        np.testing.assert_allclose(z["t"], [0.0, 2.0, 4.0, 6.0])
        assert list(z["param_names"]) == ["a", "w0", "w1", "w2", "w3"]
        teacher, tw = z["teacher_theta"], z["teacher_weights"]
        theta = z["theta"]
    assert teacher.shape == (4, 5) and tw.shape == (4,)
    # the saved arrays are enough to recompute the recorded risks: by the float64 numpy
    # reference (the run used the torch backend) and, independently of every closed form, by
    # Monte Carlo of E(y − f(x))² with f(x) = mean_i a_i relu(⟨w_i, x⟩), y = Σ_k m*_k relu(⟨w*_k, x⟩)
    task = TeacherStudent(Unit(4, "relu"), teacher, tw)
    x = np.random.default_rng(0).standard_normal((200_000, 4))
    y = np.maximum(x @ teacher[:, 1:].T, 0) @ (tw * teacher[:, 0])
    for k, step in enumerate((0, 10, 20, 30)):
        r = evaluate(task, torch.tensor(theta[k], dtype=torch.float64), backend="numpy").risk
        recorded = m["risk"][list(m["step"]).index(step)]
        assert abs(float(r) - recorded) < 1e-5 * max(1.0, recorded)
        sq = (y - np.maximum(x @ theta[k][:, 1:].T, 0) @ theta[k][:, 0] / theta.shape[1]) ** 2
        assert abs(sq.mean() - recorded) < 4 * sq.std() / np.sqrt(len(sq)), (step, sq.mean(), recorded)
    assert m["risk"][-1] < 0.5 * m["risk"][0]
    assert (out / "figures" / "risk.png").stat().st_size > 1000
    assert "final risk" in stdout


def test_plot_redraws_figures(tmp_path, capsys):
    out = tmp_path / "run"
    assert run_cli(capsys, "run", "teacher-student", "--out", str(out), *SMALL)[0] == 0
    (out / "figures" / "risk.png").unlink()
    code, stdout, _ = run_cli(capsys, "plot", str(out))
    assert code == 0 and (out / "figures" / "risk.png").exists() and "risk.png" in stdout


def test_toml_config_is_read(tmp_path, capsys):
    toml = tmp_path / "c.toml"
    toml.write_text('N = 30\nd = 3\nsteps = 10\nactivation = "erf"\nbackend = "torch"\nbeta = 1e9\n')
    out = tmp_path / "run"
    code, _, err = run_cli(capsys, "run", "teacher-student", "--config", str(toml), "--out", str(out),
                           "--set", "steps=12", "--no-progress")
    assert code == 0, err
    cfg = json.loads((out / "config.json").read_text())["config"]
    assert (cfg["N"], cfg["d"], cfg["steps"], cfg["activation"]) == (30, 3, 12, "erf")


class _Crash(Exception):
    pass


@pytest.mark.parametrize("drift_sets", [[], ["--set", "drift=sgd", "--set", "dt=0.02",
                                             "--set", "beta=200", "--set", "batch_size=4"]])
def test_resume_after_a_crash_is_bit_for_bit(tmp_path, capsys, monkeypatch, drift_sets):
    ref, crashed = tmp_path / "ref", tmp_path / "crashed"
    assert run_cli(capsys, "run", "teacher-student", "--out", str(ref), *SMALL, *drift_sets)[0] == 0

    real_step = ParticleDynamics.step
    calls = {"n": 0}

    def crashing_step(self, state, **kw):
        calls["n"] += 1
        if calls["n"] == 17:          # between the checkpoints at steps 10 and 20
            raise _Crash()
        return real_step(self, state, **kw)

    monkeypatch.setattr(ParticleDynamics, "step", crashing_step)
    with pytest.raises(_Crash):
        main(["run", "teacher-student", "--out", str(crashed), *SMALL, *drift_sets])
    monkeypatch.setattr(ParticleDynamics, "step", real_step)
    ck = io.load_checkpoint(crashed / "checkpoint.pt")
    assert ck["progress"]["step"] == 10 and ck["progress"]["phase"] == "main" and not ck["finished"]
    assert not (crashed / "particles.npz").exists()

    code, _, err = run_cli(capsys, "resume", str(crashed), "--no-progress")
    assert code == 0, err
    assert (ref / "metrics.csv").read_bytes() == (crashed / "metrics.csv").read_bytes()
    with np.load(ref / "particles.npz") as a, np.load(crashed / "particles.npz") as b:
        assert sorted(a.files) == sorted(b.files)
        for k in a.files:
            np.testing.assert_array_equal(a[k], b[k])


def test_resume_can_extend_a_finished_run(tmp_path, capsys):
    out = tmp_path / "run"
    assert run_cli(capsys, "run", "teacher-student", "--out", str(out), *SMALL)[0] == 0
    code, _, err = run_cli(capsys, "resume", str(out))
    assert code == 2 and "already finished" in err
    assert run_cli(capsys, "resume", str(out), "--set", "steps=40", "--no-progress")[0] == 0
    m = io.read_metrics(out / "metrics.csv")
    np.testing.assert_array_equal(m["step"], np.arange(0, 41, 5))


@pytest.mark.parametrize("argv, needle", [
    (["run", "teacher-studnet"], "did you mean 'teacher-student'"),
    (["run", "teacher-student", "--set", "Nn=10"], "did you mean 'N'"),
    (["run", "teacher-student", "--set", "N=abc"], "N must be an integer"),
    (["run", "teacher-student", "--set", "N=-5"], "N must be >= 1"),
    (["run", "teacher-student", "--set", "dt=nan"], "dt must be a finite number"),
    (["run", "teacher-student", "--set", "dt=inf"], "dt must be a finite number"),
    (["run", "teacher-student", "--set", "backend=gpu"], "backend must be one of"),
    (["run", "teacher-student", "--set", "activation=swish"], "activation must be one of"),
    (["run", "teacher-student", "--set", "activation=tanh"], "drift 'population' needs"),
    (["run", "teacher-student", "--set", "xi=power:1"], "takes 3 parameters"),
    (["run", "teacher-student", "--set", "N"], "expects key=value"),
    (["run", "teacher-student", "--config", "/nonexistent.toml"], "does not exist"),
    (["resume", "/nonexistent/run"], "does not exist"),
    (["plot", "/nonexistent/run"], "does not exist"),
    (["frobnicate"], "invalid choice"),
])
def test_bad_input_is_one_line_and_status_2(tmp_path, capsys, argv, needle):
    out = tmp_path / "out"
    if argv[0] == "run":
        argv = argv + ["--out", str(out)]
    code, stdout, err = run_cli(capsys, *argv)
    assert code == 2
    assert needle in err
    assert err.count("\n") == 1 and err.startswith("meanfield: error:")
    assert "Traceback" not in err
    assert not out.exists()       # nothing written


def test_out_dir_holding_a_run_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    assert run_cli(capsys, "run", "teacher-student", "--out", str(out), *SMALL)[0] == 0
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    code, _, err = run_cli(capsys, "run", "teacher-student", "--out", str(out), *SMALL)
    assert code == 2 and "already holds a run" in err
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before


def test_corrupted_run_directory(tmp_path, capsys):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text("{not json")
    code, _, err = run_cli(capsys, "resume", str(bad))
    assert code == 2 and "corrupted" in err
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = run_cli(capsys, "plot", str(empty))
    assert code == 2 and "not a run directory" in err


def test_divergence_exits_3_with_checkpoint_intact(tmp_path, capsys):
    out = tmp_path / "run"
    code, _, err = run_cli(capsys, "run", "teacher-student", "--out", str(out), "--set", "N=20",
                           "--set", "d=3", "--set", "backend=torch", "--set", "dt=1e30",
                           "--set", "steps=40", "--set", "checkpoint_every=1", "--no-progress")
    assert code == 3
    assert err.count("\n") == 1 and "step" in err and "Traceback" not in err
    _, _, current = runner.load_records(out)
    assert torch.isfinite(current.state["theta"]).all()


def test_config_lists_every_key_with_its_default_and_presets(capsys):
    from meanfield.experiments import get_experiment

    assert main(["config", "mmn-isotropic"]) == 0
    out = capsys.readouterr().out.splitlines()
    keys = {line.split()[0]: line for line in out[1:-1]}
    assert out[-1] == "keys that may change on resume: checkpoint_every, backend, shards, shard_timeout"
    cfg = get_experiment("mmn-isotropic").Config
    assert set(keys) == set(cfg.field_types())
    assert "800" in keys["N"] and "(scale=small: 300)" in keys["N"]
    assert main(["config", "no-such-thing"]) == 2
    assert "unknown experiment" in capsys.readouterr().err


def test_every_key_of_every_experiment_says_what_it_means(capsys):
    """`meanfield config EXPERIMENT` prints one line of meaning per key (``Config.key_help``,
    which the docs site's experiments page shows too): none is left undescribed."""
    from meanfield.experiments import get_experiment, names

    undescribed = [(n, k) for n in names() for k, text in get_experiment(n).Config.key_help().items()
                   if not text.strip() or "\n" in text]
    assert not undescribed, undescribed
    for name in names():
        assert main(["config", name]) == 0
        lines = capsys.readouterr().out.splitlines()[1:-1]
        meaning = get_experiment(name).Config.key_help()
        by_key = {line.split()[0]: line for line in lines}
        assert set(by_key) == set(meaning)
        assert all(meaning[k] in line for k, line in by_key.items()), name
    assert main(["config", "dataset"]) == 0
    by_key = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[1:-1]}
    assert "squared or logistic" in by_key["loss"] and "(loss=squared: 0.02)" in by_key["dt"]


def test_sweep_help_shows_ranges_with_a_step(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["sweep", "--help"])
    assert stop.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "KEY=V1,V2|A:B[:STEP]" in text and "'N=100:1000:100' (A:B:STEP, B excluded" in text


@pytest.mark.parametrize("loss, steps", [("squared", 1000), ("logistic", 200)])
def test_the_dataset_defaults_descend_for_both_losses(tmp_path, capsys, loss, steps):
    """The default dt of each loss (logistic 2, squared 0.02) on the default data and N: the
    training risk falls at every recorded row (dt = 2 diverged for the squared loss)."""
    out = tmp_path / loss
    code, _, err = run_cli(capsys, "run", "dataset", "--set", f"loss={loss}", "--set", f"steps={steps}",
                           "--set", "log_every=20", "--set", "save_every=100", "--out", str(out),
                           "--no-progress")
    assert code == 0, err
    cfg = json.loads((out / "config.json").read_text())["config"]
    assert cfg["dt"] == (0.02 if loss == "squared" else 2.0)
    risk = io.read_metrics(out / io.METRICS)["risk"]
    assert np.all(np.diff(risk) < 0) and risk[-1] < 0.3 * risk[0]


def test_a_noisy_run_draws_its_free_energy_and_entropy_on_signed_axes(tmp_path, capsys):
    """teacher-student with finite β records the free energy (negative here) and the entropy:
    plot_run draws both, on signed axes (symmetric-log or linear) that hold every value."""
    import matplotlib

    from meanfield import plotting

    out = tmp_path / "noisy"
    code, _, err = run_cli(capsys, "run", "teacher-student", "--set", "N=50", "--set", "d=3",
                           "--set", "steps=100", "--set", "beta=100", "--set", "lam=0.01",
                           "--set", "backend=torch", "--out", str(out), "--no-progress")
    assert code == 0, err
    m = io.read_metrics(out / io.METRICS)
    assert (m["free_energy"] < 0).any() and (m["free_energy"] > 0).any()
    assert (out / "figures" / "free_energy.png").stat().st_size > 1000
    fig = plotting.plot_free_energy(out)
    f_ax, h_ax = fig.axes
    assert f_ax.get_yscale() in ("symlog", "linear") and h_ax.get_yscale() == "linear"    # signed
    lo, hi = f_ax.get_ylim()
    assert lo < m["free_energy"].min() and hi > m["free_energy"].max()      # every value shown
    matplotlib.pyplot.close(fig)
    quiet = tmp_path / "quiet"
    assert main(["run", "teacher-student", *SMALL, "--out", str(quiet)]) == 0
    assert not (quiet / "figures" / "free_energy.png").exists()              # noiseless: no panel
