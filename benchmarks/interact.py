"""Hot path 1: one evaluation of (R, ∇_θΨ for every particle) for the ReLU teacher–student
population risk — N² pair terms — per backend, side by side in one process.

    python -m benchmarks.interact --n 2000 10000 30000 --d 10 100 --json out.json

Library backends run through ``meanfield.interact.evaluate`` (what the dynamics call):

    torch           the default CPU path: the fused native loop (float32 or float64, CPU)
    torch-eager     the same backend with ``native=False`` (torch tiles; the CUDA/autograd path)
    keops           the explicit KeOps reduction
    numpy           the float64 reference (slow; for checks)

Baselines (``"baseline": true`` in the JSON; benchmark-only code, what a user would write):

    dense-autograd  N×N kernel matrices in torch, gradient by autograd
    keops-autograd  a KeOps LazyTensor formula of the risk, gradient by autograd

For each (N, d, backend): seconds (median/min/max over repeats after one warm-up call, which
also absorbs compilation), pair terms per second (N²/median), peak RSS during the timed calls
(on CUDA also the peak of ``torch.cuda.max_memory_allocated``), the speed-up of ``torch`` over
it measured in the same run, and the gradient's relative error against the numpy reference
(N ≤ --check-numpy-max-n) or else against ``torch``.  A backend is recorded as skipped (never
crashes the run) when it would need more memory than half the machine's (the GPU's on CUDA),
when its time predicted from a smaller N in this run (∝ N²) exceeds --max-seconds, or when
--budget-s seconds have passed (what remains is recorded as skipped).  ``auto`` in the JSON
says, per (N, d), which backend ``backend="auto"`` picks there and which library backend was
fastest.  ``--device cuda`` runs everything on the GPU (the numpy reference on CPU copies).
``--dtype float64`` runs every backend in float64 (the fused float64 loop); the
reference is float64 either way, so float64 rows show errors near 1e-15.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time

import torch

from meanfield import interact
from meanfield.interact import NumpyBackend, TiledTorchBackend, evaluate
from meanfield.models import TeacherStudent, Unit

from .common import device_info, fit_exponents, machine, print_table, summarise, time_calls, write_json

LIBRARY = ("torch", "torch-eager", "keops", "numpy")
BASELINES = ("dense-autograd", "keops-autograd")
DEFAULT_BACKENDS = ("torch", "torch-eager", "keops", "dense-autograd", "keops-autograd")


# ---------------------------------------------------------------------------------------
# baselines: what a user would write by hand
# ---------------------------------------------------------------------------------------

def _relu_kappa_torch(w1, w2):
    n1 = w1.norm(dim=1, keepdim=True)                                # (N, 1)
    n2 = w2.norm(dim=1)[None]                                        # (1, M)
    nn = n1 * n2                                                     # (N, M)
    c = (w1 @ w2.T / nn).clamp(-1 + 1e-6, 1 - 1e-6)                  # (N, M)
    return nn * (torch.sqrt(1 - c * c) + (math.pi - torch.acos(c)) * c) / (2 * math.pi)


def dense_autograd(task, theta, m):
    """R = R_# + 2 Σ m_i V_i + Σ m_i m_j U_ij with dense N×N matrices; ∇R by autograd.
    Returns (R, ∇_θΨ = ∇_θR / (2 m_i))."""
    tt, tw = task.teacher(theta.dtype, theta.device)
    th = theta[0].detach().requires_grad_(True)                      # (N, D)
    mm = m[0]

    def U(t1, t2):
        return t1[:, 0, None] * t2[None, :, 0] * _relu_kappa_torch(t1[:, 1:], t2[:, 1:])

    R = task.risk_sharp - 2 * (mm * (U(th, tt) @ tw)).sum() + mm @ U(th, th) @ mm
    (g,) = torch.autograd.grad(R, th)
    return R.detach(), g / (2 * mm[:, None])


def keops_autograd(task, theta, m):
    """The same risk as one LazyTensor formula per pair sum; ∇R by KeOps' autograd."""
    from pykeops.torch import LazyTensor

    tt, tw = task.teacher(theta.dtype, theta.device)
    th = theta[0].detach().requires_grad_(True)
    mm = m[0]

    def pair_sum(t1, t2, c2):                                        # Σ_j c2_j U(t1_i, t2_j)
        w1, w2 = t1[:, 1:], t2[:, 1:]
        W1, W2 = LazyTensor(w1[:, None, :]), LazyTensor(w2[None, :, :])          # (N,1,d) (1,M,d)
        nn = LazyTensor(w1.norm(dim=1)[:, None, None]) * LazyTensor(w2.norm(dim=1)[None, :, None])
        C2 = LazyTensor((c2 * t2[:, 0])[None, :, None])                          # (1, M, 1)
        c = ((W1 | W2) / nn).clamp(-1 + 1e-6, 1 - 1e-6)
        k = nn * ((1 - c * c).sqrt() + (math.pi - c.acos()) * c) * (1 / (2 * math.pi))
        return t1[:, 0] * (k * C2).sum(dim=1).squeeze(-1)                       # (N,)

    R = task.risk_sharp - 2 * (mm * pair_sum(th, tt, tw)).sum() + (mm * pair_sum(th, th, mm)).sum()
    (g,) = torch.autograd.grad(R, th)
    return R.detach(), g / (2 * mm[:, None])


