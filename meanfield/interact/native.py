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


# Fast branch-free arc-sine/arc-cosine, so that the compiler vectorises the loops that call them
# (std::acos/std::asin are scalar library calls).  Both dtypes use the same reduction:
#   asin(s) = s + s z P(z),  z = s², for 0 ≤ s ≤ ½, and for ½ < |x| ≤ 1
#   asin|x| = π/2 − 2 asin(s),  acos x = 2 asin(s) (x > 0) or π − 2 asin(s) (x < 0),
#   s = √((1 − |x|)/2) ∈ [0, ½]  (1 − |x| is exact for |x| ≥ ½, so s is correctly rounded);
# the two branches are both computed and blended (selects, not jumps).  float32: the Cephes
# asinf polynomial (degree 4 in z, ~1 ulp).  float64: P of degree 11 in z, a relative-weighted
# least-squares fit on 200 Chebyshev nodes of [0, ¼] in 50-digit arithmetic (mpmath), max
# relative error of P 1.25e-15, i.e. < 3e-17 relative in asin; π/2 and π as hi + lo pairs, so
# the results are within a few ulp of the correctly rounded ones (tests/test_interact.py).
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

static const double MF_PIO2_HI = 1.5707963267948966, MF_PIO2_LO = 6.123233995736766e-17;
static const double MF_PI_HI = 3.141592653589793, MF_PI_LO = 1.2246467991473532e-16;
static inline double mf_asin_r(double ax, bool big) {
    // asin(s) for s = ax (small) or s = sqrt((1 - ax)/2) (big), s in [0, 1/2]
    const double z = big ? 0.5 * (1.0 - ax) : ax * ax;
    const double s = big ? std::sqrt(z) : ax;
    double P = 0.02817305169670452;
    P = P * z - 0.010754253819189541;
    P = P * z + 0.016038559905076553;
    P = P * z + 0.007801943829663346;
    P = P * z + 0.011875700165918232;
    P = P * z + 0.013929625916473681;
    P = P * z + 0.017355262221945347;
    P = P * z + 0.02237204751352192;
    P = P * z + 0.03038194737068087;
    P = P * z + 0.04464285710336827;
    P = P * z + 0.07500000000020797;
    P = P * z + 0.1666666666666665;
    return s + (s * z) * P;
}
static inline double mf_acos(double x) {
    const double ax = std::fabs(x);
    const bool big = ax > 0.5;
    const double r = mf_asin_r(ax, big);
    const double small_ = MF_PIO2_HI - (std::copysign(r, x) - MF_PIO2_LO);
    const double large_ = x > 0.0 ? 2.0 * r : (MF_PI_HI - 2.0 * r) + MF_PI_LO;
    return big ? large_ : small_;
}
static inline double mf_asin(double x) {
    const double ax = std::fabs(x);
    const bool big = ax > 0.5;
    const double r = mf_asin_r(ax, big);
    return std::copysign(big ? (MF_PIO2_HI - 2.0 * r) + MF_PIO2_LO : r, x);
}

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


_MATH_LIBS: dict = {}


def vector_math(fn: str, x):
    """``mf_acos`` or ``mf_asin`` (``fn`` = "acos" / "asin") of the fused pair loops applied
    elementwise to a CPU float32/float64 tensor x (any shape), through a small test library
    compiled from :data:`MATH_PRELUDE`; for checking them against numpy.  ``RuntimeError`` when
    no native library can be built here."""
    import torch

    if fn not in ("acos", "asin"):
        raise ValueError(f"fn must be 'acos' or 'asin', got {fn!r}")
    ctype = {torch.float32: "float", torch.float64: "double"}.get(x.dtype)
    if ctype is None or x.device.type != "cpu":
        raise ValueError(f"a CPU float32/float64 tensor is needed, got {x.dtype} on {x.device}")
    if ctype not in _MATH_LIBS:
        src = MATH_PRELUDE + f"typedef {ctype} T;\n" + "".join(
            f'extern "C" void mf_{f}_n(const T* x, T* y, long n) {{\n'
            f"    #pragma omp simd\n    for (long i = 0; i < n; ++i) y[i] = mf_{f}(x[i]);\n}}\n"
            for f in ("acos", "asin"))
        lib = load(f"vecmath-{ctype}", src)
        for f in ("acos", "asin"):
            if lib is not None:
                getattr(lib, f"mf_{f}_n").argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_long]
                getattr(lib, f"mf_{f}_n").restype = None
        _MATH_LIBS[ctype] = lib
    lib = _MATH_LIBS[ctype]
    if lib is None:
        raise RuntimeError("the native math library could not be built here")
    xc = x.contiguous()
    y = torch.empty_like(xc)
    getattr(lib, f"mf_{fn}_n")(ptr(xc), ptr(y), xc.numel())
    return y
