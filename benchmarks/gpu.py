"""The GPU check's Python side (``scripts/gpu_check.sh`` runs each subcommand as one stage).

    python -m benchmarks.gpu env       --json OUT/environment.json
    python -m benchmarks.gpu interact  --json OUT/interact_cuda.json [--device cuda] [--budget-s S]
    python -m benchmarks.gpu summary   OUT --stages STAGES.tsv [--junit PYTEST.xml]

``env`` records the interpreter, torch and CUDA, the GPU, the compilers, the versions and
locations of the packages meanfield needs (to see which came from the carried wheels), whether
pykeops, POT and Dask import, KeOps's CUDA configuration, and on CUDA a first KeOps reduction
(the ReLU pair sum, float32, d = 10 — compiled here, so later stages find it in the cache)
checked against the numpy reference.  Without CUDA it says so and skips the probe.

``interact`` is the GPU benchmark set of hot path 1 (``benchmarks.interact``): the ReLU
teacher–student risk and ∇Ψ for all particles, d = 10, float32 at N = 10⁴, 10⁵, 10⁶, 10⁷
(each backend while its predicted time per call stays under --max-seconds) and float64 at
N = 10⁴, 10⁵, for ``torch`` (eager tiles on CUDA), ``keops`` and both autograd baselines,
with the peak of ``torch.cuda.max_memory_allocated`` per measurement, what ``auto`` picks at
each N, and the GPU speed goals evaluated on the rows (``goals``).  The JSON is rewritten
after every N, so a stage cut short still leaves what it measured.

``summary`` gathers the stages' statuses (the TSV the script writes), the pytest outcomes
(junit XML), and the goals and fits of the benchmark JSONs into OUT/summary.json.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

from .common import device_info, fit_exponents, machine, package_version, utc_now, write_json

PACKAGES = ("numpy", "scipy", "torch", "matplotlib", "scikit-learn", "tqdm", "filelock", "pytest",
            "hypothesis", "pykeops", "keopscore", "pot", "dask", "distributed", "tornado", "zict",
            "tblib", "locket", "partd", "cloudpickle", "toolz", "fsspec", "click", "pyyaml",
            "msgpack", "psutil", "sortedcontainers", "jinja2", "packaging", "pybind11")
ENV_VARS = ("KEOPS_CACHE_FOLDER", "CUDA_HOME", "CUDA_PATH", "CUDA_VISIBLE_DEVICES", "PYTHONPATH",
            "LD_LIBRARY_PATH", "OMP_NUM_THREADS", "MEANFIELD_NATIVE")


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {(text.splitlines() or [''])[0][:300]}"


def _run(cmd, timeout=20) -> str | None:
    """First lines of a command's output, or None when it is missing or fails."""
    if shutil.which(cmd[0]) is None:
        return None
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"error: {_first_line(e)}"
    out = (res.stdout or res.stderr).strip()
    return out if res.returncode == 0 else f"exit {res.returncode}: {out[:300]}"


# ---------------------------------------------------------------------------------------
# env
# ---------------------------------------------------------------------------------------

def _packages() -> dict:
    out = {}
    for name in PACKAGES:
        v = package_version(name)
        loc = None
        if v is not None:
            try:
                dist = importlib.metadata.distribution(name)
                loc = str(Path(dist.locate_file("")).resolve())
            except Exception:  # pragma: no cover - odd installs
                pass
        out[name] = {"version": v, "location": loc}
    return out


def _imports() -> dict:
    out = {}
    for mod in ("meanfield", "ot", "dask", "distributed", "pykeops"):
        t0 = time.perf_counter()
        try:
            importlib.import_module(mod)
            out[mod] = {"ok": True, "seconds": round(time.perf_counter() - t0, 2)}
        except Exception as e:
            out[mod] = {"ok": False, "error": _first_line(e)}
    return out


def _keops_config() -> dict:
    try:
        import keopscore
    except Exception as e:
        return {"error": _first_line(e)}
    cfg = getattr(keopscore, "cuda_config", None)
    if cfg is None:
        return {"version": getattr(keopscore, "__version__", None)}
    get = lambda k: getattr(cfg, k, None)                                    # noqa: E731
    use = cfg.get_use_cuda() if hasattr(cfg, "get_use_cuda") else None
    return {"version": getattr(keopscore, "__version__", None), "use_cuda": use,
            "cuda_version": get("cuda_version"), "n_gpus": get("n_gpus"),
            "cuda_include_path": get("cuda_include_path"), "libcuda_folder": get("libcuda_folder"),
            "libnvrtc_folder": get("libnvrtc_folder"), "message": get("cuda_message") or None,
            "build_folder": str(getattr(keopscore, "build_folder", None))}


