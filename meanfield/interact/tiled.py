"""Tiled torch backend: O(N) or O(tile · M) memory, never N × M.

Two code paths compute the same sums (see ``interact.base``):

* **fused native** (float32 or float64 on CPU, the default there): one C++ loop over pairs that computes
  p = ⟨w_i, w_j⟩, the kernel's (κ, α, β) and the three sums in registers, 4 rows × 16
  columns at a time, on ``torch.get_num_threads()`` threads.  Its source is *generated from
  the kernel's own formulas*: ``kernel.coeffs`` is called once with symbolic arguments
  (:class:`CppOps`), which records every operation as a line of C++ — the backend still
  never knows which kernel it sums.  Memory is O((N + M) d).  Built once per (kernel, d, dtype)
  by ``interact.native`` (about 2 s) and cached; without a compiler, the eager path runs.
  arccos/arcsin are ``native``'s branch-free polynomials in both dtypes (a few ulp), so the
  loop vectorises in float64 too (std::acos would not).
* **eager tiles** (CUDA, autograd, or no compiler): rows of x in tiles; per tile one
  matmul for the dot products, the elementwise formulas in torch, and two matmuls for the
  sums (Σ_j c'_j κ_ij, Σ_j c'_j α_ij w_j).  Runs on any device and is differentiable.
  On the CPU the tiles are small (temporaries of ≤ ``tile_bytes``/8 = 1 MiB, which the
  allocator reuses instead of mapping fresh pages for each) and run on one thread when a tile
  holds fewer than ``EAGER_THREADS_MIN_ELEMENTS`` values: torch's per-operation parallel regions
  over ~10⁵ values cost more in synchronisation than they gain, and on a loaded machine each
  one can wait a scheduler time slice for a descheduled thread (measured: one
  float64 400 × 400 ``acos`` took 2.4 ms on 2 threads against 0.33 ms on 1; the eager
  N = 400 float64 pair sum 30–74 ms against 3–6.5 ms, with 4·10³ page faults per call at the
  former 64 MiB tiles).
"""
from __future__ import annotations

import contextlib
import ctypes
import math

import torch

from . import native
from .base import Backend, assemble_grad, check_shapes, split_aw
from .ops import TorchOps

# ---------------------------------------------------------------------------------------
# kernel formulas → C++ (the same formula text that numpy, torch and KeOps evaluate)
# ---------------------------------------------------------------------------------------


def _lit(v) -> str:
    v = float(v)
    if not math.isfinite(v):
        raise ValueError(f"non-finite constant {v} in a kernel formula")
    return f"T({v!r})"


class _Sym:
    """A scalar in generated C++ code: every operation appends one `const T tK = …;` line."""

    def __init__(self, prog, code):
        self.prog, self.code = prog, code

    def _new(self, expr):
        return self.prog.emit(expr)

    @staticmethod
    def _c(v):
        return v.code if isinstance(v, _Sym) else _lit(v)

    def __add__(self, o): return self._new(f"{self.code} + {self._c(o)}")
    def __radd__(self, o): return self._new(f"{self._c(o)} + {self.code}")
    def __sub__(self, o): return self._new(f"{self.code} - {self._c(o)}")
    def __rsub__(self, o): return self._new(f"{self._c(o)} - {self.code}")
    def __mul__(self, o): return self._new(f"{self.code} * {self._c(o)}")
    def __rmul__(self, o): return self._new(f"{self._c(o)} * {self.code}")
    def __truediv__(self, o): return self._new(f"{self.code} / {self._c(o)}")
    def __rtruediv__(self, o): return self._new(f"{self._c(o)} / {self.code}")
    def __neg__(self): return self._new(f"-{self.code}")


class _Prog:
    def __init__(self):
        self.lines: list[str] = []

    def emit(self, expr) -> _Sym:
        name = f"t{len(self.lines)}"
        self.lines.append(f"    const T {name} = {expr};")
        return _Sym(self, name)


