"""The life of a run directory: what a commit writes, and what a run's status says.

A checkpoint holds states, generators and progress only (its size does not grow with the
number of steps); rows and snapshots go to the phase's records, appended at every commit,
so the bytes written over a run grow linearly with the number of commits.
"""
from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from meanfield import io, runner, store
from meanfield.errors import ConfigError
from meanfield.experiments import get_experiment

SETS = ["N=200", "d=3", "backend=torch", "log_every=5", "save_every=10", "checkpoint_every=10"]


def _run_counting_bytes(tmp_path, monkeypatch, steps: int) -> dict:
    """Run teacher-student for ``steps`` steps; {"checkpoints": [bytes of each checkpoint
    written], "total": bytes written to the run directory by every writer}."""
    counts = {"checkpoints": [], "total": 0}
    write, append = io.atomic_write_bytes, io.append_metrics

    def counting_write(path, data):
        counts["total"] += len(data)
        if Path(path).name == io.CHECKPOINT:
            counts["checkpoints"].append(len(data))
        write(path, data)

    def counting_append(path, rows, columns):
        before = Path(path).stat().st_size
        append(path, rows, columns)
        counts["total"] += Path(path).stat().st_size - before

    monkeypatch.setattr(io, "atomic_write_bytes", counting_write)
    monkeypatch.setattr(io, "append_metrics", counting_append)
    exp = get_experiment("teacher-student")
    monkeypatch.setattr(exp, "FIGURES", lambda run_dir, coords=None: [], raising=False)  # no figures
    cfg = exp.Config.build(None, [*SETS, f"steps={steps}"])
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        runner.run(exp, cfg, tmp_path / f"s{steps}", progress=False)
    finally:
        torch.set_num_threads(n)
    monkeypatch.undo()
    return counts


def test_the_checkpoint_keeps_its_size_and_bytes_written_grow_linearly(tmp_path, monkeypatch):
    """10× the steps at the same cadences: 10× the commits; the last checkpoint is within
    10 % of the short run's and no checkpoint is larger, and the bytes written in all grow
    about 10× (a checkpoint re-serialising every row and snapshot so far grows them about
    as the square of the number of commits: 30× here)."""
    short = _run_counting_bytes(tmp_path, monkeypatch, 100)
    long = _run_counting_bytes(tmp_path, monkeypatch, 1000)
    assert len(long["checkpoints"]) >= 9 * len(short["checkpoints"])
    assert abs(long["checkpoints"][-1] / short["checkpoints"][-1] - 1) < 0.10
    assert max(long["checkpoints"]) <= 1.10 * max(short["checkpoints"])
    ratio = long["total"] / short["total"]
    assert 7 < ratio < 12, ratio


def test_status_says_absent_resumable_or_finished(tmp_path, monkeypatch):
    exp = get_experiment("teacher-student")
    out = tmp_path / "r"
    assert runner.status(out) == "absent"
    out.mkdir()
    assert runner.status(out) == "absent"                     # an empty directory holds no run
    cfg = exp.Config.build(None, [*SETS, "N=20", "steps=20"])
    real = exp.plan

    def plan_stopping_at_10(cfg):                              # stop after the step-10 commit
        p = real(cfg)
        phases = p.phases

        def stopping(shared):
            for ph in phases(shared):
                build = ph.build

                def build_stopping(build=build):
                    dyn, state = build()
                    step = dyn.step

                    def step_or_stop(st):
                        if st.step == 15:
                            raise KeyboardInterrupt
                        return step(st)
                    dyn.step = step_or_stop
                    return dyn, state
                ph.build = build_stopping
                yield ph
        p.phases = stopping
        return p

    monkeypatch.setattr(exp, "plan", plan_stopping_at_10)
    with pytest.raises(KeyboardInterrupt):
        runner.run(exp, cfg, out, progress=False)
    monkeypatch.undo()
    assert runner.status(out) == "resumable"
    progress, done, current = runner.load_records(out)
    assert progress["step"] == 10 and not done and [r["step"] for r in current.rows] == [0, 5]
    runner.resume(out, progress=False)
    assert runner.status(out) == "finished" and runner.status(out, steps=20) == "finished"
    assert runner.status(out, steps=40) == "resumable"
    # a chunk of records that no checkpoint covers (a writer killed before its commit) is
    # never read, and resuming removes it
    (out / store.RECORDS / "0.99.pt").write_bytes(b"junk")
    assert runner.status(out, steps=40) == "resumable"
    runner.resume(out, ["steps=40"], progress=False)
    assert not (out / store.RECORDS / "0.99.pt").exists()
    # a missing chunk is a one-line error, not a status
    next((out / store.RECORDS).glob("0.0.pt")).unlink()
    with pytest.raises(ConfigError, match="missing"):
        runner.status(out)


