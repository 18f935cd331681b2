"""The runner's contract across every experiment: experiments are declarations, one
snapshot layout, one meaning of a checkpoint's progress, independent derived seeds."""
import ast
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from meanfield import io, runner, store
from meanfield.experiments import EXPERIMENTS, get_experiment
from meanfield.seeds import derive_generator, derive_seed

REPO = Path(__file__).resolve().parents[1]

# a few seconds each: every experiment once
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
