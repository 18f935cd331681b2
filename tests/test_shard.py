"""One simulation sharded over 2 gloo ranks on CPU (meanfield.dynamics.sharded,
meanfield.distributed).

* the sharded step against the unsharded one, scenario by scenario, in one spawned pair of
  ranks (population GD and Langevin with replicas and per-replica weights, float32 native
  and float64 eager pair sums, online and minibatch SGD with noise, Monte Carlo risks, a
  finite dataset, a confining potential, a divergence): bitwise where each particle's sum
  runs in one process, round-off where a sum over particles is split across ranks;
* the run directory of ``meanfield run --set shards=2`` launched by torchrun equals the
  unsharded one byte for byte (metrics.csv) and value for value (particles.npz, checkpoint);
* a rank that dies (exit) or hangs (collective timeout) stops the run with a ShardError and
  its last checkpoint intact, and ``meanfield resume`` — with the same 2 shards (spawned by
  the CLI itself) or with 1 — then finishes it exactly as the uninterrupted run;
* ``runner.run`` of an unregistered experiment (a user's class) sends it to the ranks.

Spawned ranks re-import this module by name: module-level functions only, no computation
at import time.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from meanfield import cli, distributed, io, runner
from meanfield.dynamics import ParticleDynamics
from meanfield.dynamics.sharded import ShardedDynamics, shard_ranges
from meanfield.errors import ConfigError, DivergenceError, ShardError
from meanfield.experiments import teacher_student as ts
from meanfield.experiments.config import TwoLayerConfig
from meanfield.interact import evaluate
from meanfield.models import ConfiningPotential, FiniteDataset, TeacherStudent, Unit

REPO = Path(__file__).resolve().parents[1]
STEPS = 6


# ---------------------------------------------------------------------------- scenarios
def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _scenario(name):
    """(dynamics, θ0 [B, N, D], weights or None, seed) of one scenario, built identically on
    every rank and in the test process."""
    g = _gen(1)
    relu = TeacherStudent.random(Unit(4, "relu"), 3, generator=g)
    erf = TeacherStudent.random(Unit(3, "erf"), 2, generator=g, offset=0.3)
    tanh = TeacherStudent.random(Unit(3, "tanh"), 2, generator=g, noise_std=0.1)
    if name == "gd-f32-replicas":           # population GD, 2 replicas, N not a multiple of 8
        dyn = ParticleDynamics(relu, dt=0.5, backend="torch")
        theta, w = torch.randn(2, 37, 5, generator=g), None
    elif name == "langevin-f32-weights":    # noise, L2, annealed β, per-replica weights
        dyn = ParticleDynamics(relu, dt=0.3, beta="log:50,1", lam=0.01, xi="power:1,0.25,1",
                               backend="torch")
        theta = torch.randn(2, 40, 5, generator=g)
        w = torch.rand(2, 40, generator=g, dtype=torch.float64) + 0.1
        w = (w / w.sum(-1, keepdim=True)).float()
    elif name == "langevin-f64-eager":      # float64: the eager (matmul-tile) pair sums
        dyn = ParticleDynamics(erf, dt=0.3, beta=100.0, backend="torch")
        theta, w = torch.randn(1, 30, 4, generator=g, dtype=torch.float64), None
    elif name == "online-sgd-f64":          # MMN online SGD with noise: f(x_k) all-reduced
        dyn = ParticleDynamics(relu, dt=0.2, drift="sgd", beta=200.0, backend="torch")
        theta, w = torch.randn(2, 24, 5, generator=g, dtype=torch.float64), None
    elif name == "minibatch-sgd-tanh":      # no closed form: Monte Carlo risks
        dyn = ParticleDynamics(tanh, dt=0.2, drift="sgd", batch_size=16, backend="torch")
        theta, w = torch.randn(1, 20, 4, generator=g, dtype=torch.float64), None
    elif name == "dataset-gd":              # a finite dataset's full batch
        X = torch.randn(25, 3, generator=g, dtype=torch.float64)
        task = FiniteDataset(Unit(3, "tanh"), X, torch.sin(X[:, 0]))
        dyn = ParticleDynamics(task, dt=0.3, backend="torch")
        theta, w = torch.randn(1, 18, 4, generator=g, dtype=torch.float64), None
    elif name == "confining-langevin":      # no interaction at all
        dyn = ParticleDynamics(ConfiningPotential(3, 2.0, 0.5), dt=0.05, beta=4.0, lam=0.5)
        theta, w = torch.randn(1, 16, 3, generator=g), None
    elif name == "diverging":               # rank 1's particles overflow at step 0 (×(1 − 2·dt))
        dyn = ParticleDynamics(ConfiningPotential(2, 1.0), dt=100.0)
        theta, w = torch.randn(1, 32, 2, generator=g), None
        theta[:, 16:] *= 1e37
    else:  # pragma: no cover
        raise KeyError(name)
    return dyn, theta, w


SCENARIOS = ("gd-f32-replicas", "langevin-f32-weights", "langevin-f64-eager", "online-sgd-f64",
             "minibatch-sgd-tanh", "dataset-gd", "confining-langevin", "diverging")


def _trajectory(dyn, state, steps, full=lambda s, p=None: (s, p)):
    """θ after each step, the potential seen at θ_0 (whole system) and the generator state."""
    thetas, pot0 = [], None
    for k in range(steps):
        state, info = dyn.step(state)
        if k == 0:
            pot0 = full(state, info.potential)[1] if isinstance(dyn, ShardedDynamics) else info.potential
        thetas.append(full(state)[0].theta.clone())
    return thetas, pot0, state.generator.get_state()


def _risk_of(dyn, state, full):
    """The runner's row evaluation: exact, or Monte Carlo with a fixed generator."""
    g = _gen(99)
    if isinstance(dyn, ShardedDynamics):
        return full(state, dyn.evaluate(state, n_mc=500, generator=g))[1].risk
    return evaluate(dyn.task, state.theta, state.weights, backend=dyn.backend,
                    **({} if dyn.task.has_population else {"n_mc": 500, "generator": g})).risk


