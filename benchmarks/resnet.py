"""ResNets: one conditional-OT flow step against a plain torch ResNet trained by autograd.

    python -m benchmarks.resnet                                   # L ∈ {4, 16}, M ∈ {16, 128}
    python -m benchmarks.resnet --L 4 --M 16 --n 200 --repeat 3 --json /tmp/r.json

Per (L, M): an L × M measure-valued ResNet (tanh units u σ(⟨w, x⟩ + b) in hidden dimension
D = d, A = I, B = I, squared loss) on n data points x ~ N(0, I_d), y = sin(x), float32, and

    flow      the library: ``state, info = flow.step(state)`` of
              ``conditional_ot_flow(model, X, Y, dt=dt)`` (full batch, closed-form adjoint)
    autograd  what a user would otherwise write: the same network as a plain
              ``torch.nn.Module`` (``meanfield.models.resnet_torch.to_module``),
              ``opt.zero_grad(); module.loss(X, Y).backward(); opt.step()`` with
              ``torch.optim.SGD(module.parameters(), lr=L·M·dt)``

which are the same update (docs/design.md §1: the θ-velocity is L·M × the ordinary gradient).
Before timing, one step of each from the same parameters is compared: ``max_rel_diff`` =
max |θ_flow − θ_autograd| / max |θ| must be ≤ 1e-6 (``agree``).  Each timed call advances
its own copy by one step (a training loop); the two are called in alternation (``--repeat``
rounds after warm-ups, same process, same threads, so load bursts hit both); median, min and
max per call.  ``speedup`` = autograd / flow medians (``speedup_min``: of the minima);
the speed goal is ≥ 2 at L = 16, M = 128 (``goal``).  ``gflops`` counts the six
n·M·D multiply–adds per layer that one exact gradient needs (two forward, four backward),
12·n·M·D·L flops per step.  Exponents of time in L (at fixed M) and in M (at fixed L) are
fitted when several sizes are given.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import torch

from meanfield.dynamics import conditional_ot_flow
from meanfield.models.resnet import ResNet, grid_measure, lift_matrices
from meanfield.models.resnet_torch import from_module, to_module

from .common import fit_exponents, machine, print_table, summarise, write_json

IMPLS = ("flow", "autograd")
GOAL = {"L": 16, "M": 128, "speedup": 2.0}
AGREE = 1e-6
DTYPES = {"float32": torch.float32, "float64": torch.float64}


def make_problem(L, M, n, d, *, dtype=torch.float32, seed=0, activation="tanh"):
    """(model, measure [L·M particles], X [n, d], Y [n, d]): θ ~ N(0, 1), x ~ N(0, I_d),
    y = sin(x); A = B = I_d (hidden dimension D = d)."""
    g = torch.Generator().manual_seed(seed)
    A, B = lift_matrices(d, 1)
    model = ResNet(A, B, activation=activation)
    meas = grid_measure(torch.randn(L, M, model.P, generator=g, dtype=torch.float64).to(dtype))
    X = torch.randn(n, d, generator=g, dtype=torch.float64).to(dtype)
    return model, meas, X, torch.sin(X)


def flow_stepper(model, meas, X, Y, dt):
    """(one-step callable, flow, initial state): each call advances the flow by one step."""
    flow = conditional_ot_flow(model, X, Y, dt=dt, backend="torch")
    box = [flow.init(meas, seed=0)]

    def fn():
        box[0], _ = flow.step(box[0])
        return box[0].theta
    return fn, flow, box


def autograd_stepper(model, meas, X, Y, dt, L, M):
    """(one-step callable, module): zero_grad, loss.backward, SGD step with lr = L·M·dt."""
    mod = to_module(model, meas)
    opt = torch.optim.SGD(mod.parameters(), lr=L * M * dt)

    def fn():
        opt.zero_grad()
        mod.loss(X, Y).backward()
        opt.step()
    return fn, mod


def check(model, meas, X, Y, dt, L, M) -> dict:
    """One step of each from the same parameters: their max |difference| / max |θ|."""
    fstep, _, box = flow_stepper(model, meas, X, Y, dt)
    fstep()
    astep, mod = autograd_stepper(model, meas, X, Y, dt, L, M)
    astep()
    _, after = from_module(mod)
    a, b = box[0].theta[0].double(), after.positions.double()
    diff = float((a - b).abs().max())
    moved = float((a - meas.positions.double()).abs().max())
    rel = diff / float(b.abs().max())
    return {"max_abs_diff": diff, "max_rel_diff": rel, "moved": moved, "agree": rel <= AGREE}


def interleaved(fns: dict, repeat: int, warmup: int) -> dict:
    """{name: [seconds per call]}: the callables timed in alternation, ``repeat`` rounds after
    ``warmup`` untimed ones, so that a burst of load on this shared machine hits both alike."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times = {k: [] for k in fns}
    for _ in range(repeat):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return times


