"""n-scaling at GPU scale: the `n-scaling` experiment's measurement, extended to large N on a
device, beside the same measurement at small N on the CPU — one process, one call.

    python -m benchmarks.n_scaling --device cuda --n-max 100000 --seeds 16 --json out.json

The experiment (``meanfield.experiments.n_scaling``, docs/design.md §1) trains N particles of the
ReLU teacher–student task (a smooth teacher law of m0 units, R_∞ = 0) by population GD and
fits the rate of the gap R_N(T) − R_∞ = R_N(T) in N.  Experiments run on CPU tensors, so this
script drives the same pieces through the library API: the experiment's teacher
(``n_scaling.teacher_task``), its initial particles (``n_scaling.initial_state``: drawn on the
CPU from a generator derived from (seed, "N", N), then moved to the device — so the CPU and
device runs of one N start from the same particles), ``gradient_flow`` with ``backend``
(default ``auto``: KeOps on CUDA above 2.5·10⁵ pairs), the final risk re-evaluated in float64,
and the slope with its 95 % bootstrap interval by ``meanfield.diagnostics.loglog_rate``.

Defaults: d = 5, m0 = 2000 teacher units (the experiment's small mode; full mode has 20 000),
dt = 1, 300 steps (T = 300), 16 seeds as replicas, N geometric from 10 to 10⁵ (9 values) on
the device and N ≤ 1000 on the CPU.  N values run in increasing order; one whose time,
predicted from the previous N (∝ N² + N·m0 pair terms per step), does not fit in what is left
of --budget-s is recorded as skipped, and a run that reaches the deadline mid-way stops there
(recorded, not fitted).  T is short: at large N the gap R_N(T) approaches the N → ∞ flow's
R_∞(T) > 0 rather than R_∞ = 0, which flattens the slope — reported as it comes, with the
slope over the CPU's range (``fit_cpu_range``) and over N ≥ 1000 (``fit_large_N``) beside the
whole-grid fit, and ``rel_change_last10`` = (R(0.9T) − R(T))/R(T) per N.

JSON: ``device_run`` and ``cpu_run`` (rows per N: seed gaps, mean, s.d., seconds, s/step, the
backend ``auto`` resolved to, peak GPU memory; fits), ``agreement`` (relative difference of the
seed-mean gaps of the two runs at the N both did: the same trajectories up to float32 rounding
and summation order), written after every N.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import replace

import torch

from meanfield.diagnostics import loglog_rate
from meanfield.dynamics import gradient_flow
from meanfield.experiments import n_scaling as ns
from meanfield.interact import evaluate, get_backend

from .common import device_info, machine, write_json


def make_config(a, n_max: int) -> ns.Config:
    """The experiment's Config for this measurement (grid from --n-min to ``n_max``)."""
    n_values = max(3, round(a.points_per_decade * math.log10(n_max / a.n_min)) + 1)
    return ns.Config(N=n_max, N_min=a.n_min, n_values=n_values, d=a.d, replicas=a.seeds, m0=a.m0,
                     dt=a.dt, steps=a.steps, seed=a.seed, backend=a.backend, dtype=a.dtype,
                     log_every=max(1, a.steps // 10), save_every=a.steps, checkpoint_every=a.steps,
                     n_boot=a.n_boot)     # (no run directory here: the cadences are unused)


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def warm_up(cfg, task, device):
    """Compile what the run uses (KeOps formulas in cfg.dtype and float64, native loops) on a
    few particles, so that compilation is not timed: through ``backend`` and, where it could
    resolve to KeOps at a larger N, through KeOps itself."""
    th = torch.randn(cfg.replicas, 8, task.D, generator=torch.Generator().manual_seed(0),
                     dtype=torch.float64)                 # the run's batch shape
    names = {cfg.backend}
    if cfg.backend == "auto" and device.type == "cuda":
        names.add(get_backend("auto", N=10 ** 6, M=10 ** 6, d=cfg.d, device=device).name)
    for name in names:
        for dt in (getattr(torch, cfg.dtype), torch.float64):
            evaluate(task, th.to(device=device, dtype=dt), backend=name)
    _sync(device)


def _fit(grid, gaps, n_boot, seed):
    try:
        return loglog_rate(grid, gaps, n_boot=n_boot, seed=seed)
    except Exception as e:           # fewer than 3 sizes, a zero gap …
        return {"error": f"{type(e).__name__}: {e}"}


def run_grid(cfg, task, grid, device, *, deadline=None, log=print, on_row=None) -> dict:
    """Population GD of ``cfg.replicas`` seeds at every N of ``grid`` on ``device``; rows and fits."""
    device = torch.device(device)
    dyn = gradient_flow(task, dt=cfg.dt, backend=cfg.backend)
    rows, skipped = [], []
    prev = None                                          # (pair terms per step, seconds per step)
    t_run = time.monotonic()
    for N in grid:
        work = cfg.replicas * (N * N + N * cfg.m0)
        left = None if deadline is None else deadline - time.monotonic()
        if prev is not None and left is not None:
            est = prev[1] * work / prev[0] * cfg.steps * 1.1 + 2.0
            if est > left:
                skipped.append({"N": N, "why": f"time budget: predicted {est:.0f} s, {left:.0f} s left"})
                log(f"  N={N}: skipped ({skipped[-1]['why']})")
                continue
        if left is not None and left <= 0:
            skipped.append({"N": N, "why": "time budget used up"})
            continue
        state = ns.initial_state(cfg, dyn, N)            # drawn on the CPU (derived generator)
        state = replace(state, theta=state.theta.to(device))
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        log_k = {int(round(f * cfg.steps)) for f in (0.25, 0.5, 0.9, 1.0)}
        risks = {}
        _sync(device)
        t0 = time.perf_counter()
        stopped = None
        for k in range(cfg.steps):
            if deadline is not None and k % 10 == 0 and time.monotonic() > deadline:
                stopped = k
                break
            state, info = dyn.step(state)
            if k in log_k:
                risks[k] = info.potential.risk.detach()
        _sync(device)
        secs = time.perf_counter() - t0
        done_steps = cfg.steps if stopped is None else stopped
        if stopped is not None:
            skipped.append({"N": N, "why": f"time budget: stopped at step {stopped} of {cfg.steps}"})
            log(f"  N={N}: stopped at step {stopped} ({secs:.1f} s)")
            break
        pot = evaluate(task, state.theta.double(), backend=cfg.backend)      # float64 re-evaluation
        _sync(device)
        gap = pot.risk.cpu().numpy().astype(float)                           # R_∞ = 0
        final32 = dyn.potential(state).risk
        r90 = float(risks[int(round(0.9 * cfg.steps))].double().mean()) if int(round(0.9 * cfg.steps)) in risks else None
        rT = float(final32.double().mean())
        row = {"N": N, "gap_mean": float(gap.mean()), "gap_sd": float(gap.std(ddof=1)) if len(gap) > 1 else None,
               "gaps": gap.tolist(), "seconds": secs, "s_per_step": secs / max(done_steps, 1),
               "pairs_per_step": work, "backend": get_backend(cfg.backend, N=N, M=N, d=cfg.d, device=device).name,
               "risk_t": {str(k * cfg.dt): float(v.double().mean()) for k, v in sorted(risks.items())},
               "rel_change_last10": (r90 - rT) / rT if r90 is not None and rT > 0 else None}
        if device.type == "cuda":
            row["peak_cuda_mb"] = torch.cuda.max_memory_allocated(device) / 2 ** 20
        rows.append(row)
        prev = (work, row["s_per_step"])
        log(f"  N={N} ({device.type}, {row['backend']}): gap {row['gap_mean']:.4g} ± {row['gap_sd'] or 0:.2g}, "
            f"{secs:.1f} s ({row['s_per_step'] * 1e3:.3g} ms/step)")
        if on_row is not None:
            on_row(rows, skipped)
    return {"device": device.type, "rows": rows, "N_done": [r["N"] for r in rows],
            "N_skipped": skipped, "seconds": time.monotonic() - t_run}


def add_fits(run: dict, cfg, cpu_n_max: int, large_n_min: int = 1000) -> dict:
    rows = run["rows"]
    sel = lambda f: ([r["N"] for r in rows if f(r["N"])], [r["gaps"] for r in rows if f(r["N"])])  # noqa: E731
    run["fit"] = _fit(*sel(lambda n: True), cfg.n_boot, cfg.seed)
    if cpu_n_max:
        run["fit_cpu_range"] = _fit(*sel(lambda n: n <= cpu_n_max), cfg.n_boot, cfg.seed)
    run["fit_large_N"] = _fit(*sel(lambda n: n >= large_n_min), cfg.n_boot, cfg.seed)
    return run


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.n_scaling", description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--n-min", type=int, default=10)
    p.add_argument("--n-max", type=int, default=100_000, help="largest N on the device")
    p.add_argument("--points-per-decade", type=float, default=2.0)
    p.add_argument("--cpu-n-max", type=int, default=None,
                   help="the CPU run covers the grid's N up to this (0: no CPU run; default 1000, "
                        "or 0 when --device is the CPU)")
    p.add_argument("--seeds", type=int, default=16)
    p.add_argument("--d", type=int, default=5)
    p.add_argument("--m0", type=int, default=2000)
    p.add_argument("--dt", type=float, default=1.0)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--backend", default="auto")
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    p.add_argument("--n-boot", type=int, default=2000)
    p.add_argument("--budget-s", type=float, default=None,
                   help="total seconds; the CPU run gets --cpu-share of them, first")
    p.add_argument("--cpu-share", type=float, default=0.15)
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    log = lambda s: print(s, file=sys.stderr, flush=True)                  # noqa: E731
    t0 = time.monotonic()
    deadline = None if a.budget_s is None else t0 + a.budget_s
    device = torch.device(a.device)
    cfg = make_config(a, a.n_max)
    task = ns.teacher_task(cfg)
    grid = cfg.grid()
    if a.cpu_n_max is None:
        a.cpu_n_max = 0 if device.type == "cpu" else 1000
    cpu_grid = [n for n in grid if n <= a.cpu_n_max]
    info = {**machine(), **device_info(device)}
    payload = {"benchmark": "n-scaling", "machine": info,
               "config": {"d": cfg.d, "m0": cfg.m0, "teacher_std_min": cfg.teacher_std_min, "dt": cfg.dt,
                          "steps": cfg.steps, "T": cfg.steps * cfg.dt, "seeds": cfg.replicas,
                          "seed": cfg.seed, "backend": cfg.backend, "dtype": cfg.dtype, "grid": grid,
                          "cpu_grid": cpu_grid, "n_boot": cfg.n_boot, "R_inf": 0.0},
               "complete": False}

    def save():
        if a.json:
            write_json(a.json, payload)

    log(f"teacher: m0={cfg.m0}, d={cfg.d}; R_# = {task.risk_sharp:.6g}; grid {grid} on {device}, "
        f"{cpu_grid} on cpu; {cfg.replicas} seeds, T = {cfg.steps * cfg.dt:g}")
    if cpu_grid:                                         # small, first: it must not be crowded out
        cpu_deadline = None if deadline is None else time.monotonic() + a.cpu_share * a.budget_s
        warm_up(cfg, task, torch.device("cpu"))
        payload["cpu_run"] = run_grid(cfg, task, cpu_grid, "cpu", deadline=cpu_deadline, log=log)
        add_fits(payload["cpu_run"], cfg, 0)
        save()
    t_w = time.perf_counter()
    warm_up(cfg, task, device)
    payload["warm_up_s"] = time.perf_counter() - t_w

    def on_row(rows, skipped):
        payload["device_run"] = {"device": device.type, "rows": rows, "N_done": [r["N"] for r in rows],
                                 "N_skipped": skipped}
        save()

    run = run_grid(cfg, task, grid, device, deadline=deadline, log=log, on_row=on_row)
    payload["device_run"] = add_fits(run, cfg, a.cpu_n_max if cpu_grid else 0)
    if cpu_grid:
        cpu_rows = {r["N"]: r for r in payload["cpu_run"]["rows"]}
        payload["agreement"] = [{"N": r["N"], "gap_mean_device": r["gap_mean"], "gap_mean_cpu": cpu_rows[r["N"]]["gap_mean"],
                                 "rel_diff": abs(r["gap_mean"] - cpu_rows[r["N"]]["gap_mean"]) / cpu_rows[r["N"]]["gap_mean"],
                                 "speedup": cpu_rows[r["N"]]["seconds"] / r["seconds"]}
                                for r in run["rows"] if r["N"] in cpu_rows]
    payload["complete"] = True
    payload["seconds"] = time.monotonic() - t0
    save()
    for part in ("cpu_run", "device_run"):
        f = (payload.get(part) or {}).get("fit") or {}
        if "slope" in f:
            print(f"{part} ({payload[part]['device']}): gap ∝ N^{f['slope']:.3f}  95% [{f['ci95'][0]:.3f}, "
                  f"{f['ci95'][1]:.3f}]  over N = {payload[part]['N_done']}")
        elif part in payload:
            print(f"{part}: no fit ({f.get('error')})")
    print(json.dumps(payload.get("agreement"), default=float))
    return payload


if __name__ == "__main__":
    main()
