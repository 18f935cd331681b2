"""Hot path 1: one evaluation of (R, ∇_θΨ for every particle) for the ReLU teacher–student
population risk — N² pair terms — per backend, side by side in one process.

    python -m benchmarks.interact --n 2000 10000 30000 --d 10 100 --json out.json

Library backends run through ``meanfield.interact.evaluate`` (what the dynamics call):

    torch           the default CPU path: the fused native loop (float32, CPU)
    torch-eager     the same backend with ``native=False`` (torch tiles; the CUDA/float64 path)
    keops           the explicit KeOps reduction
    numpy           the float64 reference (slow; for checks)

Baselines (``"baseline": true`` in the JSON; benchmark-only code, what a user would write):

    dense-autograd  N×N kernel matrices in torch, gradient by autograd
    keops-autograd  a KeOps LazyTensor formula of the risk, gradient by autograd

For each (N, d, backend): seconds (median/min/max over repeats after one warm-up call, which
also absorbs compilation), pair terms per second (N²/median), peak RSS during the timed calls,
the speed-up of ``torch`` over it measured in the same run, and the gradient's relative error
against the numpy reference (N ≤ --check-numpy-max-n) or else against ``torch``.  A backend is
recorded as skipped (never crashes the run) when it would need more memory than half the
machine's, or when its time predicted from a smaller N in this run (∝ N²) exceeds
--max-seconds.
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

from .common import fit_exponents, machine, print_table, summarise, time_calls, write_json

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


def make_problem(N, d, device, seed=0, m0=4):
    g = torch.Generator().manual_seed(seed)
    unit = Unit(d, "relu", output_weight=True)
    task = TeacherStudent.random(unit, m0, generator=g)
    a = 1 + 0.5 * torch.randn(N, 1, generator=g)
    w = torch.randn(N, d, generator=g) / math.sqrt(d)
    theta = torch.cat([a, w], -1)[None].to(device=device, dtype=torch.float32)   # (1, N, D)
    m = torch.full((1, N), 1.0 / N, dtype=torch.float32, device=device)
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


def run(ns, ds, backends, *, repeat=5, device="cpu", max_seconds=30.0, check_numpy_max_n=2000,
        seed=0, log=print):
    device = torch.device(device)
    rows = []
    for d in ds:
        prev: dict = {}
        for N in sorted(ns):
            task, theta, m = make_problem(N, d, device, seed)
            ref, ref_name = None, None
            if N <= check_numpy_max_n:
                ref_name = "numpy"
                ref = make_fn("numpy", task, theta.cpu().double(), m.cpu().double())()
            results = {}
            for name in backends:
                row = {"N": N, "d": d, "backend": name, "baseline": name in BASELINES,
                       "device": device.type, "pairs": N * N}
                reason = skip_reason(name, N, d, device, prev, max_seconds)
                if reason is None:
                    try:
                        fn = make_fn(name, task, theta, m)
                        t0 = time.perf_counter()
                        fn()                                   # warm-up (compilation, caches)
                        first = time.perf_counter() - t0
                        reps = repeat if first < 2.0 else min(repeat, 3)
                        times, out, rss = time_calls(fn, reps, warmup=0)
                    except (ImportError, RuntimeError) as e:
                        reason = f"unavailable: {str(e).splitlines()[0][:120]}"
                if reason is not None:
                    row["skipped"] = reason
                    rows.append(row)
                    log(f"  N={N} d={d} {name}: skipped ({reason})")
                    continue
                row.update(summarise(times))
                row["first_call_s"] = first
                row["pairs_per_s"] = N * N / row["median_s"]
                row["peak_rss_mb"] = rss
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
    return rows


COLUMNS = [("N", "N", "d"), ("d", "d", "d"), ("backend", "backend", "s"),
           ("median s", "median_s", ".4g"), ("min s", "min_s", ".4g"), ("max s", "max_s", ".4g"),
           ("pairs/s", "pairs_per_s", ".3g"), ("peak RSS MB", "peak_rss_mb", ".0f"),
           ("torch ×", "torch_speedup", ".1f"), ("grad err", "grad_rel_err", ".1e"),
           ("vs", "check_against", "s")]


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.interact", description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, nargs="+", default=[2000, 10000, 30000])
    p.add_argument("--d", type=int, nargs="+", default=[10])
    p.add_argument("--backend", nargs="+", default=list(DEFAULT_BACKENDS),
                   choices=list(LIBRARY + BASELINES))
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--device", default="cpu")
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
    log = (lambda *_: None) if a.quiet else (lambda s: print(s, file=sys.stderr, flush=True))
    rows = run(a.n, a.d, a.backend, repeat=a.repeat, device=a.device, max_seconds=a.max_seconds,
               check_numpy_max_n=a.check_numpy_max_n, log=log)
    fits = fit_exponents(rows, ["backend", "d"], min_x=a.fit_min_n)
    info["loadavg_at_end"] = os.getloadavg()
    print_table(rows, COLUMNS)
    for f in fits:
        print(f"  time ∝ N^{f['exponent']:.2f}  ({f['backend']}, d={f['d']}, N={f['N_range'][0]}…{f['N_range'][1]})")
    payload = {"benchmark": "interact", "machine": info, "results": rows, "fits": fits}
    if a.json:
        write_json(a.json, payload)
    return payload


if __name__ == "__main__":
    main()
