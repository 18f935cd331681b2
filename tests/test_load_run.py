"""A run is an object you can load, export and start from: ``meanfield.runs.load_run``,
``meanfield export`` and ``--set init=FILE``.

Every prediction is compared with something computed another way: the user's own
``nn.Sequential``, the task's outputs in the run's standardised units mapped back by hand, or
the export reloaded in a Python that cannot import meanfield.  Refusals are one line, exit
status 2, and leave the run directory (or its absence) unchanged."""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import meanfield as mf
from meanfield.runs import load_run
from meanfield.cli import main
from meanfield.errors import ConfigError

QUICK = ["--set", "log_every=10", "--set", "save_every=10", "--set", "checkpoint_every=20",
         "--no-progress"]
DIABETES = ["--set", "data=sklearn:diabetes", "--set", "loss=squared", "--set", "dt=0.1"]


def files(d: Path) -> dict:
    """{relative path: sha256} of every file under ``d``."""
    return {str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(Path(d).rglob("*")) if p.is_file()}


def user_network(d, N, act=nn.ReLU, bias=True, out_bias=True, seed=0):
    """A network as a user builds it: torch's own initialisation, float32."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d, N, bias=bias), act(), nn.Linear(N, 1, bias=out_bias))


def run_cli(*argv) -> int:
    return main([str(a) for a in argv])


def refused(capsys, *argv) -> str:
    """The one stderr line of a command that must exit 2."""
    capsys.readouterr()
    assert run_cli(*argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("meanfield: error:"), err
    return err


# an isolated Python: no PYTHONPATH, no user site, no site-packages .pth files (so no editable
# meanfield), torch's site-packages on the path by hand
LOADER = r"""
import sys
sys.path.append(sys.argv[1])
try:
    import meanfield
    raise SystemExit("meanfield is importable here")
except ModuleNotFoundError:
    pass
import numpy as np
import torch
from torch import nn
f = torch.load(sys.argv[2], weights_only=True)
N, d = f["state_dict"]["0.weight"].shape
net = nn.Sequential(nn.Linear(d, N), getattr(nn, f["torch_activation"])(), nn.Linear(N, 1))
net.load_state_dict(f["state_dict"])
X = torch.as_tensor(np.load(sys.argv[3]), dtype=net[0].weight.dtype)
with torch.no_grad():
    np.save(sys.argv[4], net(X)[:, 0].double().numpy())