# ---------------------------------------------------------------------------------------


def make_problem(N, d, device, seed=0, m0=4, dtype=torch.float32):
    """The ReLU teacher–student task (m0 teacher units, seeded) and θ [1, N, 1 + d], uniform
    m [1, N] on ``device`` in ``dtype``; the draws are made on the CPU, so they do not depend
    on the device."""
    g = torch.Generator().manual_seed(seed)
    unit = Unit(d, "relu", output_weight=True)
    task = TeacherStudent.random(unit, m0, generator=g)
    a = 1 + 0.5 * torch.randn(N, 1, generator=g)
    w = torch.randn(N, d, generator=g) / math.sqrt(d)
    theta = torch.cat([a, w], -1)[None].to(device=device, dtype=dtype)           # (1, N, D)
    m = torch.full((1, N), 1.0 / N, dtype=dtype, device=device)
    evaluate(task, theta[:, :2], backend="torch")          # fills the cached R_# (float64)
    return task, theta, m


def make_fn(name, task, theta, m):
    """A zero-argument callable returning (R [scalar], ∇_θΨ [N, D]) for backend ``name``."""
    sync = torch.cuda.synchronize if theta.device.type == "cuda" else (lambda: None)
    if name in LIBRARY:
        be = {"torch": TiledTorchBackend(), "torch-eager": TiledTorchBackend(native=False),
              "numpy": NumpyBackend()}.get(name) or interact.get_backend(name)
        if name == "keops" and be.name != "keops":
            raise RuntimeError("pykeops is not usable here")

        def fn():
            pot = evaluate(task, theta, m, backend=be)
            sync()
            return pot.risk[0], pot.grad[0]
        return fn
    base = {"dense-autograd": dense_autograd, "keops-autograd": keops_autograd}[name]

    def fn():
        out = base(task, theta, m)
        sync()
        return out
    return fn


def _mem_limit_bytes(device):
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def skip_reason(name, N, d, device, prev, max_seconds):
    if name == "dense-autograd":
        need = 8 * N * N * 4                     # ~8 live N×N float32 temporaries (fwd + bwd)
        if need > 0.5 * _mem_limit_bytes(device):
            return f"needs ~{need / 2**30:.0f} GiB of N×N temporaries (> half the memory)"
    if name == "numpy" and N > 20000:
        return "the float64 reference is for checks (N ≤ 20000)"
    if name in prev:
        n0, t0 = prev[name]
        est = t0 * (N / n0) ** 2
        if est > max_seconds:
            return f"predicted {est:.0f} s per call from N={n0} (> --max-seconds {max_seconds:g})"
    return None


def rel_err(a, ref):
    a, ref = a.detach().double().cpu(), ref.detach().double().cpu()
    return float((a - ref).abs().max() / ref.abs().max().clamp_min(1e-300))


def _budget_reason(name, N, prev, deadline, repeat):
    """Why ``name`` at N does not fit in the time left before ``deadline`` (None if it does)."""
    if deadline is None:
        return None
    left = deadline - time.monotonic()
    if left <= 0:
        return "time budget (--budget-s) used up"
    if name in prev:
        n0, t0 = prev[name]
        est = t0 * (N / n0) ** 2 * (1 + min(repeat, 3))
        if est > left:
            return f"time budget: predicted {est:.0f} s for its calls, {left:.0f} s left"
    return None


def _dtype_name(dtype) -> str:
    return str(dtype).replace("torch.", "")