def _run_scenarios(comm):
    """Every scenario sharded over this group; rank 0's view of the results."""
    out = {}
    for name in SCENARIOS:
        dyn, theta, w = _scenario(name)
        sdyn = ShardedDynamics(dyn, comm)
        state = sdyn.init(theta, generator=_gen(5), weights=w)
        try:
            thetas, pot0, gstate = _trajectory(sdyn, state, STEPS, sdyn.gather)
            out[name] = {"thetas": thetas, "pot0": pot0, "gen": gstate,
                         "risk": _risk_of(sdyn, state, sdyn.gather), "rows": sdyn.rows}
        except DivergenceError as e:
            out[name] = {"diverged": str(e).split(":")[0]}
    return out


def _reference(name):
    dyn, theta, w = _scenario(name)
    state = dyn.init(theta, generator=_gen(5), weights=w)
    try:
        thetas, pot0, gstate = _trajectory(dyn, state, STEPS)
        return {"thetas": thetas, "pot0": pot0, "gen": gstate,
                "risk": _risk_of(dyn, state, None)}
    except DivergenceError as e:
        return {"diverged": str(e).split(":")[0]}


@pytest.fixture(scope="module")
def sharded_results():
    n = torch.get_num_threads()
    try:
        return distributed.spawn(_run_scenarios, 2, timeout=60)
    finally:
        torch.set_num_threads(n)


# Round-off bounds where a sum over particles is split across ranks: f(x_k) = Σ_i m_i φ_i
# is summed as two partial sums, one rounding of ≈ 1e-16 relative per step in float64,
# carried through 6 steps of the dynamics (measured: ≤ 1.8e-16 relative; bound 1e-12,
# slack for other BLAS builds and for growth along the trajectory).
SPLIT_SUM = {"online-sgd-f64": 1e-12, "minibatch-sgd-tanh": 1e-12, "dataset-gd": 1e-12}