print(f["experiment"], f["step"], "ok")
"""


def predict_without_meanfield(model: Path, X: np.ndarray, tmp: Path) -> np.ndarray:
    site = str(Path(torch.__file__).resolve().parents[1])
    np.save(tmp / "X.npy", X)
    proc = subprocess.run([sys.executable, "-I", "-S", "-c", LOADER, site, str(model),
                           str(tmp / "X.npy"), str(tmp / "pred.npy")],
                          cwd=tmp, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-2000:]
    return np.load(tmp / "pred.npy")


def test_a_users_sequential_trains_on_the_command_line_exports_and_predicts_without_meanfield(
        tmp_path, capsys):
    """The issue's "done when": a user's nn.Sequential file (output bias included) starts a
    command-line run on a regression, the run is exported, and the export — reloaded by a
    Python that cannot import meanfield — predicts in the data's units what the run's own
    module predicts, to float rounding."""
    net = user_network(10, 16)
    torch.save(net, tmp_path / "user.pt")
    out = tmp_path / "run"
    assert run_cli("run", "dataset", *DIABETES, "--set", "bias=true", "--set", "N=16",
                   "--set", f"init={tmp_path / 'user.pt'}", "--set", "steps=40", *QUICK,
                   "--out", out) == 0
    rec = json.loads((out / "config.json").read_text())
    assert rec["init"]["sha256"] == hashlib.sha256((tmp_path / "user.pt").read_bytes()).hexdigest()
    assert rec["config"]["d"] == rec["data"]["d"] == 10
    run = load_run(out)
    X = run.data()["X_test"]
    Xt = torch.as_tensor(X, dtype=torch.float32)
    with torch.no_grad():
        # the run started from the user's function exactly (through the standardisation)
        start, users = run.to_module(0)(Xt)[:, 0], net(Xt)[:, 0]
        assert float((start - users).abs().max()) <= 1e-5 * float(users.abs().max())
        ours = run.to_module()(Xt)[:, 0].double().numpy()
    assert run.metrics["risk"][-1] < 0.2 * run.metrics["risk"][0]         # and it trained
    assert run_cli("export", out, "--out", tmp_path / "model.pt") == 0
    theirs = predict_without_meanfield(tmp_path / "model.pt", X, tmp_path)
    assert np.abs(theirs - ours).max() <= 1e-5 * np.abs(ours).max()
    # predictions are in y's units (diabetes progression ~ 25 … 346), not standardised ones
    assert 50 < np.mean(ours) < 250 and np.mean(np.abs(ours - run.data()["y_test"])) < 80


def test_load_run_reads_config_unit_metrics_measures_and_maps_back_the_standardisation(tmp_path):
    out = tmp_path / "bc"
    assert run_cli("run", "dataset", "--set", "scale=small", "--set", "steps=20", *QUICK,
                   "--set", "replicas=2", "--out", out) == 0
    run = load_run(out)
    assert run.experiment == "dataset" and run.config.d == run.unit.d == 30 and run.replicas == 2
    assert run.unit == mf.Unit(30, "relu", output_weight=True, bias=False)
    assert list(run.steps) == [0, 10, 20] and run.times[-1] == pytest.approx(20 * run.config.dt)
    assert set(run.metrics) >= {"step", "t", "risk", "test_error"} and run.metrics["step"][-1] == 20
    m0, m1 = run.measure(0, replica=1), run.measure(step=20, replica=1)
    assert m0.positions.shape == (50, 31) and not torch.equal(m0.positions, m1.positions)
    assert run.measure(replica=None).positions.shape == (2, 50, 31)
    st = run.standardization
    assert set(st) == {"x_mean", "x_std"} and st["x_std"].shape == (30,)     # labels ±1 unscaled
    D = run.data()
    task = run.task()
    # the task's outputs in standardised units = the module on the data's own units
    f = task.outputs(m1.positions.double())[0].numpy()
    with torch.no_grad():
        g = run.to_module(replica=1, dtype=torch.float64)(torch.as_tensor(D["X"]))[:, 0].numpy()
    assert np.allclose((D["X"] - st["x_mean"]) / st["x_std"], task.X.numpy())
    assert np.abs(f - g).max() < 1e-12 * np.abs(f).max()
    assert run.metrics["risk_r1"][-1] == pytest.approx(float(task.risk(m1.positions)[0]), rel=1e-5)
    with pytest.raises(ConfigError, match="replica must be an integer in \\[0, 1\\]"):
        run.measure(replica=2)
    with pytest.raises(ConfigError, match="no snapshot at step 5; its snapshots are at steps 0, 10, 20"):
        run.measure(step=5)


def test_a_centred_scaled_run_exports_alpha_times_f_minus_f0(tmp_path):
    out = tmp_path / "alpha"
    assert run_cli("run", "dataset", *DIABETES, "--set", "scale=small", "--set", "steps=20",
                   "--set", "alpha=3", "--set", "centred=true", *QUICK, "--out", out) == 0
    run = load_run(out)
    net = run.to_module(dtype=torch.float64)
    assert net[0].weight.shape == (100, 10)                      # N' = 2N: θ_k and θ_0
    task, st = run.task(), run.standardization
    f = lambda k: task.outputs(run.measure(k).positions.double())[0].numpy()   # noqa: E731
    expect = 3.0 * (f(-1) - f(0)) * st["y_std"] + st["y_mean"]
    with torch.no_grad():
        got = net(torch.as_tensor(run.data()["X"]))[:, 0].numpy()
    assert np.abs(got - expect).max() < 1e-9 * np.abs(expect).max()
    with torch.no_grad():                                         # at step 0 it is μ_y exactly
        assert np.allclose(run.to_module(0, dtype=torch.float64)(torch.as_tensor(run.data()["X"])).numpy(),
                           st["y_mean"], rtol=0, atol=1e-9 * abs(st["y_mean"]))


def test_teacher_student_starts_from_a_state_dict_and_its_output_bias_is_a_fixed_offset(tmp_path):
    """A state dict (no activation inside: the run's) whose output bias c = 0.5: the student is
    c + f, trained as f on y − c, so its recorded risk at step 0 is E[(f*(x) − net(x))²]."""
    net = user_network(3, 20, bias=False)
    with torch.no_grad():
        net[2].bias.fill_(0.5)
    torch.save(net.state_dict(), tmp_path / "sd.pt")
    out = tmp_path / "ts"
    assert run_cli("run", "teacher-student", "--set", "N=20", "--set", "d=3", "--set", "steps=20",
                   "--set", "backend=torch", "--set", f"init={tmp_path / 'sd.pt'}", *QUICK,
                   "--out", out) == 0
    run = load_run(out)
    assert run.offset == pytest.approx(0.5) and run.record["init"]["offset"] == pytest.approx(0.5)
    teacher = run.task()
    assert teacher.offset == pytest.approx(-0.5)          # the labels y − c seen by f
    x = torch.randn(200_000, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    with torch.no_grad():
        ystar = teacher.unit.network(x[None], teacher.teacher_theta[None],
                                     teacher.teacher_weights[None])[0]      # y = f*(x)
        mc = float(((ystar - net(x.float())[:, 0].double()) ** 2).mean())
        assert torch.allclose(run.to_module(0)(x[:100].float()), net(x[:100].float()), atol=1e-6)
    assert run.metrics["risk"][0] == pytest.approx(mc, rel=0.02)


def test_resume_refuses_a_changed_init_file_and_changes_nothing(tmp_path, capsys):
    net = user_network(3, 20, bias=False, out_bias=False)
    torch.save(net, tmp_path / "net.pt")
    out = tmp_path / "ts"
    args = ["--set", "N=20", "--set", "d=3", "--set", "steps=20", "--set", "backend=torch",
            "--set", f"init={tmp_path / 'net.pt'}", *QUICK]
    assert run_cli("run", "teacher-student", *args, "--out", out) == 0
    torch.save(user_network(3, 20, bias=False, out_bias=False, seed=1), tmp_path / "net.pt")
    before = files(out)
    err = refused(capsys, "resume", out, "--set", "steps=40", "--no-progress")
    assert "'init' changed since the run started" in err
    assert files(out) == before
    (tmp_path / "net.pt").unlink()
    assert "does not exist" in refused(capsys, "resume", out, "--set", "steps=40", "--no-progress")
    assert files(out) == before


@pytest.mark.parametrize("case,expect", [
    ("N", "has N = 7 hidden units, the teacher-student run has N = 20 (--set N=7)"),
    ("d", "takes d = 4 inputs, the teacher-student run has d = 3"),
    ("act", "its activation is tanh, the teacher-student run's relu (--set activation=tanh)"),
    ("bias", "its hidden layer has biases, the teacher-student run's units have none (--set bias=true)"),
    ("keys", "a state dict of nn.Sequential(nn.Linear(d, N), act, nn.Linear(N, 1)) has the tensors"),
    ("text", "is not a torch file of nn.Sequential"),
    ("missing", "does not exist"),
])
def test_a_mismatching_init_file_is_one_line_naming_the_mismatch(tmp_path, capsys, case, expect):
    f = tmp_path / "net.pt"
    if case == "text":
        f.write_text("not a torch file")
    elif case == "keys":
        torch.save({"W": torch.zeros(20, 3)}, f)
    elif case != "missing":
        torch.save(user_network(4 if case == "d" else 3, 7 if case == "N" else 20,
                                act=nn.Tanh if case == "act" else nn.ReLU,
                                bias=case == "bias"), f)
    out = tmp_path / "ts"
    err = refused(capsys, "run", "teacher-student", "--set", "N=20", "--set", "d=3",
                  "--set", f"init={f}", "--out", out, "--no-progress")
    assert expect in err and not out.exists()


def test_dataset_init_refusals_name_the_standardisation_and_the_offset(tmp_path, capsys):
    f = tmp_path / "net.pt"
    torch.save(user_network(30, 50, bias=False, out_bias=False), f)
    # a network of the raw features seen in standardised ones needs biases ⟨w, μ_x⟩
    err = refused(capsys, "run", "dataset", "--set", "scale=small", "--set", f"init={f}",
                  "--out", tmp_path / "a", "--no-progress")
    assert "the run standardises the features" in err and "(--set bias=true)" in err
    # …and is accepted as it is without standardisation
    assert run_cli("run", "dataset", "--set", "scale=small", "--set", "steps=10", "--set",
                   "standardize=false", "--set", f"init={f}", *QUICK, "--out", tmp_path / "b") == 0
    net = user_network(30, 50, bias=True, out_bias=True)
    torch.save(net, f)
    err = refused(capsys, "run", "dataset", "--set", "scale=small", "--set", "bias=true",
                  "--set", f"init={f}", "--out", tmp_path / "c", "--no-progress")
    assert "a classification run (labels ±1) does not take" in err
    assert not (tmp_path / "a").exists() and not (tmp_path / "c").exists()


def test_an_export_starts_a_run_where_the_exported_one_ended(tmp_path):
    out = tmp_path / "first"
    assert run_cli("run", "dataset", *DIABETES, "--set", "scale=small", "--set", "bias=true",
                   "--set", "steps=20", *QUICK, "--out", out) == 0
    first = load_run(out)
    first.export(tmp_path / "model.pt")
    again = tmp_path / "again"
    assert run_cli("run", "dataset", *DIABETES, "--set", "scale=small", "--set", "bias=true",
                   "--set", "steps=20", "--set", f"init={tmp_path / 'model.pt'}", *QUICK,
                   "--out", again) == 0
    second = load_run(again)
    X = torch.as_tensor(first.data()["X"], dtype=torch.float32)
    with torch.no_grad():
        end, start = first.to_module()(X), second.to_module(0)(X)
    assert float((end - start).abs().max()) < 1e-4 * float(end.abs().max())
    assert second.metrics["risk"][0] == pytest.approx(first.metrics["risk"][-1], rel=1e-4)


def test_export_refusals_are_one_line_and_write_nothing(tmp_path, capsys):
    out = tmp_path / "ts"
    assert run_cli("run", "teacher-student", "--set", "N=20", "--set", "d=3", "--set", "steps=20",
                   "--set", "backend=torch", *QUICK, "--out", out) == 0
    before = files(tmp_path)
    assert "is a directory" in refused(capsys, "export", out, "--out", tmp_path)
    assert "does not exist" in refused(capsys, "export", out, "--out", tmp_path / "no" / "m.pt")
    assert "snapshot index k must be an integer in [-3, 2]" in refused(
        capsys, "export", out, "--out", tmp_path / "m.pt", "--snapshot", "3")
    assert "replica must be an integer in [0, 0]" in refused(
        capsys, "export", out, "--out", tmp_path / "m.pt", "--replica", "1")
    assert "does not exist" in refused(capsys, "export", tmp_path / "nope", "--out", tmp_path / "m.pt")
    assert files(tmp_path) == before


@pytest.mark.parametrize("experiment,expect", [
    ("n-scaling", "has 3 phases"),
    ("linear-obstruction", "not a two-layer network's"),
    ("resnet-limit", "resnet_torch.to_module"),
])
def test_load_run_refuses_runs_it_cannot_read_naming_what_reads_them(tmp_path, experiment, expect):
    from meanfield.experiments import get_experiment

    out = tmp_path / "r"
    sets = [a for s in get_experiment(experiment).TINY for a in ("--set", s)]
    assert run_cli("run", experiment, *sets, "--no-progress", "--out", out) == 0
    with pytest.raises(ConfigError, match=expect) as e:
        load_run(out)
    assert "meanfield.io.read_snapshots" in str(e.value) and "\n" not in str(e.value)