def keops_probe(device="cuda", d=10) -> dict:
    """One KeOps pair sum (ReLU kernel, grad, float32, N = 64) on ``device`` against the numpy
    reference: compiles that formula (it is the one the tests and benchmarks use first)."""
    from meanfield.interact import KeOpsBackend, NumpyBackend
    from meanfield.models import Unit, gaussian_kernel

    unit = Unit(d, "relu", output_weight=True)
    kern = gaussian_kernel(unit)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 64, unit.D, generator=g, dtype=torch.float64)
    c = torch.full((1, 64), 1 / 64, dtype=torch.float64)
    t0 = time.perf_counter()
    try:
        be = KeOpsBackend()
        S, G = be.kernel_sum(kern, unit, x.float().to(device), x.float().to(device), c.float().to(device))
        if torch.device(device).type == "cuda":
            torch.cuda.synchronize()
        first = time.perf_counter() - t0
        S0, G0 = NumpyBackend().kernel_sum(kern, unit, x, x, c)
        err = float((G.double().cpu() - G0).abs().max() / G0.abs().max())
        return {"ok": err < 1e-4, "device": str(device), "first_call_s": round(first, 2),
                "grad_rel_err": err, "formula": f"relu pair sum, grad, float32, d={d}"}
    except Exception as e:
        return {"ok": False, "device": str(device), "error": _first_line(e),
                "seconds": round(time.perf_counter() - t0, 2)}


def environment(probe: bool = True) -> dict:
    """Everything ``env`` records (module docstring)."""
    from meanfield.interact import keops_cache_dir

    os.environ.setdefault("KEOPS_CACHE_FOLDER", str(keops_cache_dir()))
    cuda = torch.cuda.is_available()
    info = {"date_utc": utc_now(), "python": sys.version.split()[0], "executable": sys.executable,
            "platform": platform.platform(), "cpu_count": os.cpu_count(),
            "torch": torch.__version__, "torch_cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version() if cuda else None,
            "cuda_available": cuda, "cuda_device_count": torch.cuda.device_count() if cuda else 0,
            # TF32 matmuls would cost float32 pair sums ~1e-3 relative accuracy (default: off)
            "float32_matmul_precision": torch.get_float32_matmul_precision(),
            "cuda_matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
            "env": {k: os.environ.get(k) for k in ENV_VARS},
            "tools": {"nvidia-smi": _run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                                          "--format=csv,noheader"]),
                      "nvcc": (_run(["nvcc", "--version"]) or "").splitlines()[-1:] or None,
                      "g++": (_run(["g++", "--version"]) or "").splitlines()[:1] or None},
            "packages": _packages()}
    if cuda:
        info.update({k: v for k, v in device_info("cuda").items()
                     if k.startswith("gpu")})
    else:
        info["note"] = "no CUDA: running the CPU-side checks only"
    info["imports"] = _imports()
    from meanfield.interact import keops_available

    info["keops_available"] = keops_available()
    info["keops_config"] = _keops_config()
    if cuda and probe:
        info["keops_probe"] = keops_probe("cuda")
    else:
        info["keops_probe"] = {"skipped": "no CUDA" if not cuda else "--no-probe"}
    return info


# ---------------------------------------------------------------------------------------
# interact: the GPU benchmark set
# ---------------------------------------------------------------------------------------

GOAL_N_BIG = 10 ** 6          # N = 10⁶ in ≤ 2 s
GOAL_SECONDS_BIG = 2.0
GOAL_N_SPEEDUP = 10 ** 5      # ≥ 3× the faster autograd baseline at N = 10⁵
GOAL_SPEEDUP = 3.0
LIBRARY_ON_DEVICE = ("torch", "torch-eager", "keops")


