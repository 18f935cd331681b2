"""What a run refuses, and how: every break a hostile user found in the seam between
experiments and runs, as a test.  Each refused command must exit 2 with one line and leave
every file of the run byte-identical (hashes of every file, hidden ones included).

1. a rejected resume changes nothing;  2. corruption is detected (byte flips in θ, in the
generator state, anywhere in the checkpoint or particles.npz);  3. shape keys cannot change
on resume;  4. steps cannot go below the checkpoint;  5. locks (run vs resume, sweep vs
sweep);  6. huge sweep grids are refused before they are expanded;  7. one line and exit 2
instead of tracebacks;  8. the smaller items (empty --out, show on a file, a bogus
--metric, a sweep's exit status with failed points, the divergence message, a run killed
while drawing its figures)."""
from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meanfield import io, runner, store
from meanfield.cli import main

TINY = ["--set", "N=20", "--set", "d=3", "--set", "steps=20", "--set", "backend=torch",
        "--set", "log_every=5", "--set", "save_every=10", "--set", "checkpoint_every=5",
        "--no-progress"]


def files(d: Path) -> dict:
    """{relative path: sha256} of every file under ``d`` (hidden files included)."""
    return {str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(d.rglob("*")) if p.is_file()}


def cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def refused(capsys, needle, *argv, before=None, where=None):
    """Run the CLI, expect exit 2 with one line containing ``needle`` and (when ``before``)
    every file of ``where`` unchanged."""
    code, out, err = cli(capsys, *argv)
    assert code == 2, (code, err)
    assert needle in err, err
    assert err.count("\n") == 1 and err.startswith("meanfield: error:") and "Traceback" not in err
    if before is not None:
        assert files(where) == before
    return err


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished teacher-student run (20 steps, a checkpoint every 5)."""
    out = tmp_path_factory.mktemp("hostile") / "A"
    assert main(["run", "teacher-student", "--out", str(out), *TINY]) == 0
    return out


@pytest.fixture
def run_a(finished, tmp_path):
    """A fresh copy of the finished run."""
    out = tmp_path / "A"
    shutil.copytree(finished, out)
    return out


# ---- 1, 3, 4: the resume rule ---------------------------------------------------------------
@pytest.mark.parametrize("sets, needle", [
    (["d=5", "steps=40"], "d cannot change on resume"),                            # item 1
    (["output_weight=false"], "output_weight cannot change on resume"),
    (["N=30"], "N cannot change on resume"),                                       # item 3
    (["replicas=2"], "replicas cannot change on resume"),
    (["dtype=float64"], "dtype cannot change on resume"),
    (["steps=10"], "steps can only grow on resume"),                               # item 4
    (["steps=0"], "steps must be >= 1"),
    (["seed=1"], "seed cannot change on resume"),
    (["nonsense=1"], "unknown config key 'nonsense'"),
    ([], "already finished"),
])
def test_a_refused_resume_changes_no_file(run_a, capsys, sets, needle):
    before = files(run_a)
    argv = ["resume", str(run_a)]
    for s in sets:
        argv += ["--set", s]
    refused(capsys, needle, *argv, before=before, where=run_a)
    assert runner.describe(run_a).count("finished") == 1


def test_steps_below_an_unfinished_checkpoint_are_refused(tmp_path, capsys, stop_after_phases):
    """A run stopped at step 4380 of 5000 cannot be 'resumed' to steps=1000 (it used to be
    accepted and `show` printed "step 4380 of 1000 (finished)")."""
    out = tmp_path / "B"
    from meanfield.dynamics import ParticleDynamics

    real = ParticleDynamics.step

    def crash(self, state, **kw):
        if state.step == 13:
            raise KeyboardInterrupt
        return real(self, state, **kw)

    ParticleDynamics.step = crash
    try:
        assert main(["run", "teacher-student", "--out", str(out), *TINY]) == 130
    finally:
        ParticleDynamics.step = real
    capsys.readouterr()
    before = files(out)
    err = refused(capsys, "steps can only grow", "resume", str(out), "--set", "steps=10",
                  before=before, where=out)
    assert "at step 10" in err
    assert "phase 1 of 1 (main): step 10 of 20" in runner.describe(out)
    assert cli(capsys, "resume", str(out), "--set", "steps=30")[0] == 0
    assert "finished: 1 phase of 30 steps" in runner.describe(out)


def test_mutable_keys_do_change_on_resume(run_a, capsys):
    assert cli(capsys, "resume", str(run_a), "--set", "steps=30", "--set", "dt=0.1",
               "--set", "log_every=2")[0] == 0
    rec = json.loads((run_a / io.CONFIG).read_text())["config"]
    assert (rec["steps"], rec["dt"], rec["log_every"]) == (30, 0.1, 2)
    ck = io.load_checkpoint(run_a / io.CHECKPOINT)
    assert ck["config"] == rec and ck["progress"]["steps"] == 30 and ck["finished"]
    # the extended phase's records hold every row once: the old final row at step 20 was
    # dropped (a "truncate" chunk) and recorded again as an ordinary row
    _, done, _ = runner.load_records(run_a)
    assert [r["step"] for r in done["main"].rows] == [0, 5, 10, 15, 20, 22, 24, 26, 28, 30]
    steps = io.read_metrics(run_a / io.METRICS)["step"]
    assert list(steps) == [0, 5, 10, 15, 20, 22, 24, 26, 28, 30]


# ---- 2: integrity ---------------------------------------------------------------------------
def _offsets_of(blob: bytes, data: bytes) -> tuple[int, int]:
    """The byte range of ``data`` (a tensor's storage, saved uncompressed) in ``blob``."""
    i = blob.find(data)
    assert i >= 0
    return i, i + len(data)


def _member_data(path: Path) -> list[tuple[int, int]]:
    """Byte ranges of the (compressed) array data of every member of an npz file."""
    import struct
    import zipfile

    raw = path.read_bytes()
    out = []
    with zipfile.ZipFile(path) as z:
        for info in z.infolist():
            h = info.header_offset
            n, m = struct.unpack("<HH", raw[h + 26:h + 30])
            start = h + 30 + n + m
            out.append((start, start + info.compress_size))
    return out


def test_every_byte_flip_is_detected(finished, tmp_path, capsys):
    """Byte flips at random offsets in θ, in the generator state and anywhere else in the
    checkpoint (its checksum covers every byte after its header line, the header holds the
    checksum), anywhere in a chunk of the phase's records (rows and snapshots, checksummed
    the same way), and in the data of particles.npz's arrays (its checksum covers the arrays'
    names, dtypes, shapes and values): resume, show and plot all exit 2 naming the
    corruption, and nothing is written (100 % of 75 flips)."""
    ck = io.load_checkpoint(finished / io.CHECKPOINT)
    state = ck["phases"]["main"]["state"]
    blob = (finished / io.CHECKPOINT).read_bytes()
    theta = _offsets_of(blob, state["theta"].numpy().tobytes())
    gen = _offsets_of(blob, state["generator"].numpy().tobytes())
    chunks = sorted((finished / store.RECORDS).glob("*.pt"))
    assert len(chunks) >= 2
    rng = random.Random(7)
    cases = ([("ck", rng.randrange(*theta)) for _ in range(15)]
             + [("ck", rng.randrange(*gen)) for _ in range(15)]
             + [("ck", rng.randrange(len(blob))) for _ in range(15)]
             + [(f"{store.RECORDS}/{rng.choice(chunks).name}", -1) for _ in range(15)]
             + [("npz", None) for _ in range(15)])
    members = _member_data(finished / io.PARTICLES)
    detected = 0
    for n, (what, off) in enumerate(cases):
        d = tmp_path / f"c{n}"
        shutil.copytree(finished, d)
        path = d / {"ck": io.CHECKPOINT, "npz": io.PARTICLES}.get(what, what)
        raw = bytearray(path.read_bytes())
        if off is None:                         # inside the data of a random array
            off = rng.randrange(*members[rng.randrange(len(members))])
        elif off == -1:                         # anywhere in a chunk of records
            off = rng.randrange(len(raw))
        raw[off] ^= 1 << rng.randrange(8)
        path.write_bytes(bytes(raw))
        before = files(d)
        for argv in (["resume", str(d), "--set", "steps=40", "--no-progress"], ["show", str(d)],
                     ["plot", str(d)]):
            code, _, err = cli(capsys, *argv)
            assert code == 2 and "corrupted" in err and err.count("\n") == 1, (what, off, argv, err)
        assert files(d) == before
        detected += 1
    assert detected == len(cases)


def test_a_checkpoint_holding_another_payload_is_refused(run_a, capsys):
    torch.save({"theta": torch.zeros(3)}, run_a / io.CHECKPOINT)
    before = files(run_a)
    refused(capsys, "not a meanfield checkpoint", "resume", str(run_a), "--set", "steps=40",
            before=before, where=run_a)
    refused(capsys, "not a meanfield checkpoint", "show", str(run_a))


# ---- 5: locks -------------------------------------------------------------------------------
def _popen(*argv):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    return subprocess.Popen([sys.executable, "-m", "meanfield", *argv], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _wait_for(path, p, timeout=60):
    t0 = time.time()
    while not path.exists():
        assert p.poll() is None, p.communicate()
        assert time.time() - t0 < timeout
        time.sleep(0.02)


def test_a_running_run_is_locked_against_resume_and_run(tmp_path, capsys):
    out = tmp_path / "C"
    p = _popen("run", "teacher-student", "--out", str(out), "--set", "N=300", "--set", "d=5",
               "--set", "steps=1000000", "--set", "backend=torch", "--set", "checkpoint_every=50",
               "--no-progress")
    try:
        _wait_for(out / io.CHECKPOINT, p)
        err = refused(capsys, "is in use by another meanfield process", "resume", str(out))
        assert f"pid {p.pid}" in err
        refused(capsys, "already holds a run", "run", "teacher-student", "--out", str(out), *TINY)
        assert not list(out.glob(".*.tmp")) or p.poll() is None      # its temporaries untouched
    finally:
        p.terminate()
        _, perr = p.communicate(timeout=60)
    assert p.returncode == 143 and b"terminated" in perr          # SIGTERM: a clean stop
    io.DirectoryLock(out).acquire().release()                    # the lock is free again


def test_a_sweep_directory_is_locked(tmp_path, capsys):
    out = tmp_path / "S"
    args = ["sweep", "teacher-student", "--grid", "seed=0:3", "--set", "N=300", "--set", "d=5",
            "--set", "steps=3000", "--set", "backend=torch", "--workers", "0", "--out", str(out),
            "--no-progress"]
    p = _popen(*args)
    try:
        _wait_for(out / "sweep.json", p)
        err = refused(capsys, "is in use by another meanfield process", *args)
        assert f"pid {p.pid}" in err
    finally:
        p.terminate()
        p.communicate(timeout=60)


# ---- 6: grids -------------------------------------------------------------------------------
def test_a_huge_grid_is_refused_before_it_is_expanded(tmp_path, capsys):
    out = tmp_path / "S"
    t0 = time.perf_counter()
    refused(capsys, "the grid has 100000000 points, more than --max-points 100000", "sweep",
            "teacher-student", "--grid", "seed=0:100000000", "--out", str(out))
    refused(capsys, "more than --max-points 100000", "sweep", "teacher-student",
            "--grid", "seed=0:1000", "--grid", "N=1:1000", "--out", str(out))
    assert time.perf_counter() - t0 < 5 and not out.exists()
    refused(capsys, "more than --max-points 3", "sweep", "teacher-student", "--grid", "seed=0:4",
            "--max-points", "3", "--out", str(out))


# ---- 7: one line instead of a traceback -------------------------------------------------------
@pytest.mark.parametrize("sets, needle", [
    (["N=1000000000"], "needs about"),
    (["d=1000000000"], "needs about"),
    (["m0=10000000000"], "needs about"),
    (["drift=sgd", "batch_size=1000000000000"], "needs about"),
    (["seed=99999999999999999999"], "seed must fit in a 64-bit integer"),
    (["N=-99999999999999999999"], "N must fit in a 64-bit integer"),
    (["dt=1e400"], "dt must be a finite number"),
])
def test_sizes_that_cannot_fit_are_refused_before_anything_is_written(tmp_path, capsys, sets, needle):
    out = tmp_path / "r"
    argv = ["run", "teacher-student", "--out", str(out)]
    for s in sets:
        argv += ["--set", s]
    err = refused(capsys, needle, *argv)
    assert not out.exists()
    if needle == "needs about":
        assert "this machine has" in err


def test_out_paths_the_system_refuses(tmp_path, capsys, monkeypatch):
    f = tmp_path / "f"
    f.write_text("a file")
    refused(capsys, "is a file, not a directory", "run", "teacher-student", "--out", str(f / "sub"), *TINY)
    refused(capsys, "exists and is not a directory", "run", "teacher-student", "--out", str(f), *TINY)
    refused(capsys, "/proc/x", "run", "teacher-student", "--out", "/proc/x", *TINY)
    refused(capsys, "--out: must name a directory", "run", "teacher-student", "--out", "", *TINY)
    refused(capsys, "--out: must name a directory", "sweep", "teacher-student", "--grid", "seed=0:2",
            "--out", "")
    refused(capsys, "must name a directory", "resume", " ")
    # an unwritable parent, as a non-root user sees it (root may write anywhere)
    ro = tmp_path / "ro"
    ro.mkdir()
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if str(p).startswith(str(ro)) else real(p, mode))
    refused(capsys, "not writable", "run", "teacher-student", "--out", str(ro / "x"), *TINY)
    refused(capsys, "not writable", "sweep", "teacher-student", "--grid", "seed=0:2", "--set", "N=20",
            "--out", str(ro / "s"), "--workers", "0")
    monkeypatch.undo()
    assert list(ro.iterdir()) == [] and f.read_text() == "a file"


@pytest.mark.parametrize("edit, needle", [
    (lambda c: {**c, "experiment": "mmn-isotropic"}, "unknown config key"),
    (lambda c: {**c, "experiment": "no-such"}, "unknown experiment 'no-such'"),
    (lambda c: {**c, "config": {**c["config"], "bogus": 1}}, "unknown config key 'bogus'"),
    (lambda c: {**c, "config": {**c["config"], "N": 25}}, "does not match its checkpoint"),
    (lambda c: {**c, "config": {**c["config"], "N": "twenty"}}, "N must be an integer"),
    (lambda c: [c], "is not a meanfield run config"),
    (lambda c: {"config": c["config"]}, "is not a meanfield run config"),
])
def test_an_edited_config_json_is_refused(run_a, capsys, edit, needle):
    rec = json.loads((run_a / io.CONFIG).read_text())
    (run_a / io.CONFIG).write_text(json.dumps(edit(rec)))
    before = files(run_a)
    for cmd in (["resume", str(run_a), "--set", "steps=40"], ["show", str(run_a)], ["plot", str(run_a)]):
        refused(capsys, needle, *cmd, before=before, where=run_a)


def test_broken_files_of_a_run_are_one_line_errors(run_a, capsys, tmp_path):
    # config.json that is a directory
    d = tmp_path / "D"
    shutil.copytree(run_a, d)
    (d / io.CONFIG).unlink()
    (d / io.CONFIG).mkdir()
    refused(capsys, "is a directory, not a file", "show", str(d))
    err = refused(capsys, "is a directory, not a file", "resume", str(d))
    assert io.CONFIG in err and (d / io.CONFIG).is_dir()          # names the file, leaves it
    # garbage metrics.csv: show and plot say so
    (run_a / io.METRICS).write_text("step,t,risk\n0,0,abc\n")
    refused(capsys, "metrics.csv is corrupted", "show", str(run_a))
    refused(capsys, "metrics.csv is corrupted", "plot", str(run_a))
    (run_a / io.METRICS).write_bytes(b"\xff\xfe\x00garbage")
    refused(capsys, "metrics.csv is unreadable or corrupted", "show", str(run_a))
    # a truncated particles.npz
    raw = (run_a / io.PARTICLES).read_bytes()
    (run_a / io.PARTICLES).write_bytes(raw[: len(raw) // 2])
    refused(capsys, "particles.npz is corrupted", "plot", str(run_a))
    refused(capsys, "particles.npz is corrupted", "show", str(run_a))
    assert (run_a / io.PARTICLES).read_bytes() == raw[: len(raw) // 2]   # nothing rewritten


def test_figures_that_is_a_file(run_a, capsys):
    shutil.rmtree(run_a / io.FIGURES)
    (run_a / io.FIGURES).write_text("not a directory")
    before = files(run_a)
    refused(capsys, "figures is a file, not a directory", "plot", str(run_a), before=before, where=run_a)
    refused(capsys, "figures is a file, not a directory", "resume", str(run_a), "--set", "steps=40",
            before=before, where=run_a)
    assert (run_a / io.FIGURES).read_text() == "not a directory"


# ---- 8: the smaller items ---------------------------------------------------------------------
def test_show_and_plot_of_a_file_or_nothing(tmp_path, capsys):
    f = tmp_path / "f.txt"
    f.write_text("x")
    refused(capsys, "is a file, not a run directory", "show", str(f))
    refused(capsys, "does not exist", "show", str(tmp_path / "nothing"))
    refused(capsys, "is a file, not a run directory", "resume", str(f))
    assert f.read_text() == "x" and not (tmp_path / "nothing").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.txt"]


@pytest.mark.parametrize("workers", [["--workers", "0"], []])
def test_a_bogus_metric_is_refused_before_the_sweep_runs(tmp_path, capsys, workers):
    """In this process or on a Dask cluster (refused before it starts): one measured row of
    the first point says which columns there are; nothing is written."""
    out = tmp_path / "S"
    t0 = time.perf_counter()
    err = refused(capsys, "--metric 'bogus' is not a column", "sweep", "teacher-student",
                  "--grid", "seed=0:3", "--set", "N=20", "--set", "d=3", "--set", "steps=5",
                  "--set", "backend=torch", *workers, "--metric", "bogus", "--out", str(out),
                  "--no-progress")
    assert "risk" in err and "velocity_sq" in err               # names the columns there are
    assert not out.exists() and time.perf_counter() - t0 < 15


def test_divergence_names_the_command_that_recovers_with_half_the_step(tmp_path, capsys):
    diverge = ["--set", "N=20", "--set", "d=3", "--set", "backend=torch", "--set", "dt=1e30",
               "--set", "steps=40", "--no-progress"]
    code, _, err = cli(capsys, "run", "teacher-student", "--out", str(tmp_path / "a"), *diverge,
                       "--set", "checkpoint_every=100")
    assert code == 3 and "DIR" not in err and err.count("\n") == 1
    assert "no checkpoint was written" in err and "last checkpoint kept" not in err
    assert f"start it again from step 0 with a smaller step: meanfield resume {tmp_path / 'a'} --set dt=5e+29" in err
    code, _, err = cli(capsys, "run", "teacher-student", "--out", str(tmp_path / "b"), *diverge,
                       "--set", "checkpoint_every=1")
    assert code == 3 and "last checkpoint kept: phase 1 of 1 (main): step" in err
    assert f"continue with a smaller step: meanfield resume {tmp_path / 'b'} --set dt=5e+29" in err
    code, _, err = cli(capsys, "run", "n-scaling", "--out", str(tmp_path / "c"), "--set", "scale=small",
                       "--set", "m0=50", "--set", "dt=1e30", "--set", "steps=20",
                       "--set", "checkpoint_every=1", "--no-progress")
    assert code == 3 and "last checkpoint kept" in err and "dt cannot change on resume here" in err
    assert "start again in a new directory with a smaller step (--set dt=5e+29)" in err
    assert "meanfield resume" not in err


def test_the_suggested_resume_recovers_a_diverged_squared_loss_run(tmp_path, capsys):
    """dt = 2 (the logistic loss's default) diverges for the squared loss: the message names
    `meanfield resume DIR --set dt=1`, and resuming that directory with a smaller step runs
    it to the end, no new directory needed."""
    out = tmp_path / "sq"
    small = ["--set", "loss=squared", "--set", "steps=40", "--set", "log_every=10",
             "--set", "save_every=20", "--no-progress"]
    code, _, err = cli(capsys, "run", "dataset", "--out", str(out), "--set", "dt=2", *small)
    assert code == 3 and err.count("\n") == 1 and f"meanfield resume {out} --set dt=1" in err
    code, stdout, err = cli(capsys, "resume", str(out), "--set", "dt=0.02", "--no-progress")
    assert code == 0, err
    assert io.read_metrics(out / io.METRICS)["step"][-1] == 40 and runner.status(out) == "finished"


def test_a_run_killed_while_drawing_figures_is_completed_by_plot(tmp_path, capsys, monkeypatch):
    import meanfield.plotting as plotting

    out = tmp_path / "F"

    def killed(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(plotting, "plot_run", killed)
    assert main(["run", "teacher-student", "--out", str(out), *TINY]) == 130
    monkeypatch.undo()
    capsys.readouterr()
    assert not list((out / io.FIGURES).glob("*.png"))
    err = refused(capsys, "already finished", "resume", str(out))
    assert f"meanfield plot {out}" in err
    code, stdout, _ = cli(capsys, "plot", str(out))
    assert code == 0 and "risk.png" in stdout and (out / io.FIGURES / "risk.png").exists()


def test_two_dask_sweeps_at_once_print_no_stray_warnings(tmp_path):
    """Two local Dask sweeps side by side (each scheduler serves HTTP: the second used to
    print "Port 8787 is already in use"), then nothing on stderr but nothing."""
    def argv(name):
        return [sys.executable, "-m", "meanfield", "sweep", "teacher-student", "--grid", "seed=0:2",
                "--set", "N=20", "--set", "d=3", "--set", "steps=100", "--set", "backend=torch",
                "--workers", "2", "--out", str(tmp_path / name), "--no-progress"]

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    first = subprocess.Popen(argv("S1"), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    second = subprocess.run(argv("S2"), env=env, capture_output=True, text=True, timeout=300)
    out1, err1 = first.communicate(timeout=300)
    for code, out, err in ((first.returncode, out1, err1), (second.returncode, second.stdout, second.stderr)):
        assert code == 0, err
        assert err.strip() == "", err
        assert "2 of 2 runs ok" in out


# ---- the fuzz: random resume --set keys and values ---------------------------------------------
_VALUES = st.one_of(st.integers(-3, 50), st.sampled_from(["0", "1e400", "-1", "nan", "inf", "abc", "",
                                                           "float64", "float16", "torch", "numpy",
                                                           "true", "relu", "erf", "sgd",
                                                           "99999999999999999999", "10", "40", "0.05"]))
_KEYS = st.sampled_from(["N", "d", "steps", "dt", "seed", "backend", "dtype", "replicas", "log_every",
                         "save_every", "checkpoint_every", "shards", "m0", "activation", "drift",
                         "batch_size", "beta", "lam", "n_mc", "output_weight", "nonsense", ""])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(_KEYS, _VALUES), max_size=3))
def test_fuzzed_resume_sets_are_applied_consistently_or_change_nothing(finished, tmp_path_factory, sets):
    d = tmp_path_factory.mktemp("fuzz") / "A"
    shutil.copytree(finished, d)
    before = files(d)
    argv = ["resume", str(d), "--no-progress"]
    for k, v in sets:
        argv += ["--set", f"{k}={v}"]
    code = main(argv)
    if code == 2:                                      # refused: nothing changed
        assert files(d) == before
        return
    rec = json.loads((d / io.CONFIG).read_text())["config"]
    ck = io.load_checkpoint(d / io.CHECKPOINT)
    assert ck["config"] == rec                         # config.json says what the run holds
    if code == 3:                                      # diverged (a larger dt): checkpoint intact
        assert runner.load_run(d)[2] is not None
        return
    assert code == 0, (sets, code)
    assert ck["finished"]
    with np.load(d / io.PARTICLES) as z:
        theta = z["theta"]
    assert theta.shape[-2] == rec["N"] and theta.dtype == np.dtype(rec["dtype"])
    assert io.read_metrics(d / io.METRICS)["step"][-1] == rec["steps"]


def test_resume_refuses_a_run_whose_data_file_changed(tmp_path, capsys):
    """A dataset run records its data's checksum; editing the file and resuming would train the
    rest of the run on other data: refused, nothing written."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 3))
    data = tmp_path / "d.npz"
    np.savez(data, X=X, y=np.sign(X[:, 0] + 0.1))
    out = tmp_path / "D"
    assert main(["run", "dataset", "--set", f"data={data}", "--set", "loss=logistic", "--set", "N=20",
                 "--set", "steps=10", "--set", "save_every=5", "--no-progress", "--out", str(out)]) == 0
    np.savez(data, X=X + 1.0, y=np.sign(X[:, 0] + 0.1))
    before = files(out)
    refused(capsys, "changed since the run started", "resume", str(out), "--set", "steps=20",
            before=before, where=out)


# ---- 9. more hostile cases: one line, exit 2, nothing written ----------------------------------
SWEEP_TINY = ["--set", "N=20", "--set", "d=3", "--set", "steps=5", "--set", "backend=torch", "--no-progress"]


def test_a_grid_range_past_64_bits_is_refused_before_it_is_expanded(tmp_path, capsys):
    out = tmp_path / "S"
    refused(capsys, "the grid has 18446744073709551616 points, more than --max-points", "sweep",
            "teacher-student", "--grid", "seed=0:18446744073709551616", "--out", str(out))
    refused(capsys, "more than --max-points", "sweep", "teacher-student",
            "--grid", "seed=0:-99999999999999999999999:-7", "--out", str(out))
    assert not out.exists()


def test_a_scheduler_address_that_is_no_address_is_refused(tmp_path, capsys):
    out = tmp_path / "S"
    refused(capsys, "cannot reach the Dask scheduler at garbage:// (ValueError: unknown address scheme",
            "sweep", "teacher-student", "--grid", "seed=0:2", *SWEEP_TINY, "--scheduler", "garbage://",
            "--out", str(out))
    assert not out.exists()


@pytest.mark.parametrize("experiment", ["linear-obstruction", "resnet-rkhs"])
def test_threads_below_zero_are_refused_before_anything_is_written(tmp_path, capsys, experiment):
    out = tmp_path / "r"
    refused(capsys, "threads must be >= 0, got -1", "run", experiment, "--set", "scale=small",
            "--set", "threads=-1", "--out", str(out))
    assert not out.exists()


def test_a_directory_stuck_with_a_refused_value_is_clearly_refused(tmp_path, capsys):
    """An earlier version wrote config.json and figures/ before refusing threads=-1: resume
    (with or without a fix), show, plot and animate name config.json and the way out, and
    change nothing."""
    from meanfield.experiments import get_experiment

    stuck = tmp_path / "lo"
    (stuck / io.FIGURES).mkdir(parents=True)
    cfg = get_experiment("linear-obstruction").Config.build(None, ["scale=small"]).to_dict()
    io.write_json(stuck / io.CONFIG, io.run_record("linear-obstruction", {**cfg, "threads": -1}, {}), strict=True)
    (stuck / io.LOCK).touch()                           # as the refused run left it
    before = files(stuck)
    for cmd in (["resume", str(stuck)], ["resume", str(stuck), "--set", "threads=1"], ["show", str(stuck)],
                ["plot", str(stuck)], ["animate", str(stuck)]):
        err = refused(capsys, f"remove {stuck} and run it again", *cmd, before=before, where=stuck)
        assert f"{stuck / io.CONFIG}: threads must be >= 0, got -1" in err


def test_workers_beyond_the_machine_are_refused_before_a_cluster_starts(tmp_path, capsys):
    out = tmp_path / "S"
    t0 = time.perf_counter()
    err = refused(capsys, "--workers 1000000000 needs about", "sweep", "teacher-student",
                  "--grid", "seed=0:2", *SWEEP_TINY, "--workers", "1000000000", "--out", str(out))
    assert "this machine has" in err and "at most" in err
    assert time.perf_counter() - t0 < 10 and not out.exists()


# every size-like key besides N, d and replicas, found by setting each integer key of every
# experiment to 10⁹: each is bounded by the memory check (n_values first by the N grid)
SIZE_KEYS = [("mmn-isotropic", "pde_cells"), ("mmn-isotropic", "n_iid"), ("chaos-rate", "n_values"),
             ("chaos-rate", "n_boot"), ("n-scaling", "n_values"), ("n-scaling", "n_boot"),
             ("cb-relu2d", "n_train"), ("cb-relu2d", "n_snap"), ("cb-threshold", "m0"),
             ("mfld-torus", "n_targets"), ("mfld-torus", "modes"), ("pde2d-teacher", "n_values"),
             ("pde2d-teacher", "cells"), ("pde2d-teacher", "w2_sub"), ("pde2d-teacher", "n_boot"),
             ("pde2d-torus", "n_targets"), ("pde2d-torus", "modes"), ("resnet-limit", "n_train"),
             ("resnet-limit", "n_test"), ("resnet-rkhs", "n_pairs"), ("lazy-vs-meanfield", "n_boot")]


@pytest.mark.parametrize("experiment, key", SIZE_KEYS)
def test_every_size_like_key_is_bounded_like_N(tmp_path, capsys, monkeypatch, experiment, key):
    monkeypatch.setenv("MEANFIELD_MEMORY_LIMIT", "16e9")
    out = tmp_path / "r"
    t0 = time.perf_counter()
    err = refused(capsys, f"{key}", "run", experiment, "--set", "scale=small", "--set", f"{key}=1000000000",
                  "--out", str(out))
    assert f"{key}=1000000000" in err or f"{key} must be <=" in err
    assert ("needs about" in err and "this machine has 16 GB" in err) or key == "n_values"
    assert time.perf_counter() - t0 < 20 and not out.exists()


def test_a_grid_of_a_size_like_key_is_bounded_before_the_sweep_runs(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MEANFIELD_MEMORY_LIMIT", "16e9")
    out = tmp_path / "S"
    refused(capsys, "n_boot=1000000000", "sweep", "n-scaling", "--set", "scale=small",
            "--grid", "n_boot=100,1000000000", "--workers", "0", "--out", str(out))
    refused(capsys, "n_values must be <= N - N_min + 1", "sweep", "n-scaling", "--set", "scale=small",
            "--grid", "n_values=3,1000000000", "--workers", "0", "--out", str(out))
    assert not out.exists()


def test_a_geometric_N_grid_has_three_values_once_N_exceeds_N_min_by_two():
    """What lets the multi-N configs check "at least 3 distinct N" without expanding the grid."""
    from meanfield.experiments.config import geometric_grid

    for lo in range(1, 40):
        for hi in list(range(lo + 2, lo + 60)) + [10 * lo + 7, 1000 * lo]:
            for n in (3, 4, 5, 7, 10, 33):
                if n <= hi - lo + 1:
                    assert len(geometric_grid(lo, hi, n)) >= 3, (lo, hi, n)
    assert len(geometric_grid(5, 6, 2)) == 2                    # N − N_min = 1: two at most


@pytest.mark.parametrize("value, needle", [("abc", "N must be an integer, got 'abc'"),
                                           (10 ** 12, "does not match its checkpoint (N: 1000000000000")])
def test_animate_verifies_the_run_directory_as_show_does(run_a, capsys, value, needle):
    rec = json.loads((run_a / io.CONFIG).read_text())
    rec["config"]["N"] = value
    (run_a / io.CONFIG).write_text(json.dumps(rec))
    before = files(run_a)
    for cmd in (["animate", str(run_a), "--no-progress"], ["show", str(run_a)]):
        refused(capsys, needle, *cmd, before=before, where=run_a)


@pytest.mark.parametrize("value", ["2", "1.0001", "0", "-0.5", "nan", "inf"])
def test_a_split_out_of_its_range_is_refused(tmp_path, capsys, value):
    out = tmp_path / "r"
    refused(capsys, "split must be", "run", "resnet-rkhs", "--set", "scale=small", "--set", f"split={value}",
            "--out", str(out))
    assert not out.exists()


def test_a_full_disk_names_the_file(tmp_path, capsys, monkeypatch):
    """ENOSPC on a write (fsync here; a tmpfs filled up in the hostile tests) names the file,
    in the one line of status 2."""
    import errno

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(io.os, "fsync", full)
    out = tmp_path / "r"
    code, _, err = cli(capsys, "run", "teacher-student", "--out", str(out), *TINY)
    monkeypatch.undo()
    assert code == 2 and err.count("\n") == 1, err
    assert err.startswith("meanfield: error: No space left on device (") and f"({out}/" in err
    named = Path(err.split("(")[-1].rstrip(")\n"))
    assert named.parent == out and not named.name.endswith(".tmp")