@pytest.mark.parametrize("name", [s for s in SCENARIOS if s != "diverging"])
def test_sharded_steps_match_the_unsharded_dynamics(sharded_results, name, rel_err):
    got, ref = sharded_results[name], _reference(name)
    assert got["rows"] == shard_ranges(ref["thetas"][0].shape[-2], 2)[0]
    # the replicated generator has drawn exactly the unsharded random numbers
    assert torch.equal(got["gen"], ref["gen"])
    if name in SPLIT_SUM:
        for a, b in zip(got["thetas"], ref["thetas"]):
            assert rel_err(a, b) < SPLIT_SUM[name]
        assert rel_err(got["pot0"].grad, ref["pot0"].grad) < SPLIT_SUM[name]
        assert rel_err(got["risk"], ref["risk"]) < SPLIT_SUM[name]
        assert not torch.equal(got["thetas"][0], got["thetas"][-1])      # it moved
    else:
        # each particle's pair sum runs whole in one process: bitwise equal
        for a, b in zip(got["thetas"], ref["thetas"]):
            assert torch.equal(a, b)
        for key in ("psi", "grad", "risk", "V"):
            assert torch.equal(getattr(got["pot0"], key), getattr(ref["pot0"], key)), key
        assert torch.equal(got["risk"], ref["risk"])


def test_a_divergence_is_raised_on_every_rank_at_the_unsharded_step(sharded_results):
    ref = _reference("diverging")
    assert ref["diverged"] == "step 0"          # rank 1's rows only; rank 0's stay finite
    assert sharded_results["diverging"] == ref


def test_shard_ranges_and_config():
    assert shard_ranges(37, 2) == [(0, 24), (24, 37)]        # boundaries on multiples of 8
    assert shard_ranges(10, 3) == [(0, 4), (4, 8), (8, 10)]   # aligning would empty a shard
    for N, P in [(1, 1), (7, 7), (1000, 3), (20_000, 8)]:
        r = shard_ranges(N, P)
        assert r[0][0] == 0 and r[-1][1] == N and all(a[1] == b[0] for a, b in zip(r, r[1:]))
        assert all(hi > lo for lo, hi in r)
    with pytest.raises(ConfigError, match="shards=3"):
        shard_ranges(2, 3)
    with pytest.raises(ConfigError, match="shards must be <= N=4, got 5"):
        ts.Config(N=4, shards=5)
    with pytest.raises(ConfigError, match="shard_timeout"):
        ts.Config.build(None, ["shard_timeout=0"])
    with pytest.raises(ConfigError, match="shards must be >= 1"):
        ts.Config.build(None, ["shards=0"])


def test_cli_refuses_more_shards_than_particles(tmp_path, capsys):
    assert _cli("run", "teacher-student", "--set", "N=4", "--set", "shards=8",
                "--out", str(tmp_path / "c")) == 2
    assert capsys.readouterr().err.strip() == "meanfield: error: shards must be <= N=4, got 8"
    assert not (tmp_path / "c").exists()


# ---------------------------------------------------------------------------- run directories
SETS = ["N=48", "d=4", "m0=2", "steps=40", "dt=0.3", "log_every=5", "save_every=10",
        "checkpoint_every=10", "replicas=2", "beta=300", "lam=0.001"]


def _cli(*argv):
    return cli.main([*argv, "--no-progress"])


