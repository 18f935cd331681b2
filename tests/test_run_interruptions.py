"""Runs that survive interruptions: SIGKILL at random moments (also mid-checkpoint) and resume gives the
identical final arrays; random configs are either accepted and run, or cleanly rejected; kills
and Ctrl-C at awkward moments (Dask workers starting, a sharded run's fork server or rank, the
command's imports) end in one line with the documented status."""
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meanfield import io, runner
from meanfield.errors import ConfigError
from meanfield.experiments import get_experiment

ARGS = ["--set", "N=30", "--set", "d=3", "--set", "steps=300", "--set", "backend=torch",
        "--set", "drift=sgd", "--set", "batch_size=2", "--set", "dt=0.01", "--set", "beta=500",
        "--set", "log_every=3", "--set", "save_every=50", "--set", "checkpoint_every=1",
        "--no-progress"]


def _cli(*argv, **kw):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "meanfield", *argv], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)


def _wait_for(path, timeout=60):
    t0 = time.time()
    while not path.exists():
        if time.time() - t0 > timeout:
            raise TimeoutError(path)
        time.sleep(0.01)


# a particle run, a multi-N run and a ResNet run, each with a checkpoint after every step
SIGKILL_RUNS = {
    "teacher-student": ARGS,
    "n-scaling": ["--set", "scale=small", "--set", "m0=300", "--set", "N=60", "--set", "n_values=3",
                  "--set", "steps=60", "--set", "log_every=5", "--set", "checkpoint_every=1",
                  "--set", "n_boot=100", "--no-progress"],
    "resnet-digits": ["--set", "scale=small", "--set", "steps=60", "--set", "log_every=5",
                      "--set", "save_every=20", "--set", "checkpoint_every=1", "--no-progress"],
}


@pytest.mark.parametrize("name", list(SIGKILL_RUNS))
def test_sigkill_and_resume_is_bit_for_bit(tmp_path, name):
    args = SIGKILL_RUNS[name]
    ref, victim = tmp_path / "ref", tmp_path / "victim"
    p = _cli("run", name, "--out", str(ref), *args)
    assert p.wait(timeout=300) == 0, p.stderr.read().decode()

    rng = random.Random(1234)
    p = _cli("run", name, "--out", str(victim), *args)
    kills = 0
    for attempt in range(6):
        # let it get past start-up, then kill it at a random moment; with a checkpoint
        # written after every step, many kills land in the middle of a write
        _wait_for(victim / "config.json")
        time.sleep(rng.uniform(0.05, 0.6))
        if p.poll() is not None:
            break
        p.send_signal(signal.SIGKILL)
        p.wait()
        kills += 1
        p = _cli("resume", str(victim), "--no-progress")
    if p.wait(timeout=300) == 2:
        # the last kill landed while the finished run drew its figures: resume refuses a
        # finished run and names `meanfield plot`, which completes them
        err = p.stderr.read().decode()
        assert "already finished" in err and "meanfield plot" in err, err
        p = _cli("plot", str(victim))
    assert p.wait(timeout=300) == 0, p.stderr.read().decode()
    assert kills >= 1
    assert {f.name for f in (ref / "figures").iterdir()} == {f.name for f in (victim / "figures").iterdir()}
    assert (ref / "metrics.csv").read_bytes() == (victim / "metrics.csv").read_bytes()
    for extra in ("results.csv", "fit.json", "results.json"):
        if (ref / extra).exists():
            assert (ref / extra).read_bytes() == (victim / extra).read_bytes(), extra
    if name == "teacher-student":
        steps = io.read_metrics(victim / "metrics.csv")["step"]
        np.testing.assert_array_equal(steps, np.arange(0, 301, 3))     # no duplicate, no gap
    with np.load(ref / "particles.npz") as a, np.load(victim / "particles.npz") as b:
        assert sorted(a.files) == sorted(b.files)
        for k in a.files:
            np.testing.assert_array_equal(a[k], b[k])
    assert not [f for f in os.listdir(victim) if f.endswith(".tmp")]     # stale temporaries cleaned


def test_resume_before_the_first_checkpoint_restarts_from_step_zero(tmp_path, capsys):
    from meanfield.cli import main

    out = tmp_path / "run"
    small = ["--set", "N=20", "--set", "d=3", "--set", "steps=10", "--set", "backend=torch",
             "--no-progress"]
    assert main(["run", "teacher-student", "--out", str(out), *small]) == 0
    ref = (out / "metrics.csv").read_bytes()
    for f in ("checkpoint.pt", "metrics.csv", "particles.npz"):
        (out / f).unlink()
    assert main(["resume", str(out), "--no-progress"]) == 0
    assert (out / "metrics.csv").read_bytes() == ref


_KEYS = {
    "N": st.one_of(st.integers(-3, 40), st.text(max_size=3), st.floats(allow_nan=True)),
    "d": st.one_of(st.integers(-1, 5), st.booleans()),
    "steps": st.integers(-1, 6),
    "dt": st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([0.05, 0.1])),
    "seed": st.integers(-2, 5),
    "backend": st.sampled_from(["auto", "numpy", "torch", "gpu", ""]),
    "dtype": st.sampled_from(["float32", "float64", "float16"]),
    "replicas": st.integers(-1, 3),
    "activation": st.sampled_from(["relu", "erf", "tanh", "swish"]),
    "drift": st.sampled_from(["population", "sgd", "adam"]),
    "batch_size": st.integers(-1, 4),
    "beta": st.one_of(st.sampled_from(["inf", "100", "linear:50,1", "power:1", "log:x,1"]),
                      st.floats(-1, 1e3)),
    "xi": st.sampled_from(["1", "power:1,0.25,1", "const:", 2.0]),
    "lam": st.floats(-0.1, 0.1),
    "m0": st.integers(0, 4),
    "output_weight": st.one_of(st.booleans(), st.integers(0, 1)),
    "nonsense_key": st.just(1),
}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.dictionaries(st.sampled_from(sorted(_KEYS)), st.none(), max_size=8).flatmap(
    lambda d: st.fixed_dictionaries({k: _KEYS[k] for k in d})))