def interact_goals(rows, auto=None) -> dict:
    """The GPU speed goals (``GOAL_*``: N = 10⁶ in ≤ 2 s; ≥ 3× the faster autograd baseline at
    N = 10⁵) evaluated on benchmark rows (float32 unless said otherwise)."""
    ok = [r for r in rows if not r.get("skipped")]
    f32 = [r for r in ok if r.get("dtype", "float32") == "float32"]

    def best(rs, names):
        rs = [r for r in rs if r["backend"] in names]
        return min(rs, key=lambda r: r["median_s"]) if rs else None

    goals: dict = {}
    big = best([r for r in f32 if r["N"] == GOAL_N_BIG], LIBRARY_ON_DEVICE)
    goals["n1e6_le_2s"] = ({"met": big["median_s"] <= GOAL_SECONDS_BIG, "backend": big["backend"],
                            "median_s": big["median_s"]} if big else
                           {"met": None, "why": "no library backend measured at N = 10⁶"})
    lib = best([r for r in f32 if r["N"] == GOAL_N_SPEEDUP], LIBRARY_ON_DEVICE)
    base = best([r for r in f32 if r["N"] == GOAL_N_SPEEDUP], ("dense-autograd", "keops-autograd"))
    skipped = {r["backend"]: r["skipped"] for r in rows
               if r["N"] == GOAL_N_SPEEDUP and r.get("skipped") and r.get("baseline")
               and r.get("dtype", "float32") == "float32"}
    if lib and base:
        ratio = base["median_s"] / lib["median_s"]
        goals["speedup_vs_autograd_at_1e5"] = {"met": ratio >= GOAL_SPEEDUP, "ratio": ratio,
                                               "library": lib["backend"], "baseline": base["backend"],
                                               "baselines_skipped": skipped}
    else:
        goals["speedup_vs_autograd_at_1e5"] = {"met": None, "library": lib and lib["backend"],
                                               "baselines_skipped": skipped,
                                               "why": "a library backend or both baselines were not measured"}
    mem = {}
    for name in sorted({r["backend"] for r in f32 if "peak_cuda_mb" in r}):
        pts = sorted((r["N"], r["peak_cuda_mb"]) for r in f32 if r["backend"] == name and "peak_cuda_mb" in r)
        entry = {"peak_cuda_mb": {str(n): round(v, 1) for n, v in pts}}
        if len(pts) >= 2 and pts[-2][0] != pts[-1][0]:     # the two largest N: least overhead
            (n0, m0), (n1, m1) = pts[-2], pts[-1]
            entry["exponent_last_two_N"] = (math.log(m1) - math.log(m0)) / (math.log(n1) - math.log(n0))
            entry["bytes_per_particle_at_max_N"] = m1 * 2 ** 20 / n1
        mem[name] = entry
    goals["gpu_memory"] = mem
    if auto is not None:
        decided = [a for a in auto if a["agrees"] is not None]
        goals["auto_picks_fastest"] = {"met": all(a["agrees"] for a in decided) if decided else None,
                                       "per_N": [{k: a[k] for k in ("N", "dtype", "auto_picks", "fastest")}
                                                 for a in auto]}
    return goals


def run_interact(a) -> dict:
    from . import interact as bi

    t_start = time.monotonic()
    deadline = None if a.budget_s is None else t_start + a.budget_s
    info = {**machine(), **device_info(a.device)}
    log = lambda s: print(s, file=sys.stderr, flush=True)                  # noqa: E731
    done: list = []
    payload = {"benchmark": "interact-gpu", "machine": info, "results": done, "complete": False}

    def partial(rows, base=None):
        payload["results"] = (base or []) + rows
        write_json(a.json, payload)

    # float32 gets the time left less a reserve for the float64 rows
    d32 = None if deadline is None else deadline - min(a.f64_reserve_s, 0.3 * a.budget_s)
    rows32 = bi.run(a.n, [a.d], a.backend, repeat=a.repeat, device=a.device, max_seconds=a.max_seconds,
                    check_numpy_max_n=a.check_numpy_max_n, log=log, dtype=torch.float32,
                    deadline=d32, progress=partial)
    rows64 = []
    if a.n_f64:
        rows64 = bi.run(a.n_f64, [a.d], a.backend, repeat=a.repeat, device=a.device,
                        max_seconds=a.max_seconds, check_numpy_max_n=a.check_numpy_max_n, log=log,
                        dtype=torch.float64, deadline=deadline,
                        progress=lambda rows: partial(rows, rows32))
    rows = rows32 + rows64
    auto = bi.auto_report(rows, a.device)
    info["loadavg_at_end"] = os.getloadavg()
    payload.update({"results": rows, "fits": fit_exponents(rows, ["backend", "d", "dtype"], min_x=a.fit_min_n),
                    "auto": auto, "goals": interact_goals(rows, auto), "complete": True,
                    "seconds": time.monotonic() - t_start})
    bi.print_table(rows, bi.columns_for(rows) + [("dtype", "dtype", "s")])
    write_json(a.json, payload)
    print(json.dumps(payload["goals"], indent=1, default=float))
    return payload