def _same_run(a: Path, b: Path):
    assert (a / io.METRICS).read_bytes() == (b / io.METRICS).read_bytes()
    za, zb = np.load(a / io.PARTICLES), np.load(b / io.PARTICLES)
    assert za.files == zb.files
    for k in za.files:
        assert np.array_equal(za[k], zb[k]), k
    (pa, da, _), (pb, db, _) = runner.load_records(a), runner.load_records(b)
    assert pa["finished"] and pb["finished"] and list(da) == list(db) == ["main"]
    ea, eb = da["main"], db["main"]
    assert ea.rows == eb.rows
    for k in ("theta", "generator"):
        assert torch.equal(ea.state[k], eb.state[k]), k
    assert ea.state["weights"] is None and eb.state["weights"] is None
    assert torch.equal(ea.generators["eval"], eb.generators["eval"])


@pytest.fixture(scope="module")
def unsharded_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("shard") / "p1"
    assert _cli("run", "teacher-student", *[f"--set={s}" for s in SETS], "--out", str(out)) == 0
    return out


def test_torchrun_run_directory_equals_the_unsharded_one(unsharded_run, tmp_path):
    out = tmp_path / "p2"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "meanfield", "run", "teacher-student", *[f"--set={s}" for s in SETS],
           "--set=shards=2", "--out", str(out), "--no-progress"]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.count("teacher-student: final risk") == 1          # rank 0 reports
    _same_run(out, unsharded_run)
    rec = json.loads((out / io.CONFIG).read_text())
    assert rec["config"]["shards"] == 2


def _die_at(comm, out, sets, step, how):
    """Run the experiment on this group; rank 1 dies (exit) or hangs at ``step``."""
    if comm.rank == 1:
        orig = ShardedDynamics.step

        def step_(self, state, **kw):
            if state.step == step:
                if how == "exit":
                    os._exit(13)
                time.sleep(600)
            return orig(self, state, **kw)

        ShardedDynamics.step = step_
    cfg = ts.Config.build(None, sets)
    runner.run("teacher-student", cfg, out, progress=False)


@pytest.mark.parametrize("how", ["exit", "hang"])
def test_a_lost_rank_stops_the_run_and_resume_finishes_it(unsharded_run, tmp_path, how, capsys):
    out = tmp_path / "run"
    sets = SETS + ["shards=2"] + (["shard_timeout=2"] if how == "hang" else [])
    t0 = time.perf_counter()
    with pytest.raises(ShardError) as err:
        distributed.spawn(_die_at, 2, out, sets, 25, how, timeout=60)
    waited = time.perf_counter() - t0
    if how == "exit":
        assert "rank 1 exited with status 13" in str(err.value)
    else:   # rank 0's collective timed out after shard_timeout = 2 s; no hang
        assert "rank 0 of 2: all_gather" in str(err.value) and "timed out" in str(err.value).lower()
        assert waited < 30, waited
    ck = io.load_checkpoint(out / io.CHECKPOINT)         # the last checkpoint is intact
    assert ck["progress"]["step"] == 20 and not ck["finished"]
    assert list(io.read_metrics(out / io.METRICS)["step"]) == [0, 5, 10, 15]
    # checkpoints hold the whole system: resume with the same P (the CLI spawns the 2 ranks
    # itself, shards=2 from the run's config) or unsharded finishes the run exactly as the
    # uninterrupted (unsharded) run
    if how == "exit":
        assert _cli("resume", str(out)) == 0
    else:
        assert _cli("resume", str(out), "--set", "shards=1") == 0
    assert "final risk" in capsys.readouterr().out
    _same_run(out, unsharded_run)


@dataclass(frozen=True)
class _LoopConfig(TwoLayerConfig):
    """A user's own experiment's config: the keys of a particle system, shardable."""

    shardable = True


class MyLoop:
    """A user's own experiment, unknown to ``meanfield.experiments``: NAME, Config, plan."""

    NAME = "my-loop"
    Config = _LoopConfig

    @staticmethod
    def plan(cfg):
        from meanfield.experiments.particles import simulation_phase
        from meanfield.experiments.plan import Plan

        def build():
            dyn, theta, _ = _scenario("confining-langevin")
            return dyn, dyn.init(theta, generator=_gen(5))

        phase = simulation_phase(cfg, build, n_mc=100, risk_inf=None)
        return Plan(phases=lambda shared: [phase], arrays={"param_names": np.array(["x", "y", "z"])})


