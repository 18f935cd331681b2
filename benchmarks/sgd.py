"""Hot path 2: MMN-size online SGD (one fresh sample per step), side by side in one process.

    python -m benchmarks.sgd --n 800 --d 40 --replicas 1 16 --json out.json
    python -m benchmarks.sgd --n 800 --d 40 --impl api api-step fast --json out.json

Implementations (all on the same ReLU teacher–student task, unit σ(⟨w, x⟩) without output
weight, float32, uniform weights, step size 2ε with ε = --eps; one sample per step, or
``--batch-size n`` samples: minibatch SGD, the naive loop and the compiled one included):

    naive     what a user writes: a Python loop of torch ops per step (``naive_loop`` below)
    api       what the README teaches: ``state = flow.run(flow.init(θ₀, seed=s), k)``
              (``--record-every R``: ``flow.run(..., record_every=R)``, risk recorded)
    api-step  the step loop: ``for _ in range(k): state, info = flow.step(state)``
    step      ``flow.run(state, k, fast=False)`` (the step loop inside ``run``)
    fast      the compiled multi-step loop called directly, ``dynamics.fast_sgd.run``

All draw x_k ~ N(0, I_d) from the same generator in the same order, so their trajectories
agree to float rounding; the benchmark checks that (``max_rel_diff`` against ``step`` on the
same device after --check-steps steps).  Reported per (N, d, replicas B, implementation): µs
per step (median/min/max over repeats), particle updates per second (B·N per step), peak
RSS, and its time over ``fast``'s measured in the same run (``fast_speedup``; for ``api``
the goal is ≤ 1.5 at ≥ 100 steps per call, reported as ``api_goal``).

``--device cuda``: ``naive`` and ``step`` run on the GPU (samples from a CUDA generator, so
their trajectory differs from the CPU's; they are checked against each other), ``fast`` —
CPU-only — stays on the CPU: the GPU against the CPU fused loop, side by side.  Each timed
call ends with ``torch.cuda.synchronize``.  ``--budget-s`` records what no longer fits as
skipped.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import torch

from meanfield.dynamics import fast_sgd, minibatch_sgd, online_sgd
from meanfield.models import TeacherStudent, Unit

from .common import device_info, machine, print_table, summarise, time_calls, write_json

IMPLS = ("naive", "step", "fast", "api", "api-step")
DEFAULT_STEPS = {"naive": 2000, "step": 500, "fast": 20000, "api": 20000, "api-step": 500}
API_GOAL = 1.5           # api within 1.5× of fast, for calls of ≥ 100 steps


def naive_loop(W, tw_w, tw_m, steps, eps, g, batch_size=1):
    """A hand-written torch loop: W [B, N, d] particles, teacher (w* [m0, d], m* [m0]),
    ``batch_size`` samples n per step."""
    B, N, d = W.shape
    n = batch_size
    for _ in range(steps):
        x = torch.randn(B, n, d, generator=g, dtype=W.dtype, device=W.device)   # (B, n, d)
        y = torch.relu(x @ tw_w.T) @ tw_m                               # (B, n)
        z = x @ W.transpose(1, 2)                                       # (B, n, N)
        f = torch.relu(z).mean(-1)                                      # (B, n)
        r = ((f - y) / n).unsqueeze(-1) if n > 1 else (f - y).unsqueeze(-1)   # (B, n, 1)
        grad = ((z > 0).to(W.dtype) * r).transpose(1, 2) @ x            # (B, N, d)
        W = W - (2 * eps) * grad
    return W


def make_problem(N, d, B, seed=0, m0=4, eps=1e-3, batch_size=1):
    """The task (ReLU units without output weight, m0 teacher units), the SGD dynamics
    (online, or ``batch_size`` samples per step) and θ₀ [B, N, d] float32 on the CPU (drawn
    there whatever the device)."""
    g = torch.Generator().manual_seed(seed)
    unit = Unit(d, "relu", output_weight=False)
    task = TeacherStudent.random(unit, m0, generator=g)
    theta0 = (torch.randn(B, N, d, generator=g) / d ** 0.5).float()
    dyn = online_sgd(task, eps=eps) if batch_size == 1 else minibatch_sgd(task, eps=eps, batch_size=batch_size)
    return task, dyn, theta0


def impl_device(impl, device) -> torch.device:
    """Where ``impl`` runs when the benchmark is asked for ``device``: ``fast`` (the CPU fused
    loop) always on the CPU, the others on ``device``."""
    return torch.device("cpu") if impl == "fast" else torch.device(device)


def make_fn(impl, task, dyn, theta0, steps, seed, record_every=None):
    """A zero-argument callable running ``steps`` steps of ``impl`` from θ₀ (on θ₀'s device:
    samples from a generator on that device, seeded with ``seed``); returns θ."""
    dev = theta0.device
    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)
    if impl == "naive":
        tt, tw = task.teacher(torch.float32, dev)

        def fn():
            out = naive_loop(theta0, tt, tw, steps, dyn.dt, torch.Generator(device=dev).manual_seed(seed),
                             dyn.batch_size)
            sync()
            return out
        return fn
    if impl == "fast":                      # the compiled loop itself, no API around it

        def fn():
            return fast_sgd.run(dyn, dyn.init(theta0, seed=seed), steps).theta
        return fn
    if impl == "api":                       # README: state = flow.run(state, steps[, record_every=R])

        def fn():
            state = dyn.init(theta0, seed=seed)
            if record_every is None:
                state = dyn.run(state, steps)
            else:
                state, _ = dyn.run(state, steps, record_every=record_every)
            sync()
            return state.theta
        return fn
    if impl == "api-step":                  # the step loop a user writes around flow.step

        def fn():
            state = dyn.init(theta0, seed=seed)
            for _ in range(steps):
                state, info = dyn.step(state)
            sync()
            return state.theta
        return fn

    def fn():                               # "step": run's step loop
        out = dyn.run(dyn.init(theta0, seed=seed), steps, fast=False).theta
        sync()
        return out
    return fn


def run(ns, ds, replicas, impls, *, steps=None, repeat=5, check_steps=200, seed=0, log=print,
        device="cpu", deadline=None, progress=None, record_every=None, batch_size=1):
    """Rows per (d, N, B, impl) (module docstring).  ``deadline`` (``time.monotonic()``)
    records the rows that no longer fit as skipped; ``progress(rows)`` after each group;
    ``record_every`` is passed to ``api``'s ``flow.run``."""
    steps = {**DEFAULT_STEPS, **(steps or {})}
    rows = []
    for d in ds:
        for N in ns:
            for B in replicas:
                task, dyn, theta0 = make_problem(N, d, B, seed, batch_size=batch_size)
                refs: dict = {}                     # the step path's θ per device
                t_fast = None
                group = []
                for impl in impls:
                    K = steps[impl]
                    dev = impl_device(impl, device)
                    row = {"N": N, "d": d, "replicas": B, "batch_size": batch_size, "impl": impl, "steps": K,
                           "baseline": impl == "naive", "device": dev.type}
                    if deadline is not None and time.monotonic() > deadline:
                        row["skipped"] = "time budget (--budget-s) used up"
                        group.append(row)
                        log(f"  N={N} d={d} B={B} {impl}: skipped ({row['skipped']})")
                        continue
                    th0 = theta0.to(dev)
                    if dev.type not in refs:
                        refs[dev.type] = make_fn("step", task, dyn, th0, check_steps, seed)()
                    ref = refs[dev.type]
                    fn = make_fn(impl, task, dyn, th0, K, seed, record_every)
                    if dev.type == "cuda":
                        torch.cuda.reset_peak_memory_stats(dev)
                    times, _, rss = time_calls(fn, repeat, warmup=1)
                    row.update({**summarise(times), "peak_rss_mb": rss})
                    if dev.type == "cuda":
                        row["peak_cuda_mb"] = torch.cuda.max_memory_allocated(dev) / 2 ** 20
                    row["us_per_step"] = 1e6 * row["median_s"] / K
                    row["us_per_step_min"] = 1e6 * row["min_s"] / K
                    row["us_per_step_max"] = 1e6 * row["max_s"] / K
                    row["updates_per_s"] = B * N * K / row["median_s"]
                    if impl == "api":
                        row["record_every"] = record_every
                    out = make_fn(impl, task, dyn, th0, check_steps, seed, record_every)()
                    row["max_rel_diff"] = float((out - ref).abs().max() / ref.abs().max())
                    row["check_against"] = f"step ({dev.type})"
                    group.append(row)
                    if impl == "fast":
                        t_fast = row["us_per_step"]
                    log(f"  N={N} d={d} B={B} {impl} ({dev.type}): {row['us_per_step']:.3g} µs/step")
                for row in group:
                    if t_fast and not row.get("skipped"):
                        row["fast_speedup"] = row["us_per_step"] / t_fast
                        if row["impl"] == "api" and row["device"] == "cpu" and row["steps"] >= 100:
                            row["api_goal"] = f"api/fast ≤ {API_GOAL}: " + (
                                "met" if row["fast_speedup"] <= API_GOAL else "NOT met")
                rows += group
                if progress is not None:
                    progress(rows)
    return rows