def run(ns, ds, backends, *, repeat=5, device="cpu", max_seconds=30.0, check_numpy_max_n=2000,
        seed=0, log=print, dtype=torch.float32, deadline=None, progress=None):
    """Rows of measurements for every (d, N, backend) (see the module docstring).

    ``deadline`` (a ``time.monotonic()`` value) records what no longer fits as skipped;
    ``progress(rows)`` is called after each N (e.g. to write partial results)."""
    device = torch.device(device)
    cuda = device.type == "cuda"
    rows = []
    for d in ds:
        prev: dict = {}
        for N in sorted(ns):
            task, theta, m = make_problem(N, d, device, seed, dtype=dtype)
            ref, ref_name = None, None
            if N <= check_numpy_max_n:
                ref_name = "numpy"
                ref = make_fn("numpy", task, theta.cpu().double(), m.cpu().double())()
            results = {}
            for name in backends:
                row = {"N": N, "d": d, "backend": name, "baseline": name in BASELINES,
                       "device": device.type, "dtype": _dtype_name(dtype), "pairs": N * N}
                reason = (skip_reason(name, N, d, device, prev, max_seconds)
                          or _budget_reason(name, N, prev, deadline, repeat))
                if reason is None:
                    try:
                        fn = make_fn(name, task, theta, m)
                        if cuda:
                            torch.cuda.synchronize(device)
                            torch.cuda.reset_peak_memory_stats(device)
                        t0 = time.perf_counter()
                        fn()                                   # warm-up (compilation, caches)
                        first = time.perf_counter() - t0
                        reps = repeat if first < 2.0 else min(repeat, 3)
                        times, out, rss = time_calls(fn, reps, warmup=0)
                    except Exception as e:      # never crash the run; say why in the row
                        first_line = (str(e).strip().splitlines() or [""])[0][:160]
                        kind = ("unavailable" if isinstance(e, (ImportError, RuntimeError))
                                else f"failed: {type(e).__name__}")   # OutOfMemoryError is a RuntimeError
                        reason = f"{kind}: {first_line}"
                        if cuda:
                            torch.cuda.empty_cache()
                if reason is not None:
                    row["skipped"] = reason
                    rows.append(row)
                    log(f"  N={N} d={d} {name}: skipped ({reason})")
                    continue
                row.update(summarise(times))
                row["first_call_s"] = first
                row["pairs_per_s"] = N * N / row["median_s"]
                row["peak_rss_mb"] = rss
                if cuda:                                       # inputs + temporaries, torch's allocator
                    row["peak_cuda_mb"] = torch.cuda.max_memory_allocated(device) / 2 ** 20
                results[name] = out
                prev[name] = (N, row["median_s"])
                rows.append(row)
                log(f"  N={N} d={d} {name}: {row['median_s']:.4g} s (median of {len(times)})")
            if ref is None and "torch" in results:
                ref, ref_name = results["torch"], "torch"
            t_torch = next((r["median_s"] for r in rows if r["N"] == N and r["d"] == d
                            and r["backend"] == "torch" and not r.get("skipped")), None)
            for r in rows:
                if r["N"] != N or r["d"] != d or r.get("skipped"):
                    continue
                if ref is not None and (r["backend"] != ref_name):
                    R, G = results[r["backend"]]
                    r["check_against"] = ref_name
                    r["grad_rel_err"] = rel_err(G, ref[1])
                    r["risk_rel_err"] = rel_err(R.reshape(1), ref[0].reshape(1))
                if t_torch is not None:
                    r["torch_speedup"] = r["median_s"] / t_torch
            del task, theta, m, results, ref
            if cuda:
                torch.cuda.empty_cache()
            if progress is not None:
                progress(rows)
    return rows


def auto_report(rows, device="cpu") -> list[dict]:
    """Per measured (N, d, dtype): the backend ``backend="auto"`` picks for N × N pairs on
    ``device`` and the fastest measured library backend that auto can return (``torch`` or
    ``keops``); ``agrees`` is None when fewer than two of them were measured."""
    groups: dict = {}
    for r in rows:
        if r["backend"] in ("torch", "keops"):
            groups.setdefault((r["N"], r["d"], r.get("dtype", "float32")), []).append(r)
    out = []
    for (N, d, dt), rs in sorted(groups.items()):
        pick = interact.get_backend("auto", N=N, M=N, d=d, device=device).name
        timed = {r["backend"]: r["median_s"] for r in rs if not r.get("skipped")}
        fastest = min(timed, key=timed.get) if timed else None
        out.append({"N": N, "d": d, "dtype": dt, "auto_picks": pick, "fastest": fastest,
                    "measured": timed, "agrees": (pick == fastest) if len(timed) > 1 else None,
                    "skipped": {r["backend"]: r["skipped"] for r in rs if r.get("skipped")}})
    return out


