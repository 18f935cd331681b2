"""Shared helpers: repeated timing, per-measurement peak RSS, tables, JSON, fitted exponents,
and the machine and device records every benchmark JSON carries."""
from __future__ import annotations

import datetime
import importlib.metadata
import json
import math
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

import torch


def reset_peak_rss() -> bool:
    """Reset this process's peak-RSS counter (Linux: write 5 to /proc/self/clear_refs)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    """Peak resident set size since the last :func:`reset_peak_rss` (VmHWM), in MiB; the
    process-lifetime peak where the counter cannot be reset."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / (1024 * 1024) if sys.platform == "darwin" else r / 1024


def time_calls(fn, repeat: int, warmup: int = 1):
    """Run fn() ``warmup`` times untimed, then ``repeat`` timed; returns (times [s], last
    result, peak RSS [MiB] over the timed calls)."""
    out = None
    for _ in range(warmup):
        out = fn()
    reset_peak_rss()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return times, out, peak_rss_mb()


def summarise(times):
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times),
            "repeats": len(times)}


def machine() -> dict:
    try:
        load = os.getloadavg()
    except OSError:
        load = None
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version(),
            "loadavg_at_start": load, "command": " ".join(["python", "-m"] + [_module()] + sys.argv[1:])}


def utc_now() -> str:
    """The current date and time, UTC, to the second (ISO 8601)."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def package_version(name):
    """The installed version of distribution ``name``, or None when it is not installed."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def device_info(device="cpu") -> dict:
    """Date (UTC), the device, torch's CUDA build, the GPU and the KeOps versions — for the
    ``machine`` record of every benchmark JSON.  Imports nothing heavy (not pykeops)."""
    dev = torch.device(device)
    info = {"date_utc": utc_now(), "device": str(dev), "torch_cuda": torch.version.cuda,
            "cuda_available": torch.cuda.is_available(),
            "pykeops": package_version("pykeops"), "keopscore": package_version("keopscore")}
    if dev.type == "cuda" and torch.cuda.is_available():
        p = torch.cuda.get_device_properties(dev)
        info.update({"gpu": p.name, "gpu_memory_gib": round(p.total_memory / 2 ** 30, 1),
                     "gpu_multiprocessors": p.multi_processor_count,
                     "gpu_capability": f"{p.major}.{p.minor}"})
    return info


def _module():
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    return spec.name if spec is not None else sys.argv[0]


def fmt(v, spec):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return format(v, spec)


def print_table(rows, columns, file=None):
    """rows: list of dicts; columns: list of (header, key, format spec)."""
    file = file or sys.stdout
    cells = [[h for h, _, _ in columns]]
    for r in rows:
        cells.append([r.get("skipped") and k == "median_s" and "skipped" or fmt(r.get(k), s)
                      for _, k, s in columns])
    widths = [max(len(c[i]) for c in cells) for i in range(len(columns))]
    for n, c in enumerate(cells):
        print("  ".join(x.rjust(w) for x, w in zip(c, widths)), file=file)
        if n == 0:
            print("  ".join("-" * w for w in widths), file=file)
    for r in rows:
        if r.get("skipped"):
            print(f"  skipped: N={r.get('N')} {r.get('backend', r.get('impl'))}: {r['skipped']}",
                  file=file)


def fit_exponents(rows, group_keys, x_key="N", y_key="median_s", min_x=0):
    """log(time) ~ k log(N) per group over sizes ≥ min_x (scipy.stats.linregress); groups
    need ≥ 2 sizes."""
    from scipy.stats import linregress

    groups: dict = {}
    for r in rows:
        if r.get("skipped") or r.get(y_key) is None or r[x_key] < min_x:
            continue
        groups.setdefault(tuple(r[k] for k in group_keys), []).append(r)
    fits = []
    for key, rs in sorted(groups.items(), key=lambda kv: str(kv[0])):
        xs = sorted({r[x_key] for r in rs})
        if len(xs) < 2:
            continue
        res = linregress([math.log(r[x_key]) for r in rs], [math.log(r[y_key]) for r in rs])
        fits.append({**dict(zip(group_keys, key)), "exponent": res.slope,
                     "N_range": [xs[0], xs[-1]]})
    return fits


def write_json(path, payload):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=float))
    os.replace(tmp, path)
