"""The life of a run: experiments are declarations the runner runs, one snapshot layout and
one meaning of a checkpoint's progress for all of them, independent derived seeds, the memory
check; what a commit writes (a checkpoint of constant size, rows and snapshots appended to the
phase's records) and what a run's status says; and an experiment added from outside in one
file and one registration line.  (What a run refuses: test_run_refusals.py; interruptions:
test_run_interruptions.py.)
"""
from __future__ import annotations

import ast
import csv
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from meanfield import io, runner, store
from meanfield.errors import ConfigError
from meanfield.experiments import EXPERIMENTS, get_experiment
from meanfield.seeds import derive_generator, derive_seed

REPO = Path(__file__).resolve().parents[1]

TINY = {name: list(get_experiment(name).TINY) for name in EXPERIMENTS}   # each declares its own


def test_every_experiment_is_a_declaration():
    """No experiment module runs itself: each holds NAME, Config and plan (and FIGURES, VIEWS,
    warmup), never a ``run`` function nor a direct checkpoint write (``meanfield.store`` is
    the one writer)."""
    assert set(TINY) == set(EXPERIMENTS)
    for name in EXPERIMENTS:
        exp = get_experiment(name)
        assert exp.NAME == name and callable(exp.plan) and not hasattr(exp, "run"), name
    for path in (REPO / "meanfield").rglob("*.py"):
        if path.name == "io.py":
            continue
        calls = [n for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.Call)
                 and getattr(n.func, "attr", getattr(n.func, "id", None)) == "save_checkpoint"]
        assert not calls or path.name == "store.py", path           # one writer of checkpoints


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("all")
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    out = {}
    try:
        for name, sets in TINY.items():
            exp = get_experiment(name)
            exp_plot = getattr(exp, "FIGURES", None)
            cfg = exp.Config.build(None, sets)
            out[name] = (cfg, runner.run(exp, cfg, root / name, progress=False), exp_plot)
    finally:
        torch.set_num_threads(n)
    return root, out


@pytest.mark.parametrize("name", sorted(TINY))
def test_one_snapshot_layout_and_one_progress(runs, name):
    root, out = runs
    cfg, res, _ = out[name]
    d = root / name
    snaps = io.read_snapshots(d)
    assert snaps, name
    prog, done, current = runner.load_records(d)
    assert prog["finished"] and current is None and prog["phases_done"] == prog["phases"] == len(done)
    assert prog["steps"] == cfg.steps
    assert runner.describe_progress(prog).startswith(f"finished: {prog['phases']} phase")
    keys = list(done)
    extendable = "steps" in cfg.resume_mutable
    for s in snaps:
        assert s["phase"] in keys
        K = len(s["t"])
        assert K >= 1 and s["step"].shape == (K,) and s["theta"].shape[0] == K, (name, s["phase"])
        assert (np.diff(s["step"]) > 0).all() and (np.diff(s["t"]) > 0).all()
        # the snapshot arrays are the runner's snapshots of that phase, in order (a finished run
        # that cannot be extended keeps them in particles.npz only, and drops its records)
        kept = done[s["phase"]].snaps
        if extendable:
            assert [x.step for x in kept] == list(s["step"])
            last = kept[-1].value
            last = last.numpy() if isinstance(last, torch.Tensor) else last
            np.testing.assert_array_equal(s["theta"][-1], last[0] if s["theta"].ndim == last.ndim else last)
            # every phase's last snapshot is its final state
            assert s["step"][-1] == max(r["step"] for r in done[s["phase"]].rows)
        else:
            assert kept == [] and not (d / store.RECORDS).exists()
    # the metrics rows start at step 0 of every phase and end at its last step
    for key, rec in done.items():
        steps = [r["step"] for r in rec.rows]
        assert not extendable or (steps[0] == 0 and steps == sorted(steps)), (name, key)
    for f in (d / io.FIGURES).iterdir():
        assert f.suffix == ".png" and f.stat().st_size > 1000


def test_seeds_are_derived_independently_and_reproducibly():
    assert derive_seed(0, "N", 20) == derive_seed(0, "N", 20)
    seeds = {derive_seed(s, *k) for s in range(50) for k in [("N", 20), ("N", 21), ("eval",), ("eval", 20)]}
    assert len(seeds) == 200                                # no collisions among 200 streams
    # the old offsets collided: seed 7919's main stream was seed 0's evaluation stream
    assert derive_seed(7919) != derive_seed(0, "eval")
    assert 0 <= derive_seed(2 ** 63 - 1, -5, "x") < 2 ** 64
    a = torch.rand(1000, generator=derive_generator(3, "N", 100))
    b = torch.rand(1000, generator=derive_generator(3, "N", 101))
    assert abs(float(torch.corrcoef(torch.stack([a, b]))[0, 1])) < 0.15
    # a stream does not depend on which other streams a run holds
    assert torch.equal(torch.rand(5, generator=derive_generator(1, "N", 63)),
                       torch.rand(5, generator=derive_generator(1, "N", 63)))
    with pytest.raises(TypeError):
        derive_seed(0, 1.5)


