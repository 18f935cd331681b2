"""Strong scaling of one simulation sharded over P gloo ranks: time per step of
population GD on the ReLU teacher–student task (N² pair terms per step) against P and the
threads per rank, with the communication per step.

    python -m benchmarks.shard --n 20000 --configs 1x1 1x2 2x1 --steps 5 \
        --json benchmarks/results/shard.json

A config ``PxT`` is P ranks of T torch threads each (the native pair loop runs on T
threads).  All configs run in one spawned group of max(P) processes
(``meanfield.distributed.spawn``): a config with fewer ranks runs on a subgroup while the
other ranks wait.  Rank 0 first times the unsharded ``ParticleDynamics`` ("unsharded", all
cores) for reference and for the bitwise check.

Per config: seconds per step (median/min/max over ``--steps`` timed steps after one
warm-up step; rank 0's wall clock, which includes waiting for the other ranks), rank 0's
CPU seconds per step (median; all its threads — the per-rank cost N²/P shows here even
when other processes share the cores and blur the wall clock), seconds
per step inside collectives on rank 0 ("comm s"; all-gather of positions + the one-number
divergence all-reduce, waiting included), bytes each rank receives per step (counted by
``Comm``: (P − 1) shards of ⌈N/P⌉ rows × D float32 numbers, + 4 for the flag), pair terms
per rank per step (n_r · N), the speed-up over ``1x1`` and over "unsharded" measured in the
same run, and whether the final θ equals the unsharded one bitwise.
"""
from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time

import torch

from meanfield import distributed
from meanfield.dynamics import ParticleDynamics
from meanfield.dynamics.sharded import Comm, ShardedDynamics
from meanfield.models import TeacherStudent, Unit

from .common import machine, print_table, summarise, write_json

COLUMNS = [("config", "config", "s"), ("N", "N", "d"), ("ranks", "shards", "d"),
           ("threads/rank", "threads_per_rank", "d"), ("median s", "median_s", ".4g"),
           ("min s", "min_s", ".4g"), ("max s", "max_s", ".4g"), ("CPU s", "cpu_s", ".4g"),
           ("comm s", "comm_s", ".3g"),
           ("recv KB/step/rank", "recv_kb_per_step", ".1f"), ("pairs/rank", "pairs_per_rank", ".3g"),
           ("× vs 1x1", "speedup_vs_1x1", ".2f"), ("× vs unsharded", "speedup_vs_unsharded", ".2f"),
           ("bitwise", "bitwise_equal", "")]


def problem(N: int, d: int, m0: int = 4):
    """(dynamics, θ0 [1, N, 1 + d] float32): population GD (dt = 0.2) on a ReLU teacher of m0
    units, a_i ~ N(0, 1), w_i ~ N(0, I_d / d) — the teacher-student main job at size N."""
    g = torch.Generator().manual_seed(0)
    task = TeacherStudent.random(Unit(d, "relu"), m0, generator=g)
    std = torch.tensor([1.0] + [1 / math.sqrt(d)] * d)
    theta = (torch.randn(1, N, d + 1, generator=g, dtype=torch.float64) * std).float()
    return ParticleDynamics(task, dt=0.2, backend="torch"), theta


def parse_config(s: str) -> tuple[int, int]:
    try:
        p, t = (int(x) for x in s.lower().split("x"))
    except ValueError:
        raise SystemExit(f"--configs: expected PxT (e.g. 2x1), got {s!r}") from None
    if p < 1 or t < 1:
        raise SystemExit(f"--configs: P and T must be >= 1, got {s!r}")
    return p, t


def _timed_steps(dyn, state, steps):
    state, _ = dyn.step(state)                                         # warm-up (builds the loop)
    times, cpu = [], []
    for _ in range(steps):
        t0, c0 = time.perf_counter(), time.process_time()
        state, _ = dyn.step(state)
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return state, times, statistics.median(cpu)


def _rank(world: Comm, N, d, steps, configs):
    """On every rank of the spawned group: the unsharded reference (rank 0), then each config
    on the subgroup of its first P ranks.  Rank 0 returns the rows."""
    import torch.distributed as dist

    rows = []
    ref = None
    if world.rank == 0:
        torch.set_num_threads(len(os.sched_getaffinity(0)))
        dyn, theta = problem(N, d)
        state, times, cpu = _timed_steps(dyn, dyn.init(theta, seed=1), steps)
        ref = state.theta
        rows.append({"config": "unsharded", "N": N, "d": d, "shards": 1,
                     "threads_per_rank": torch.get_num_threads(), **summarise(times),
                     "cpu_s": cpu, "comm_s": 0.0, "recv_kb_per_step": 0.0, "pairs_per_rank": float(N * N),
                     "bitwise_equal": True})
    world.barrier()
    for P, T in configs:
        group = dist.new_group(ranks=list(range(P)))                  # every rank calls this
        if world.rank < P:
            torch.set_num_threads(T)
            comm = Comm(group)
            dyn, theta = problem(N, d)
            sdyn = ShardedDynamics(dyn, comm)
            state = sdyn.init(theta, seed=1)
            state, _ = sdyn.step(state)                                # warm-up
            comm.stats.clear()
            times, cpu = [], []
            for _ in range(steps):
                t0, c0 = time.perf_counter(), time.process_time()
                state, _ = sdyn.step(state)
                times.append(time.perf_counter() - t0)
                cpu.append(time.process_time() - c0)
            stats = {k: list(v) for k, v in comm.stats.items()}
            full, _ = sdyn.gather(state)
            if world.rank == 0:
                lo, hi = sdyn.rows
                rows.append({"config": f"{P}x{T}", "N": N, "d": d, "shards": P,
                             "threads_per_rank": T, **summarise(times),
                             "cpu_s": statistics.median(cpu),
                             "comm_s": sum(v[2] for v in stats.values()) / steps,
                             "recv_kb_per_step": sum(v[1] for v in stats.values()) / steps / 1e3,
                             "pairs_per_rank": float((hi - lo) * N),
                             "comm_calls_per_step": {k: v[0] / steps for k, v in stats.items()},
                             "bitwise_equal": bool(torch.equal(full.theta, ref))})
        world.barrier()
    if world.rank == 0:
        base = {r["config"]: r["median_s"] for r in rows}
        for r in rows:
            r["speedup_vs_1x1"] = base["1x1"] / r["median_s"] if "1x1" in base else None
            r["speedup_vs_unsharded"] = base["unsharded"] / r["median_s"]
    return rows


def run(N: int, d: int, steps: int, configs):
    ranks = max(P for P, _ in configs)
    return distributed.spawn(_rank, ranks, N, d, steps, configs, timeout=600)


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.shard", description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=20_000)
    p.add_argument("--d", type=int, default=10)
    p.add_argument("--configs", nargs="+", default=["1x1", "1x2", "2x1"],
                   help="PxT: P ranks of T threads each")
    p.add_argument("--steps", type=int, default=5, help="timed steps per config (after 1 warm-up)")
    p.add_argument("--json", default=None, help="write the results here")
    p.add_argument("--quiet", action="store_true")
    a = p.parse_args(argv)
    configs = [parse_config(c) for c in a.configs]
    info = machine()
    if not a.quiet:
        print(f"sharded population GD, N={a.n}, d={a.d}: configs {a.configs}", file=sys.stderr)
    rows = run(a.n, a.d, a.steps, configs)
    info["loadavg_at_end"] = os.getloadavg()
    print_table(rows, COLUMNS)
    payload = {"benchmark": "shard", "machine": info, "results": rows}
    if a.json:
        write_json(a.json, payload)
    return payload


if __name__ == "__main__":
    main()