def test_an_unregistered_experiment_shards_through_the_runner(tmp_path):
    """``runner.run`` of an experiment ``meanfield.experiments`` does not know (a class with
    NAME, Config and plan) with shards=2 outside any launcher spawns 2 ranks that rebuild
    it from itself (pickled by reference): the run directory equals the unsharded one."""
    outs = {}
    for P in (1, 2):
        cfg = _LoopConfig(N=40, d=3, steps=12, log_every=3, save_every=6, checkpoint_every=6, shards=P)
        outs[P] = tmp_path / f"p{P}"
        res = runner.run(MyLoop, cfg, outs[P], progress=False)
        assert [r["step"] for r in res.rows] == [0, 3, 6, 9, 12]
    _same_run(outs[1], outs[2])


def test_launcher_environments(monkeypatch):
    """torchrun's and srun's variables name the rank; an sbatch script (no step) and an
    ordinary process are not launched; threads per rank follow the documented order."""
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "SLURM_PROCID", "SLURM_STEP_ID",
                "SLURM_NTASKS", "SLURM_STEP_NUM_TASKS", "SLURM_LOCALID", "SLURM_STEP_NUM_NODES",
                "SLURM_NNODES", "SLURM_CPUS_PER_TASK", "MEANFIELD_THREADS_PER_RANK"):
        monkeypatch.delenv(var, raising=False)
    assert distributed.launcher_env() is None and distributed.is_writer()
    monkeypatch.setenv("SLURM_PROCID", "0")               # inside an sbatch script: no step
    monkeypatch.setenv("SLURM_NTASKS", "8")
    assert distributed.launcher_env() is None
    monkeypatch.setenv("SLURM_STEP_ID", "0")              # a task of `srun --ntasks 8 -N 2`
    monkeypatch.setenv("SLURM_PROCID", "5")
    monkeypatch.setenv("SLURM_LOCALID", "1")
    monkeypatch.setenv("SLURM_STEP_NUM_NODES", "2")
    assert distributed.launcher_env() == {"rank": 5, "world_size": 8, "local_rank": 1,
                                          "local_world_size": 4}
    assert not distributed.is_writer()
    monkeypatch.setenv("RANK", "0")                       # torchrun wins
    monkeypatch.setenv("WORLD_SIZE", "3")
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert distributed.launcher_env()["world_size"] == 3 and distributed.is_writer()
    with pytest.raises(ConfigError, match="shards=2 but the launcher started 3 processes"):
        distributed.group_comm(2)
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "6")
    assert distributed.threads_per_rank(4) == 6
    monkeypatch.setenv("MEANFIELD_THREADS_PER_RANK", "3")
    assert distributed.threads_per_rank(4) == 3
    monkeypatch.setenv("MEANFIELD_THREADS_PER_RANK", "many")
    with pytest.raises(ConfigError, match="MEANFIELD_THREADS_PER_RANK must be an integer"):
        distributed.threads_per_rank(1)
    monkeypatch.delenv("MEANFIELD_THREADS_PER_RANK")
    monkeypatch.delenv("SLURM_CPUS_PER_TASK")
    assert distributed.threads_per_rank(2) == max(1, len(os.sched_getaffinity(0)) // 2)


def test_cli_reports_a_lost_rank_in_one_line_with_status_4(tmp_path, monkeypatch, capsys):
    def lost(*a, **k):
        raise ShardError("sharded run stopped: rank 1 exited with status 13")

    monkeypatch.setattr(runner, "run", lost)
    assert _cli("run", "teacher-student", "--set", "shards=2", "--out", str(tmp_path / "x")) == 4
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["meanfield: sharded run stopped: rank 1 exited with status 13 (last checkpoint "
                   f"kept; continue with `meanfield resume {tmp_path / 'x'}`)"]