def test_random_configs_are_accepted_and_run_or_cleanly_rejected(tmp_path_factory, values):
    exp = get_experiment("teacher-student")
    base = {"N": 8, "d": 2, "steps": 3, "backend": "torch", "log_every": 1}
    try:
        cfg = exp.Config.from_mapping({**base, **values}, source="test.toml")
    except ConfigError as e:
        msg = str(e)
        assert msg and "\n" not in msg
        # the message names the offending key
        assert any(k in msg for k in values), (msg, values)
        return
    assert "nonsense_key" not in values          # unknown keys are never accepted
    out = tmp_path_factory.mktemp("run")
    try:
        rows = runner.run(exp, cfg, out / "r", progress=False).rows
    except Exception as e:      # accepted configs must run; only a clean divergence may stop them
        from meanfield.errors import DivergenceError

        assert isinstance(e, DivergenceError), repr(e)
        return
    assert rows[-1]["step"] == cfg.steps


# ---- kills and Ctrl-C at the awkward moments: one line, the documented status -------------------
def _one_line(err: bytes) -> str:
    text = err.decode()
    assert text.count("\n") == 1 and "Traceback" not in text, text
    return text


def test_a_worker_killed_while_the_cluster_starts_is_one_line_and_status_5(tmp_path):
    """Dask's workers die as they start (a sitecustomize that exits in spawned workers):
    "Nanny failed to start" becomes one line, status 5 (a sweep that could not run its
    points; the same command may be run again), and nothing is written."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        "import os, sys\n"
        "if 'spawn_main' in ' '.join(getattr(sys, 'orig_argv', [])) and os.environ.get('KILL_WORKERS'):\n"
        "    os._exit(1)\n")
    out = tmp_path / "S"
    env = {**os.environ, "KILL_WORKERS": "1", "PYTHONPATH": str(site), "OMP_NUM_THREADS": "1"}
    p = subprocess.run([sys.executable, "-m", "meanfield", "sweep", "teacher-student", "--grid", "seed=0:2",
                        "--set", "N=20", "--set", "d=3", "--set", "steps=5", "--set", "backend=torch",
                        "--workers", "2", "--out", str(out), "--no-progress"],
                       env=env, capture_output=True, timeout=300)
    err = _one_line(p.stderr)
    assert p.returncode == 5, err
    assert "could not start its 2 workers" in err and "Nanny failed to start" in err
    assert not out.exists()


def _children(pid):
    import psutil

    try:
        return psutil.Process(pid).children()
    except psutil.NoSuchProcess:
        return []


def _fork_server(p, timeout=120):
    """The fork server of a sharded run's process ``p`` (a child running forkserver.main)."""
    t0 = time.time()
    while time.time() - t0 < timeout and p.poll() is None:
        for c in _children(p.pid):
            try:
                if "forkserver" in " ".join(c.cmdline()):
                    return c
            except Exception:  # noqa: BLE001 — gone meanwhile
                pass
        time.sleep(0.005)
    raise AssertionError(f"no fork server appeared ({p.poll()})")


SHARDED = ["--set", "N=2000", "--set", "d=5", "--set", "steps=3000", "--set", "backend=torch",
           "--set", "shards=2", "--set", "checkpoint_every=20", "--no-progress"]


def test_a_killed_fork_server_of_a_sharded_run_is_one_line_and_status_4(tmp_path):
    out = tmp_path / "sh"
    p = _cli("run", "teacher-student", "--out", str(out), *SHARDED)
    _fork_server(p).kill()                          # while it imports torch for the ranks
    _, err = p.communicate(timeout=300)
    err = _one_line(err)
    assert p.returncode == 4, err
    assert "could not be started" in err and f"meanfield resume {out}" in err
    assert runner.status(out) == "resumable"            # what `meanfield resume` continues


def test_a_killed_rank_is_one_line_and_status_4_without_torch_or_semaphore_noise(tmp_path):
    out = tmp_path / "sh"
    p = _cli("run", "teacher-student", "--out", str(out), *SHARDED)
    server = _fork_server(p)
    _wait_for(out / io.CHECKPOINT, timeout=240)
    ranks = server.children()
    assert len(ranks) == 2
    ranks[-1].kill()
    _, err = p.communicate(timeout=300)
    err = _one_line(err)
    assert p.returncode == 4 and "was killed by signal SIGKILL" in err, err
    assert "Terminating process" not in err and "leaked semaphore" not in err
    assert runner.status(out) == "resumable"


def test_ctrl_c_while_the_command_starts_is_one_line_and_status_130(tmp_path):
    """SIGINT while `meanfield` still imports torch (its library is mapped, the imports go on):
    one line and 130, not a KeyboardInterrupt traceback from importlib; nothing written."""
    out = tmp_path / "r"
    p = _cli("run", "teacher-student", "--out", str(out), "--set", "N=20", "--set", "d=3")
    maps = f"/proc/{p.pid}/maps"
    t0 = time.time()
    while "libtorch" not in open(maps).read():
        assert p.poll() is None and time.time() - t0 < 120
        time.sleep(0.002)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=120)
    err = _one_line(err)
    assert p.returncode == 130 and err == "meanfield: interrupted (nothing was started)\n"
    assert not out.exists()