class CppOps:
    """The ``ops`` namespace for symbolic C++ scalars (see ``interact.ops``)."""

    @staticmethod
    def sqrt(x):
        """The C++ expression ``std::sqrt(x)``."""
        return x._new(f"std::sqrt({x.code})")

    @staticmethod
    def acos(x):
        """The C++ expression ``mf_acos(x)`` (``native``'s branch-free polynomial arccos)."""
        return x._new(f"mf_acos({x.code})")

    @staticmethod
    def asin(x):
        """The C++ expression ``mf_asin(x)`` (``native``'s branch-free polynomial arcsin)."""
        return x._new(f"mf_asin({x.code})")

    @staticmethod
    def clamp(x, lo, hi):
        """The C++ expression ``x < lo ? lo : (x > hi ? hi : x)`` (constants as literals)."""
        lo_, hi_ = _lit(lo), _lit(hi)
        return x._new(f"{x.code} < {lo_} ? {lo_} : ({x.code} > {hi_} ? {hi_} : {x.code})")


def kernel_cpp(kernel, name: str, outputs: str) -> str:
    """An inline C++ function ``name(p, nx, ny, &out…)`` from the kernel's formulas;
    ``outputs`` is "coeffs" (κ, α, β) or "value" (κ)."""
    prog = _Prog()
    args = [_Sym(prog, "p"), _Sym(prog, "nx"), _Sym(prog, "ny")]
    res = kernel.coeffs(CppOps, *args) if outputs == "coeffs" else (kernel.value(CppOps, *args),)
    outs = ["o_k", "o_a", "o_b"][:len(res)]
    body = prog.lines + [f"    {o} = {_Sym._c(r)};" for o, r in zip(outs, res)]
    sig = ", ".join(f"T& {o}" for o in outs)
    return (f"static inline void {name}(const T p, const T nx, const T ny, {sig}) {{\n"
            + "\n".join(body) + "\n}\n")


# Loop shape (measured on a 2-core AVX-512 machine, benchmarks/README.md):
_R = 4            # rows per register block for d ≤ 16 (dot products and formulas in one loop)
_R_STRIP = 8      # rows per block for d > 16 (each loaded 16-column strip is reused 8 times)
_JB = 256         # columns per block for d ≤ 16 (c'α of the R rows stays in L1) ...
_JB_STRIP = 1024  # ... and for d > 16 (fewer horizontal reductions per column block), in
                  # float32; float64 halves it (the R × JB block buffers stay the same bytes)
_VL = 16          # columns per strip (one AVX-512 float register); M is padded to a multiple
_CTYPES = {torch.float32: "float", torch.float64: "double"}
EAGER_THREADS_MIN_ELEMENTS = 2 ** 20   # CPU eager tiles smaller than this run on one thread


_L2_SOURCES = 2 ** 20  # bytes of source positions per column super-block (half of L2)


def _rows(d):
    return _R_STRIP if d > 16 else _R


def _col_block(d, itemsize=4):
    """Columns per column block (the c'α buffer of the R rows has R × JB values)."""
    return _JB if d <= 16 else _JB_STRIP * 4 // itemsize