# ---- an experiment added from outside: one file and one registration line -----------------
TOY_MODULE = '''
"""toy-walk: a user's own experiment, declared in one file: GD of N students on a teacher.

A Config and a plan; the runner, sweeps, movies, `meanfield list`, `meanfield config` and
the documentation site find it through its entry point.
"""
from dataclasses import dataclass

import numpy as np
import torch

from meanfield.dynamics import ParticleDynamics
from meanfield.experiments.config import TwoLayerConfig
from meanfield.experiments.particles import simulation_phase
from meanfield.experiments.plan import Plan
from meanfield.models import TeacherStudent, Unit

NAME = "toy-walk"
VIEWS = ("cloud",)
TINY = ("N=12", "steps=10")


@dataclass(frozen=True)
class Config(TwoLayerConfig):
    """N students in dimension d, ``steps`` GD steps of size dt, a teacher of m0 units."""

    N: int = 12
    d: int = 3
    steps: int = 10
    dt: float = 0.2
    backend: str = "torch"
    log_every: int = 2
    save_every: int = 5
    checkpoint_every: int = 5
    m0: int = 2


def plan(cfg):
    unit = Unit(cfg.d, "relu", output_weight=True)
    task = TeacherStudent.random(unit, cfg.m0, generator=torch.Generator().manual_seed(1))

    def build():
        dyn = ParticleDynamics(task, dt=cfg.dt, backend=cfg.backend)
        g = torch.Generator().manual_seed(cfg.seed)
        theta = torch.randn(cfg.replicas, cfg.N, unit.D, generator=g, dtype=torch.float64)
        return dyn, dyn.init(theta.to(getattr(torch, cfg.dtype)), generator=g)

    phase = simulation_phase(cfg, build, n_mc=100, risk_inf=0.0)
    return Plan(phases=lambda shared: [phase], record={"task": task.to_dict()},
                arrays={"param_names": np.array(task.param_names), **task.arrays()})
'''


@pytest.fixture
def toy_package(tmp_path, monkeypatch):
    """A package outside meanfield holding the toy experiment, registered by one line of its
    entry points (``toy-walk = toy_walk`` in the group ``meanfield.experiments``)."""
    site = tmp_path / "site"
    (site / "toy_pkg-0.1.dist-info").mkdir(parents=True)
    (site / "toy_walk.py").write_text(TOY_MODULE)
    (site / "toy_pkg-0.1.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-pkg\nVersion: 0.1\n")
    (site / "toy_pkg-0.1.dist-info" / "entry_points.txt").write_text(
        "[meanfield.experiments]\ntoy-walk = toy_walk\n")
    monkeypatch.syspath_prepend(str(site))
    return site


def test_an_experiment_in_one_file_and_one_line_runs_resumes_sweeps_animates_and_is_listed(
        toy_package, tmp_path, capsys):
    import sys

    from meanfield.cli import main

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["list"]) == 0
        assert "toy-walk" in capsys.readouterr().out
        assert main(["config", "toy-walk"]) == 0
        shown = capsys.readouterr().out
        assert "m0" in shown and "keys that may change on resume" in shown
        run = tmp_path / "run"
        assert main(["run", "toy-walk", "--out", str(run), "--no-progress"]) == 0
        assert runner.status(run) == "finished"
        assert main(["resume", str(run), "--set", "steps=20", "--no-progress"]) == 0
        steps = io.read_metrics(run / io.METRICS)["step"]
        assert list(steps) == list(range(0, 21, 2))
        assert (run / io.FIGURES / "risk.png").stat().st_size > 1000      # the default figures
        assert main(["animate", str(run), "--frames", "2", "--dpi", "30", "--no-progress"]) == 0
        assert (run / io.FIGURES / "cloud.gif").stat().st_size > 1000
        sw = tmp_path / "sweep"
        assert main(["sweep", "toy-walk", "--grid", "N=6,12", "--grid", "seed=0:2", "--workers", "0",
                     "--out", str(sw), "--no-progress"]) == 0
        rows = [r for r in csv.DictReader(open(sw / "summary.csv"))]
        assert len(rows) == 4 and {r["status"] for r in rows} == {"ok"}
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
        try:
            import build_docs
        finally:
            sys.path.pop(0)
        page = build_docs.experiments_page()
        assert "(experiment-toy-walk)=" in page and "| `m0` | int | `2` |" in page
    finally:
        torch.set_num_threads(n)
    # a broken registration is one clear line naming it
    (toy_package / "toy_walk.py").write_text("raise ImportError('no such thing')\n")
    sys.modules.pop("toy_walk", None)
    assert main(["run", "toy-walk", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "toy-walk" in err and "does not load" in err and err.count("\n") == 1
