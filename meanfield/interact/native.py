"""Small native (C++) kernels built with the system compiler and loaded with ctypes.

The library's two CPU hot paths (the fused pair sum of ``interact.tiled`` and the multi-step
online SGD of ``dynamics.fast_sgd``) are plain C++ loops, generated as source text and
compiled here with ``g++ -O3 -march=native`` into a shared library (a couple of seconds,
once).  Nothing here links against torch: tensors are passed as raw pointers, so a build
needs only a C++17 compiler, and the result is cached in a writable per-project folder
(:func:`cache_dir`) under a name that hashes the source, the flags, the compiler and the
CPU, with a file lock and an atomic rename, so that concurrent processes never load a
half-written library.

Without a compiler (or if a build fails) :func:`load` returns None after a one-line
warning, and callers fall back to their torch code.  ``MEANFIELD_NATIVE=0`` switches the
native paths off (for comparisons and debugging).
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import warnings
from pathlib import Path

FLAGS = ("-O3", "-march=native", "-std=c++17", "-shared", "-fPIC", "-fopenmp-simd",
         "-fno-math-errno", "-fno-trapping-math", "-pthread")

_LOADED: dict = {}
_WARNED: set = set()


def cache_dir() -> Path:
    """``$MEANFIELD_NATIVE_CACHE`` if set; else ``<repo>/.cache/native`` for a source checkout;
    else ``~/.cache/meanfield/native``."""
    env = os.environ.get("MEANFIELD_NATIVE_CACHE")
    if env:
        return Path(env)
    repo = Path(__file__).resolve().parents[2]
    if (repo / "pyproject.toml").exists() and os.access(repo, os.W_OK):
        return repo / ".cache" / "native"
    return Path.home() / ".cache" / "meanfield" / "native"


def compiler() -> str | None:
    """The full path of the C++ compiler ``$CXX`` (default ``g++``) on PATH, or None."""
    return shutil.which(os.environ.get("CXX", "g++"))


def enabled() -> bool:
    """False when ``MEANFIELD_NATIVE=0`` or no C++ compiler is on PATH; in the latter case
    warns once (one line) that the slower torch code paths are used."""
    if os.environ.get("MEANFIELD_NATIVE", "1") == "0":
        return False
    if compiler() is None:
        _warn_once("compiler", "meanfield: no C++ compiler found (set CXX or install g++); "
                               "using the slower torch code paths")
        return False
    return True


def _cpu_fingerprint() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return line
    except OSError:
        pass
    import platform

    return platform.processor() + platform.machine()


def _warn_once(key, msg):
    if key not in _WARNED:
        _WARNED.add(key)
        warnings.warn(msg, RuntimeWarning, stacklevel=3)


def load(name: str, source: str) -> ctypes.CDLL | None:
    """Compile ``source`` (once, cached) and load it; None (with a one-line warning) if that
    is impossible here."""
    if not enabled():
        return None
    cxx = compiler()
    key = hashlib.sha256("\0".join([source, " ".join(FLAGS), cxx, _cpu_fingerprint()])
                         .encode()).hexdigest()[:16]
    if key in _LOADED:
        return _LOADED[key]
    out_dir = cache_dir()
    so = out_dir / f"{name}-{key}.so"
    try:
        if not so.exists():
            from filelock import FileLock

            out_dir.mkdir(parents=True, exist_ok=True)
            with FileLock(str(so) + ".lock"):
                if not so.exists():
                    src = out_dir / f"{name}-{key}.cpp"
                    src.write_text(source)
                    tmp = out_dir / f"{name}-{key}.{os.getpid()}.tmp.so"
                    res = subprocess.run([cxx, *FLAGS, str(src), "-o", str(tmp)],
                                         capture_output=True, text=True)
                    if res.returncode != 0:
                        raise RuntimeError(res.stderr.strip().splitlines()[-1:] or ["?"])
                    os.replace(tmp, so)
        lib = ctypes.CDLL(str(so))
    except Exception as e:  # pragma: no cover - depends on the machine
        _warn_once(name, f"meanfield: building the native {name} kernel failed ({e}); "
                         "using the slower torch code path")
        lib = None
    _LOADED[key] = lib
    return lib


def ptr(t) -> ctypes.c_void_p:
    """The data pointer of a contiguous CPU tensor."""
    return ctypes.c_void_p(t.data_ptr())


# Fast float32 arc-sine/arc-cosine (Cephes asinf polynomial, ~1 ulp), written branch-free so
# that the compiler vectorises the loops that call them; double uses the C library.
MATH_PRELUDE = r"""
#include <cmath>
#include <cstdint>
#include <algorithm>
#include <thread>
#include <vector>

static inline float mf_asin_r(float ax, bool big) {
    float z = big ? 0.5f * (1.0f - ax) : ax * ax;
    float s = big ? std::sqrt(z) : ax;
    float P = (((4.2163199048E-2f * z + 2.4181311049E-2f) * z + 4.5470025998E-2f) * z
               + 7.4953002686E-2f) * z + 1.6666752422E-1f;
    return s + s * z * P;
}
static inline float mf_acos(float x) {
    float ax = std::fabs(x);
    bool big = ax > 0.5f;
    float r = mf_asin_r(ax, big);
    float small_ = 1.57079632679489662f - std::copysign(r, x);
    float large_ = x > 0.0f ? 2.0f * r : 3.14159265358979324f - 2.0f * r;
    return big ? large_ : small_;
}
static inline float mf_asin(float x) {
    float ax = std::fabs(x);
    bool big = ax > 0.5f;
    float r = mf_asin_r(ax, big);
    return std::copysign(big ? 1.57079632679489662f - 2.0f * r : r, x);
}
static inline double mf_acos(double x) { return std::acos(x); }
static inline double mf_asin(double x) { return std::asin(x); }

template <class F>
static void mf_parallel(long n, int nthreads, F f) {
    if (nthreads <= 1 || n < 2) { f(0L, n); return; }
    long nt = std::min<long>(nthreads, n);
    std::vector<std::thread> pool;
    long chunk = (n + nt - 1) / nt;
    for (long t = 1; t < nt; ++t) {
        long a = t * chunk, b = std::min(n, a + chunk);
        if (a < b) pool.emplace_back(f, a, b);
    }
    f(0L, std::min(n, chunk));
    for (auto& th : pool) th.join();
}
"""