def _column_block(d, itemsize=4):
    """Columns per super-block: a multiple of the column block, d × CB values of ``itemsize``
    bytes ≈ _L2_SOURCES."""
    jb = _col_block(d, itemsize)
    return max(jb, (_L2_SOURCES // (itemsize * d)) // jb * jb)


def _block_cpp(R: int, grad: bool, strip: bool) -> str:
    """C++ for R rows against all M columns.  ``strip`` (large d): the dot products are
    computed 16 columns at a time with the R × 16 accumulators kept across the d loop (a
    register-blocked matmul), then the formulas run over the block; otherwise (small d) one
    SIMD loop over columns does dot products and formulas together."""
    rs = range(R)
    fn = f"mf_block_{R}_{int(grad)}"
    L = [f"static void {fn}(long i0, const T* __restrict X, const T* __restrict nx, "
         "const T* __restrict YT, const T* __restrict ny, const T* __restrict c, long M, long ldy, "
         "T* __restrict ks, T* __restrict bs, T* __restrict aw) {",
         f"    alignas(64) T ca[{R}][JB];",
         f"    T xr[{R}][DIM];"]
    L += [f"    alignas(64) T pb[{R}][JB];"] if strip else []
    L += [f"    for (int k = 0; k < DIM; ++k) xr[{r}][k] = X[(i0 + {r}) * DIM + k];" for r in rs]
    L += [f"    const T n{r} = nx[i0 + {r}]; T K{r} = 0, B{r} = 0;" for r in rs]
    L += [f"    T A{r}[DIM] = {{}};" for r in rs] if grad else []
    L += ["    for (long j0 = 0; j0 < M; j0 += JB) {",
          "        const int jn = (int)std::min<long>(JB, M - j0);",
          "        const T* __restrict yb = YT + j0; const T* __restrict nb = ny + j0; "
          "const T* __restrict cb = c + j0;"]
    if strip:
        L += ["        for (int jv = 0; jv < jn; jv += VL) {",
              "            " + " ".join(f"T q{r}[VL] = {{}};" for r in rs),
              "            for (int k = 0; k < DIM; ++k) {",
              "                const T* __restrict y = yb + (long)k * ldy + jv;",
              "                " + " ".join(f"const T x{r} = xr[{r}][k];" for r in rs),
              "                #pragma omp simd",
              "                for (int l = 0; l < VL; ++l) { const T yl = y[l]; "
              + " ".join(f"q{r}[l] += x{r} * yl;" for r in rs) + " }",
              "            }",
              "            for (int l = 0; l < VL; ++l) { "
              + " ".join(f"pb[{r}][jv + l] = q{r}[l];" for r in rs) + " }",
              "        }"]
    L += ["        " + " ".join(f"T ks{r} = 0, bs{r} = 0;" for r in rs),
          "        #pragma omp simd reduction(+:" + ", ".join(f"ks{r}, bs{r}" for r in rs) + ")",
          "        for (int j = 0; j < jn; ++j) {"]
    if strip:
        L += ["            " + " ".join(f"const T p{r} = pb[{r}][j];" for r in rs)]
    else:
        L += ["            " + " ".join(f"T p{r} = 0;" for r in rs),
              "            for (int k = 0; k < DIM; ++k) { const T y = yb[(long)k * ldy + j]; "
              + " ".join(f"p{r} += xr[{r}][k] * y;" for r in rs) + " }"]
    L += ["            const T cj = cb[j], nyj = nb[j];"]
    for r in rs:
        if grad:
            L.append(f"            {{ T kk, aa, bb; mf_coeffs(p{r}, n{r}, nyj, kk, aa, bb); "
                     f"ks{r} += cj * kk; bs{r} += cj * bb; ca[{r}][j] = cj * aa; }}")
        else:
            L.append(f"            {{ T kk; mf_value(p{r}, n{r}, nyj, kk); ks{r} += cj * kk; }}")
    L += ["        }",
          "        " + " ".join(f"K{r} += ks{r}; B{r} += bs{r};" for r in rs)]
    if grad and strip:
        # Σ_j c'α_ij y_jk for 4 rows × 4 coordinates at a time: 8 loads per 16 FMAs
        L += ["        int k = 0;",
              "        for (; k + 4 <= DIM; k += 4) {",
              "            const T* __restrict yk = yb + (long)k * ldy;"]
        for g0 in range(0, R, 4):
            grp = range(g0, min(R, g0 + 4))
            acc = [f"a{r}_{q}" for r in grp for q in range(4)]
            L += ["            {",
                  "            " + " ".join(f"T {a} = 0;" for a in acc),
                  "            #pragma omp simd reduction(+:" + ", ".join(acc) + ")",
                  "            for (int j = 0; j < jn; ++j) { "
                  + " ".join(f"const T y{q} = yk[{q} * ldy + j];" for q in range(4)) + " "
                  + " ".join(f"const T c{r} = ca[{r}][j];" for r in grp) + " "
                  + " ".join(f"a{r}_{q} += c{r} * y{q};" for r in grp for q in range(4)) + " }",
                  "            " + " ".join(f"A{r}[k + {q}] += a{r}_{q};" for r in grp for q in range(4)),
                  "            }"]
        L += ["        }",
              "        for (; k < DIM; ++k) {",
              "            const T* __restrict yk = yb + (long)k * ldy;",
              "            " + " ".join(f"T a{r} = 0;" for r in rs),
              "            #pragma omp simd reduction(+:" + ", ".join(f"a{r}" for r in rs) + ")",
              "            for (int j = 0; j < jn; ++j) { const T y = yk[j]; "
              + " ".join(f"a{r} += ca[{r}][j] * y;" for r in rs) + " }",
              "            " + " ".join(f"A{r}[k] += a{r};" for r in rs),
              "        }"]
    elif grad:
        L += ["        for (int k = 0; k < DIM; ++k) {",
              "            const T* __restrict yk = yb + (long)k * ldy;",
              "            " + " ".join(f"T a{r} = 0;" for r in rs),
              "            #pragma omp simd reduction(+:" + ", ".join(f"a{r}" for r in rs) + ")",
              "            for (int j = 0; j < jn; ++j) { const T y = yk[j]; "
              + " ".join(f"a{r} += ca[{r}][j] * y;" for r in rs) + " }",
              "            " + " ".join(f"A{r}[k] += a{r};" for r in rs),
              "        }"]
    L += ["    }"]
    for r in rs:                                     # accumulate: columns come in super-blocks
        L.append(f"    ks[i0 + {r}] += K{r};")
        if grad:
            L.append(f"    bs[i0 + {r}] += B{r}; "
                     f"for (int k = 0; k < DIM; ++k) aw[(i0 + {r}) * DIM + k] += A{r}[k];")
    L.append("}")
    return "\n".join(L) + "\n"


def pair_source(kernel, d: int, ctype: str = "float") -> str:
    """The complete C++ source of the fused pair sum for ``kernel`` in dimension d, with
    scalars of C type ``ctype`` ("float" or "double")."""
    if ctype not in ("float", "double"):
        raise ValueError(f"ctype must be 'float' or 'double', got {ctype!r}")
    size = 4 if ctype == "float" else 8
    parts = [native.MATH_PRELUDE, f"typedef {ctype} T;", f"constexpr int DIM = {int(d)};",
             f"constexpr int JB = {_col_block(d, size)};", f"constexpr int VL = {_VL};",
             f"constexpr long CB = {_column_block(d, size)};",
             kernel_cpp(kernel, "mf_coeffs", "coeffs"), kernel_cpp(kernel, "mf_value", "value")]
    strip = d > 16
    for grad in (True, False):
        parts += [_block_cpp(_rows(d), grad, strip), _block_cpp(1, grad, strip)]
    R = _rows(d)
    parts.append(f"""
extern "C" void mf_pair_sum(int grad, long N, long M, const T* X, const T* nx, const T* YT,
                            const T* ny, const T* c, T* ks, T* bs, T* aw, int nthreads) {{
    // outputs start at zero; columns in super-blocks of CB so that the block of sources
    // (d × CB values) stays in L2 while every row passes over it
    for (long i = 0; i < N; ++i) {{ ks[i] = 0; bs[i] = 0; }}
    for (long i = 0; i < N * DIM; ++i) aw[i] = 0;
    const long nblk = N / {R};
    for (long c0 = 0; c0 < M; c0 += CB) {{
        const long mc = std::min<long>(CB, M - c0);
        const T* Yc = YT + c0; const T* nyc = ny + c0; const T* cc = c + c0;
        mf_parallel(nblk + (N % {R}), nthreads, [&](long a, long b) {{
            for (long t = a; t < b; ++t) {{
                if (t < nblk) {{
                    if (grad) mf_block_{R}_1(t * {R}, X, nx, Yc, nyc, cc, mc, M, ks, bs, aw);
                    else mf_block_{R}_0(t * {R}, X, nx, Yc, nyc, cc, mc, M, ks, bs, aw);
                }} else {{
                    const long i = nblk * {R} + (t - nblk);
                    if (grad) mf_block_1_1(i, X, nx, Yc, nyc, cc, mc, M, ks, bs, aw);
                    else mf_block_1_0(i, X, nx, Yc, nyc, cc, mc, M, ks, bs, aw);
                }}
            }}
        }});
    }}
}}
""")
    return "\n".join(parts)


_PAIR_LIBS: dict = {}


def _pair_lib(kernel, d, dtype=torch.float32):
    """The loaded fused pair-sum library for (kernel, d, dtype), built on first use; None
    where no native code can be built."""
    ctype = _CTYPES[dtype]
    key = (type(kernel).__name__, kernel.name, d, ctype)
    if key not in _PAIR_LIBS:
        suffix = "" if ctype == "float" else "-f64"      # float32 keeps its cached file names
        lib = native.load(f"pairsum-{kernel.name}-d{d}{suffix}", pair_source(kernel, d, ctype))
        if lib is not None:
            lib.mf_pair_sum.restype = None
            lib.mf_pair_sum.argtypes = [ctypes.c_int, ctypes.c_long, ctypes.c_long] + \
                [ctypes.c_void_p] * 8 + [ctypes.c_int]
        _PAIR_LIBS[key] = lib
    return _PAIR_LIBS[key]


# ---------------------------------------------------------------------------------------


class TiledTorchBackend(Backend):
    """Pair sums in O(N·tile) memory.  ``native=True`` (default) uses the fused C++ loop for
    float32 or float64 CPU tensors (all three of one dtype) that need no autograd;
    ``native=False`` always runs eager tiles."""

    name = "torch"

    def __init__(self, tile_bytes: int = 8 * 2 ** 20, *, native: bool = True,
                 cuda_tile_bytes: int = 2 * 2 ** 30):
        self.tile_bytes = tile_bytes
        self.cuda_tile_bytes = cuda_tile_bytes
        self.native = native

    def tile_rows(self, B, M, itemsize, device=None):
        """Rows per eager tile: about 8 live [B, T, M] temporaries within ``tile_bytes``
        (on CUDA at least ``cuda_tile_bytes``: fewer, larger kernels; with M = 10⁶ float32
        sources a tile then holds 67 rows instead of 2)."""
        budget = self.tile_bytes
        if device is not None and torch.device(device).type == "cuda":
            budget = max(budget, self.cuda_tile_bytes)
        return max(1, int(budget // max(1, 8 * B * M * itemsize)))

    @staticmethod
    @contextlib.contextmanager
    def _eager_threads(device, tile_elements):
        """One torch thread inside the block for CPU tiles of fewer than
        ``EAGER_THREADS_MIN_ELEMENTS`` values (module docstring), restored afterwards."""
        n = torch.get_num_threads()
        if device.type != "cpu" or n == 1 or tile_elements >= EAGER_THREADS_MIN_ELEMENTS:
            yield
            return
        torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.set_num_threads(n)

    def uses_native(self, kernel, x, y, c) -> bool:
        """Whether :meth:`kernel_sum` would take the fused native path for these inputs."""
        if not (self.native and native.enabled()):
            return False
        if x.dtype not in _CTYPES or any(t.device.type != "cpu" or t.dtype != x.dtype
                                         for t in (x, y, c)):
            return False
        if torch.is_grad_enabled() and any(t.requires_grad for t in (x, y, c)):
            return False
        return True

    def kernel_sum(self, kernel, unit, x, y, c, *, grad=True):
        check_shapes(unit, x, y, c)
        if self.uses_native(kernel, x, y, c):
            lib = _pair_lib(kernel, unit.d, x.dtype)
            if lib is not None:
                return self._native_sum(lib, unit, x, y, c, grad)
        return self._eager_sum(kernel, unit, x, y, c, grad)

    # -- fused C++ ----------------------------------------------------------------------
    @staticmethod
    def _native_sum(lib, unit, x, y, c, grad):
        ax, wx = split_aw(unit, x)
        ay, wy = split_aw(unit, y)
        B, N, d = wx.shape
        M = wy.shape[-2]
        cy = c * ay                                                  # (B', M)
        nx = wx.norm(dim=-1).contiguous()                            # (B, N)
        ny = wy.norm(dim=-1).contiguous()                            # (B', M)
        wx = wx.contiguous()
        Mp = -(-M // _VL) * _VL                                      # M padded: zero weight,
        pad = Mp - M                                                 # zero w, unit norm
        pad_ = torch.nn.functional.pad                               # (may return views: copy)
        wyT = pad_(wy.transpose(-1, -2), (0, pad)).contiguous()      # (B', d, Mp)
        ny = pad_(ny, (0, pad), value=1.0).contiguous()              # (B', Mp)
        cy = pad_(cy, (0, pad)).contiguous()                         # (B', Mp)
        ks = torch.empty(B, N, dtype=x.dtype)
        bs = torch.empty(B, N, dtype=x.dtype)
        aw = torch.empty(B, N, d, dtype=x.dtype)
        nthreads = torch.get_num_threads() if N * M >= 65536 else 1
        for b in range(B):
            by, bc = (b if wy.shape[0] > 1 else 0), (b if cy.shape[0] > 1 else 0)
            cb = cy[bc].contiguous()
            lib.mf_pair_sum(int(grad), N, Mp, native.ptr(wx[b]), native.ptr(nx[b]),
                            native.ptr(wyT[by]), native.ptr(ny[by]), native.ptr(cb),
                            native.ptr(ks[b]), native.ptr(bs[b]), native.ptr(aw[b]), nthreads)
        S = ax * ks
        return S, (assemble_grad(unit, ax, wx, ks, aw, bs) if grad else None)

    # -- eager torch tiles ----------------------------------------------------------------
    def _eager_sum(self, kernel, unit, x, y, c, grad):
        ax, wx = split_aw(unit, x)
        ay, wy = split_aw(unit, y)
        cy = (c * ay).unsqueeze(-1)                                  # (B', M, 1)
        nx = wx.norm(dim=-1)                                         # (B, N)
        ny = wy.norm(dim=-1).unsqueeze(-2)                           # (B', 1, M)
        wyT = wy.transpose(-1, -2)                                   # (B', d, M)
        B, N, _ = wx.shape
        T = self.tile_rows(B, wy.shape[-2], wx.element_size(), wx.device)
        with self._eager_threads(wx.device, B * min(T, N) * wy.shape[-2]):
            return self._eager_tiles(kernel, unit, T, ax, wx, nx, wy, wyT, ny, cy, grad)

    @staticmethod
    def _eager_tiles(kernel, unit, T, ax, wx, nx, wy, wyT, ny, cy, grad):
        B, N, _ = wx.shape
        S_parts, G_parts = [], []
        for i0 in range(0, N, T):
            sl = slice(i0, i0 + T)
            X = wx[:, sl]                                            # (B, T, d)
            P = X @ wyT                                              # (B, T, M)
            nxt = nx[:, sl].unsqueeze(-1)                            # (B, T, 1)
            if grad:
                K, A, Bt = kernel.coeffs(TorchOps, P, nxt, ny)
                ksum = (K @ cy).squeeze(-1)                          # (B, T)
                alpha_w = (A * cy.transpose(-1, -2)) @ wy            # (B, T, d)
                beta_sum = (Bt @ cy).squeeze(-1)                     # (B, T)
                G_parts.append(assemble_grad(unit, ax[:, sl], X, ksum, alpha_w, beta_sum))
            else:
                ksum = (kernel.value(TorchOps, P, nxt, ny) @ cy).squeeze(-1)
            S_parts.append(ax[:, sl] * ksum)
        S = torch.cat(S_parts, dim=1)
        return S, (torch.cat(G_parts, dim=1) if grad else None)