# ---------------------------------------------------------------------------------------
# summary
# ---------------------------------------------------------------------------------------

def read_junit(path) -> dict:
    """Counts and per-test outcomes from a pytest junit XML file."""
    import xml.etree.ElementTree as ET

    root = ET.parse(path).getroot()
    cases = []
    for tc in root.iter("testcase"):
        name = f"{tc.get('classname', '')}::{tc.get('name', '')}"
        outcome, msg = "passed", None
        for child in tc:
            if child.tag in ("failure", "error"):
                outcome, msg = ("failed" if child.tag == "failure" else "error"), child.get("message")
            elif child.tag == "skipped":
                kind = child.get("type", "")
                outcome = "xfailed" if "xfail" in kind else "skipped"
                msg = child.get("message")
        cases.append({"test": name, "outcome": outcome, "seconds": float(tc.get("time", 0) or 0),
                      **({"message": (msg or "")[:300]} if msg else {})})
    counts: dict = {}
    for c in cases:
        counts[c["outcome"]] = counts.get(c["outcome"], 0) + 1
    return {"counts": counts, "tests": cases}


def _load(path):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def summarise_sgd(payload) -> list[dict]:
    """Per (N, d, replicas): µs/step of each implementation and device, and whether the GPU's
    best beat the CPU fused loop."""
    groups: dict = {}
    for r in payload.get("results", []):
        if r.get("skipped"):
            continue
        key = (r["N"], r["d"], r["replicas"])
        groups.setdefault(key, {})[f"{r['impl']} ({r.get('device', 'cpu')})"] = r["us_per_step"]
    out = []
    for (N, d, B), t in sorted(groups.items()):
        cpu = t.get("fast (cpu)")
        gpu = [v for k, v in t.items() if "(cuda)" in k]
        out.append({"N": N, "d": d, "replicas": B, "us_per_step": t,
                    "gpu_beats_cpu_fused": (min(gpu) < cpu) if (cpu and gpu) else None})
    return out


def summarise_nscaling(payload) -> dict:
    keep = ("fit", "fit_cpu_range", "fit_large_N", "N_done", "N_skipped", "seconds")
    out = {}
    for part in ("device_run", "cpu_run"):
        sec = payload.get(part) or {}
        out[part] = {k: sec[k] for k in keep if k in sec}
        out[part]["device"] = sec.get("device")
    out["agreement"] = payload.get("agreement")
    out["complete"] = payload.get("complete")
    return out


