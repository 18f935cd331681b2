"""Runs that survive interruptions: SIGKILL at random moments (also mid-checkpoint) and resume gives the
identical final arrays; random configs are either accepted and run, or cleanly rejected."""
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