COLUMNS = [("N", "N", "d"), ("d", "d", "d"), ("B", "replicas", "d"), ("impl", "impl", "s"),
           ("device", "device", "s"),
           ("µs/step med", "us_per_step", ".3g"), ("min", "us_per_step_min", ".3g"),
           ("max", "us_per_step_max", ".3g"), ("updates/s", "updates_per_s", ".3g"),
           ("peak RSS MB", "peak_rss_mb", ".0f"), ("÷ fast", "fast_speedup", ".2f"),
           ("rel diff vs step", "max_rel_diff", ".1e")]


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.sgd", description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, nargs="+", default=[800])
    p.add_argument("--d", type=int, nargs="+", default=[40])
    p.add_argument("--replicas", type=int, nargs="+", default=[1, 16])
    p.add_argument("--impl", nargs="+", default=list(IMPLS), choices=list(IMPLS))
    p.add_argument("--steps", type=int, nargs="+", default=None,
                   help="steps per timed call, in the order naive step fast [api api-step] "
                        f"(api defaults to fast's, api-step to step's; defaults {DEFAULT_STEPS})")
    p.add_argument("--batch-size", type=int, default=1,
                   help="samples per step (1: online SGD, MMN's; > 1: minibatch SGD)")
    p.add_argument("--record-every", type=int, default=None,
                   help="api: flow.run(..., record_every=R) (records the risk every R steps)")
    p.add_argument("--check-steps", type=int, default=200)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument("--device", default="cpu",
                   help="cpu or cuda (naive and step run there; fast always on the CPU)")
    p.add_argument("--budget-s", type=float, default=None,
                   help="stop starting measurements after this many seconds (the rest is recorded as skipped)")
    p.add_argument("--json", default=None)
    p.add_argument("--quiet", action="store_true")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    info = machine()
    info.update(device_info(a.device))
    log = (lambda *_: None) if a.quiet else (lambda s: print(s, file=sys.stderr, flush=True))
    steps = None
    if a.steps:
        if len(a.steps) not in (3, 5):
            p.error("--steps takes 3 (naive step fast) or 5 (… api api-step) numbers")
        steps = dict(zip(IMPLS, a.steps))
        steps.setdefault("api", steps["fast"])
        steps.setdefault("api-step", steps["step"])
    deadline = None if a.budget_s is None else time.monotonic() + a.budget_s

    def partial(rows):
        if a.json:
            write_json(a.json, {"benchmark": "sgd", "machine": info, "results": rows, "complete": False})

    rows = run(a.n, a.d, a.replicas, a.impl, steps=steps, repeat=a.repeat,
               check_steps=a.check_steps, log=log, device=a.device, deadline=deadline,
               progress=partial, record_every=a.record_every, batch_size=a.batch_size)
    info["loadavg_at_end"] = os.getloadavg()
    print_table(rows, COLUMNS)
    for r in rows:
        if r.get("api_goal"):
            print(f"N={r['N']} d={r['d']} B={r['replicas']}: api {r['us_per_step']:.3g} µs/step = "
                  f"{r['fast_speedup']:.2f} × fast ({r['steps']} steps per call): {r['api_goal']}")
    payload = {"benchmark": "sgd", "machine": info, "results": rows, "complete": True}
    if a.json:
        write_json(a.json, payload)
    return payload


if __name__ == "__main__":
    main()