def test_multi_n_seeds_do_not_depend_on_the_grid():
    """The system at one N starts from the same particles whichever other N the grid holds
    (chaos-rate's systems used to share cfg.seed: each N a prefix of one draw)."""
    from meanfield.experiments import chaos_rate, n_scaling

    a = chaos_rate.build(chaos_rate.Config.build(None, ["scale=small"]), 20)[2].theta
    b = chaos_rate.build(chaos_rate.Config.build(None, ["scale=small", "N_min=20", "N=40"]), 20)[2].theta
    c = chaos_rate.build(chaos_rate.Config.build(None, ["scale=small"]), 60)[2].theta
    assert torch.equal(a, b) and not torch.equal(a, c[:, :20])
    cfg = n_scaling.Config.build(None, ["scale=small"])
    from meanfield.dynamics import gradient_flow

    dyn = gradient_flow(n_scaling.teacher_task(n_scaling.Config.build(None, ["scale=small", "m0=2"])), dt=1.0)
    s1, s2 = n_scaling.initial_state(cfg, dyn, 8), n_scaling.initial_state(cfg, dyn, 16)
    assert not torch.equal(s1.theta, s2.theta[:, :8])


def test_memory_estimate_scales_with_the_config():
    from meanfield.experiments import teacher_student as ts

    small = runner.memory_needed(ts.Config.build(None, ["N=100"]))
    big = runner.memory_needed(ts.Config.build(None, ["N=100000"]))
    assert 500 < big / small < 2000
    f64 = runner.memory_needed(ts.Config.build(None, ["N=100000", "dtype=float64"]))
    assert math.isclose(f64 / big, 2, rel_tol=0.2)
    sgd = runner.memory_needed(ts.Config.build(None, ["N=100", "drift=sgd", "batch_size=10000000"]))
    assert sgd > 100 * small


# ---- what a commit writes -------------------------------------------------------------------
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


def _stopping_at(exp, step: int):
    """A plan function for ``exp`` whose dynamics raise KeyboardInterrupt at ``step`` (after
    the commit before it)."""
    real = exp.plan

    def plan_stopping(cfg):
        p = real(cfg)
        phases = p.phases

        def stopping(shared):
            for ph in phases(shared):
                build = ph.build

                def build_stopping(build=build):
                    dyn, state = build()
                    move = dyn.step

                    def step_or_stop(st):
                        if st.step == step:
                            raise KeyboardInterrupt
                        return move(st)
                    dyn.step = step_or_stop
                    return dyn, state
                ph.build = build_stopping
                yield ph
        p.phases = stopping
        return p

    return plan_stopping


def test_status_says_absent_resumable_or_finished(tmp_path, monkeypatch):
    exp = get_experiment("teacher-student")
    out = tmp_path / "r"
    assert runner.status(out) == "absent"
    out.mkdir()
    assert runner.status(out) == "absent"                     # an empty directory holds no run
    cfg = exp.Config.build(None, [*SETS, "N=20", "steps=20"])
    plan_stopping_at_10 = _stopping_at(exp, 15)               # stops after the step-10 commit
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


def _as_format2(run_dir: Path) -> None:
    """Rewrite a run directory in the earlier layout: every row and snapshot inside a
    checkpoint of format 2, no records, and config.json and the checkpoint without the keys
    added since (alpha, centred)."""
    import json
    import shutil

    ck = io.load_checkpoint(run_dir / io.CHECKPOINT)
    progress, done, current = runner.load_records(run_dir)

    def entry(rec):
        return {"columns": rec.columns, "rows": rec.rows, "snaps": [tuple(x) for x in rec.snaps],
                "state": rec.state, "result": rec.result, "generators": rec.generators}

    config = {k: v for k, v in ck["config"].items() if k not in ("alpha", "centred")}
    io.save_checkpoint(run_dir / io.CHECKPOINT, {
        "format": 2, "experiment": ck["experiment"], "config": config, "shared": {},
        "done": {k: entry(r) for k, r in done.items()},
        "current": None if current is None else {"key": current.key, **entry(current)},
        "progress": progress, "finished": ck["finished"], "summary": []})
    shutil.rmtree(run_dir / store.RECORDS)
    rec = json.loads((run_dir / io.CONFIG).read_text())
    rec["config"] = config
    (run_dir / io.CONFIG).write_text(json.dumps(rec))


def test_a_run_of_the_earlier_layout_resumes_bit_for_bit(tmp_path, monkeypatch):
    """A run interrupted at step 10 whose directory has the earlier layout (format-2
    checkpoint, no records, a config without the keys added since) shows, resumes in the
    current layout and ends exactly where an uninterrupted run ends."""
    exp = get_experiment("teacher-student")
    cfg = exp.Config.build(None, [*SETS, "N=20", "steps=20"])
    whole, old = tmp_path / "whole", tmp_path / "old"
    runner.run(exp, cfg, whole, progress=False)
    monkeypatch.setattr(exp, "plan", _stopping_at(exp, 15))
    with pytest.raises(KeyboardInterrupt):
        runner.run(exp, cfg, old, progress=False)
    monkeypatch.undo()
    _as_format2(old)
    assert io.load_checkpoint(old / io.CHECKPOINT)["format"] == 2
    assert "step 10 of 20" in runner.describe(old)
    runner.resume(old, progress=False)
    assert io.load_checkpoint(old / io.CHECKPOINT)["format"] == store.FORMAT
    assert (old / io.METRICS).read_bytes() == (whole / io.METRICS).read_bytes()
    a, b = io.read_npz(old / io.PARTICLES), io.read_npz(whole / io.PARTICLES)
    assert set(a) == set(b) and all(np.array_equal(a[k], b[k]) for k in a)
