"""The life of a run directory: what a commit writes, and what a run's status says.

A checkpoint holds states, generators and progress only (its size does not grow with the
number of steps); rows and snapshots go to the phase's records, appended at every commit,
so the bytes written over a run grow linearly with the number of commits.
"""
from __future__ import annotations

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