def summary(a) -> dict:
    out = Path(a.outdir)
    stages = []
    if a.stages and Path(a.stages).exists():
        for line in Path(a.stages).read_text().splitlines():
            parts = line.split("\t")
            if len(parts) >= 5:
                stages.append({"stage": parts[0], "status": parts[1], "rc": int(parts[2]) if parts[2].lstrip("-").isdigit() else None,
                               "seconds": float(parts[3]), "limit_s": float(parts[4]),
                               **({"note": parts[5]} if len(parts) > 5 and parts[5] else {})})
    env = _load(out / "environment.json") or {}
    cuda = env.get("cuda_available", None if a.cuda is None else bool(a.cuda))
    res = {"date_utc": utc_now(), "cuda": cuda, "gpu": env.get("gpu"),
           "torch": env.get("torch"), "keops": (env.get("packages", {}).get("pykeops") or {}).get("version"),
           "keops_probe": env.get("keops_probe"), "budget_s": a.budget_s, "elapsed_s": a.elapsed_s,
           "stages": stages}
    if a.junit and Path(a.junit).exists():
        try:
            res["pytest"] = read_junit(a.junit)
        except Exception as e:
            res["pytest"] = {"error": _first_line(e)}
    files = {}
    for p in sorted(out.glob("*.json")):
        if p.name in ("summary.json", "environment.json"):
            continue
        data = _load(p)
        if not isinstance(data, dict):
            files[p.name] = {"error": "unreadable"}
            continue
        entry = {"benchmark": data.get("benchmark"), "complete": data.get("complete")}
        if data.get("benchmark") in ("interact-gpu", "interact"):
            entry["goals"] = data.get("goals") or interact_goals(data.get("results", []), data.get("auto"))
            entry["rows"] = sum(1 for r in data.get("results", []) if not r.get("skipped"))
            entry["skipped"] = [f"N={r['N']} {r.get('dtype', '')} {r['backend']}: {r['skipped']}"
                                for r in data.get("results", []) if r.get("skipped")]
        elif data.get("benchmark") == "sgd":
            entry["sgd"] = summarise_sgd(data)
        elif data.get("benchmark") == "n-scaling":
            entry["n_scaling"] = summarise_nscaling(data)
        files[p.name] = entry
    res["results"] = files
    write_json(out / "summary.json", res)
    print(json.dumps({k: res[k] for k in ("cuda", "gpu", "budget_s", "elapsed_s")}, default=float))
    for s in stages:
        print(f"  stage {s['stage']:<10} {s['status']:<8} {s['seconds']:7.1f} s  (limit {s['limit_s']:.0f} s)"
              + (f"  {s['note']}" if s.get("note") else ""))
    if "pytest" in res and "counts" in res["pytest"]:
        print(f"  pytest: {res['pytest']['counts']}")
    for name, e in files.items():
        print(f"  {name}: complete={e.get('complete')}")
        for k, v in (e.get("goals") or {}).items():
            if isinstance(v, dict) and "met" in v:
                print(f"    {k}: met={v['met']}  " + json.dumps({x: y for x, y in v.items() if x not in ("met", "per_N")}, default=float,
                                                          ensure_ascii=False)[:200])
        for row in e.get("sgd", []):
            print(f"    sgd B={row['replicas']}: " + json.dumps(row["us_per_step"], default=float))
        ns = e.get("n_scaling")
        if ns:
            for part in ("device_run", "cpu_run"):
                f = ns[part].get("fit") or {}
                if "slope" in f:
                    print(f"    n-scaling {part} ({ns[part].get('device')}): slope {f['slope']:.3f} "
                          f"[{f['ci95'][0]:.3f}, {f['ci95'][1]:.3f}] over N={ns[part].get('N_done')}")
    return res


# ---------------------------------------------------------------------------------------

def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.gpu", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("env", help="record the environment (and probe KeOps on CUDA)")
    e.add_argument("--json", required=True)
    e.add_argument("--no-probe", action="store_true", help="do not compile the KeOps probe formula")
    i = sub.add_parser("interact", help="the GPU benchmark set of hot path 1")
    i.add_argument("--json", required=True)
    i.add_argument("--device", default="cuda")
    i.add_argument("--n", type=int, nargs="+", default=[10 ** 4, 10 ** 5, 10 ** 6, 10 ** 7])
    i.add_argument("--n-f64", type=int, nargs="*", default=[10 ** 4, 10 ** 5])
    i.add_argument("--d", type=int, default=10)
    i.add_argument("--backend", nargs="+", default=["torch", "keops", "dense-autograd", "keops-autograd"])
    i.add_argument("--repeat", type=int, default=5)
    i.add_argument("--max-seconds", type=float, default=5.0,
                   help="skip a backend whose predicted time per call exceeds this")
    i.add_argument("--check-numpy-max-n", type=int, default=2000)
    i.add_argument("--fit-min-n", type=int, default=10 ** 4)
    i.add_argument("--budget-s", type=float, default=None)
    i.add_argument("--f64-reserve-s", type=float, default=25.0,
                   help="seconds of the budget kept for the float64 rows")
    s = sub.add_parser("summary", help="gather the stages' results into OUT/summary.json")
    s.add_argument("outdir")
    s.add_argument("--stages", default=None, help="TSV: stage, status, rc, seconds, limit, note")
    s.add_argument("--junit", default=None)
    s.add_argument("--budget-s", type=float, default=None)
    s.add_argument("--elapsed-s", type=float, default=None)
    s.add_argument("--cuda", type=int, choices=[0, 1], default=None,
                   help="whether the script saw CUDA (used when environment.json is missing)")
    a = p.parse_args(argv)
    if a.cmd == "env":
        info = environment(probe=not a.no_probe)
        write_json(a.json, info)
        print(json.dumps({k: info.get(k) for k in ("python", "torch", "torch_cuda", "cuda_available", "gpu",
                                                     "keops_available", "keops_probe")}, default=str))
        if not info["cuda_available"]:
            print(info["note"])
        return info
    if a.cmd == "interact":
        return run_interact(a)
    return summary(a)


if __name__ == "__main__":
    main()