def run(Ls, Ms, n, d, *, dt=0.01, dtype=torch.float32, repeat=7, warmup=2, log=print):
    """Rows per (L, M, impl) (module docstring)."""
    rows = []
    for L in Ls:
        for M in Ms:
            model, meas, X, Y = make_problem(L, M, n, d, dtype=dtype)
            chk = check(model, meas, X, Y, dt, L, M)
            flops = 12.0 * n * M * model.D * L
            fns = {"flow": flow_stepper(model, meas, X, Y, dt)[0],
                   "autograd": autograd_stepper(model, meas, X, Y, dt, L, M)[0]}
            times = interleaved(fns, repeat, warmup)
            group = {}
            for impl in IMPLS:
                sm = summarise(times[impl])
                row = {"L": L, "M": M, "n": n, "d": d, "D": model.D, "P": model.P, "impl": impl,
                       "dtype": str(dtype).replace("torch.", ""), "dt": dt, **sm,
                       "ms_per_step": 1e3 * sm["median_s"], "gflops": flops / sm["median_s"] / 1e9,
                       **chk}
                group[impl] = row
                log(f"  L={L} M={M} {impl}: {row['ms_per_step']:.3g} ms/step")
            sp = group["autograd"]["median_s"] / group["flow"]["median_s"]
            sp_min = group["autograd"]["min_s"] / group["flow"]["min_s"]
            for row in group.values():
                row["speedup"], row["speedup_min"] = sp, sp_min
            if (L, M) == (GOAL["L"], GOAL["M"]):
                group["flow"]["goal"] = (f"flow ≥ {GOAL['speedup']:g}× autograd at L={L}, M={M}: "
                                         + ("met" if sp >= GOAL["speedup"] else "NOT met"))
            rows += group.values()
    return rows


COLUMNS = [("L", "L", "d"), ("M", "M", "d"), ("n", "n", "d"), ("D", "D", "d"), ("impl", "impl", "s"),
           ("ms/step med", "ms_per_step", ".3g"), ("min s", "min_s", ".3g"), ("max s", "max_s", ".3g"),
           ("GFLOP/s", "gflops", ".3g"), ("autograd/flow", "speedup", ".2f"),
           ("(min/min)", "speedup_min", ".2f"), ("rel diff 1 step", "max_rel_diff", ".1e")]


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.resnet", description=__doc__.split("\n\n")[0])
    p.add_argument("--L", type=int, nargs="+", default=[4, 16], help="depths (default 4 16)")
    p.add_argument("--M", type=int, nargs="+", default=[16, 128], help="widths (default 16 128)")
    p.add_argument("--n", type=int, default=1000, help="data points (default 1000)")
    p.add_argument("--d", type=int, default=16, help="input = hidden dimension (default 16)")
    p.add_argument("--dt", type=float, default=0.01, help="flow step; SGD lr = L·M·dt")
    p.add_argument("--dtype", choices=list(DTYPES), default="float32")
    p.add_argument("--repeat", type=int, default=7)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument("--json", default=None)
    p.add_argument("--quiet", action="store_true")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    info = machine()
    log = (lambda *_: None) if a.quiet else (lambda s: print(s, file=sys.stderr, flush=True))
    rows = run(a.L, a.M, a.n, a.d, dt=a.dt, dtype=DTYPES[a.dtype], repeat=a.repeat, log=log)
    info["loadavg_at_end"] = os.getloadavg()
    fits = (fit_exponents(rows, ["impl", "M"], x_key="L", y_key="median_s")
            + fit_exponents(rows, ["impl", "L"], x_key="M", y_key="median_s"))
    for f in fits:
        f["in"] = "L" if "M" in f else "M"
        f["range"] = f.pop("N_range")
    print_table(rows, COLUMNS)
    for f in fits:
        fixed = f"M={f['M']}" if f["in"] == "L" else f"L={f['L']}"
        print(f"{f['impl']} at {fixed}: time ∝ {f['in']}^{f['exponent']:.2f} over {f['in']} ∈ {f['range']}")
    for r in rows:
        if not r["agree"] and r["impl"] == "flow":
            print(f"L={r['L']} M={r['M']}: flow and autograd disagree after one step "
                  f"(rel {r['max_rel_diff']:.1e} > {AGREE:g})")
        if r.get("goal"):
            print(f"{r['goal']} (measured {r['speedup']:.2f}× median, {r['speedup_min']:.2f}× min)")
    payload = {"benchmark": "resnet", "machine": info, "results": rows, "fits": fits,
               "complete": True}
    if a.json:
        write_json(a.json, payload)
    return payload


if __name__ == "__main__":
    main()