GOAL_FLOAT64_PAIRS_PER_S = 5e8     # the float64 goal: the fused float64 loop at N = 3·10⁴, d = 10, 2 cores


def goal_report(rows) -> list[dict]:
    """The float64 speed goal wherever it was measured: the ``torch`` row in float64 at N = 30 000,
    d = 10 reaches ≥ ``GOAL_FLOAT64_PAIRS_PER_S`` pair terms per second (``reached`` is
    False for a skipped row); an empty list when no such row was run."""
    out = []
    for r in rows:
        if (r["backend"], r.get("dtype"), r["N"], r["d"]) == ("torch", "float64", 30000, 10):
            rate = r.get("pairs_per_s")
            out.append({"goal": f"float64 torch >= {GOAL_FLOAT64_PAIRS_PER_S:.0e} pairs/s at N=30000, d=10",
                        "pairs_per_s": rate, "reached": rate is not None and rate >= GOAL_FLOAT64_PAIRS_PER_S,
                        "loadavg_at_end": list(os.getloadavg())})
    return out


COLUMNS = [("N", "N", "d"), ("d", "d", "d"), ("backend", "backend", "s"),
           ("median s", "median_s", ".4g"), ("min s", "min_s", ".4g"), ("max s", "max_s", ".4g"),
           ("pairs/s", "pairs_per_s", ".3g"), ("peak RSS MB", "peak_rss_mb", ".0f"),
           ("peak CUDA MB", "peak_cuda_mb", ".0f"), ("torch ×", "torch_speedup", ".1f"),
           ("grad err", "grad_rel_err", ".1e"),
           ("vs", "check_against", "s")]


def columns_for(rows):
    """COLUMNS, less "peak CUDA MB" when no row ran on CUDA."""
    if any("peak_cuda_mb" in r for r in rows):
        return COLUMNS
    return [c for c in COLUMNS if c[1] != "peak_cuda_mb"]


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.interact", description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, nargs="+", default=[2000, 10000, 30000])
    p.add_argument("--d", type=int, nargs="+", default=[10])
    p.add_argument("--backend", nargs="+", default=list(DEFAULT_BACKENDS),
                   choices=list(LIBRARY + BASELINES))
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--device", default="cpu", help="cpu or cuda (the numpy reference runs on CPU copies)")
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    p.add_argument("--budget-s", type=float, default=None,
                   help="stop starting measurements after this many seconds (the rest is recorded as skipped)")
    p.add_argument("--max-seconds", type=float, default=30.0,
                   help="skip a backend whose predicted time per call exceeds this")
    p.add_argument("--check-numpy-max-n", type=int, default=2000)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument("--fit-min-n", type=int, default=3000,
                   help="fit time ∝ N^k over sizes ≥ this (smaller sizes are overhead-bound)")
    p.add_argument("--json", default=None, help="write the results here")
    p.add_argument("--quiet", action="store_true")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    info = machine()
    info.update(device_info(a.device))
    log = (lambda *_: None) if a.quiet else (lambda s: print(s, file=sys.stderr, flush=True))
    deadline = None if a.budget_s is None else time.monotonic() + a.budget_s
    dtype = getattr(torch, a.dtype)

    def partial(rows):
        if a.json:
            write_json(a.json, {"benchmark": "interact", "machine": info, "results": rows,
                                "complete": False})

    rows = run(a.n, a.d, a.backend, repeat=a.repeat, device=a.device, max_seconds=a.max_seconds,
               check_numpy_max_n=a.check_numpy_max_n, log=log, dtype=dtype, deadline=deadline,
               progress=partial)
    fits = fit_exponents(rows, ["backend", "d"], min_x=a.fit_min_n)
    info["loadavg_at_end"] = os.getloadavg()
    print_table(rows, columns_for(rows))
    for f in fits:
        print(f"  time ∝ N^{f['exponent']:.2f}  ({f['backend']}, d={f['d']}, N={f['N_range'][0]}…{f['N_range'][1]})")
    goals = goal_report(rows)
    for g in goals:
        rate = "skipped" if g["pairs_per_s"] is None else f"{g['pairs_per_s']:.3g} pairs/s"
        print(f"  goal ({g['goal']}): {'reached' if g['reached'] else 'NOT reached'} ({rate})")
    payload = {"benchmark": "interact", "machine": info, "results": rows, "fits": fits,
               "auto": auto_report(rows, a.device), "goals": goals, "complete": True}
    if a.json:
        write_json(a.json, payload)
    return payload


if __name__ == "__main__":
    main()
