"""Online SGD (one fresh sample per step) and minibatch SGD, many steps per call, in compiled code.

MMN-size systems (N ≈ 10³ particles, d ≈ 40) are latency-bound: a step needs a few µs of
arithmetic but tens of µs of torch-op overhead.  :func:`run` advances ``steps`` steps of
exactly the update of ``ParticleDynamics(drift="sgd", batch_size=n).step``

    θ_i ← θ_i − 2 s_k (∇_θΨ̂_k(θ_i) + λ θ_i) + sqrt(4 s_k / β(t_k)) ζ_i,   s_k = dt ξ(t_k)

in one C++ loop (``interact.native``; the source is generated for the unit's layout, its
activation and d, and cached), replicas spread over ``torch.get_num_threads()`` threads.
n = 1 runs ``mf_sgd`` (the next step's preactivations fused into the update pass); n > 1
runs ``mf_sgd_batch`` (the batch-mean gradient, then the update).

**Random stream.**  The samples and the noise come from the state's generator *in the same
order and with the same shapes as the step-by-step path* (per step: x [B, n, d] through
``task.sample`` — for a teacher–student task only x and the label noise are drawn, the
teacher output is computed in C — then ζ [B, N, D] when β(t_k) < ∞).  So a fast run
consumes exactly the same random numbers as ``steps`` calls of ``step``; the trajectories
agree to float rounding (sums are taken in a different order), and a fast run is itself
bit-for-bit reproducible and resumable: ``run(s, a + b)`` equals ``run(run(s, a), b)``
exactly, since each step's arithmetic does not depend on how steps are grouped into calls.
``state.step``, ``state.t`` (t ← t + dt rounded to 15 digits, as in ``step``) and the
generator advance as with ``step``.

Divergence is checked once per chunk of steps (``DivergenceError`` names the chunk), not
after every step.  CPU tensors only; anything unsupported (see :func:`unsupported`) runs
the step-by-step path.
"""
from __future__ import annotations

import ctypes
import math
from dataclasses import replace

import torch

from ..errors import DivergenceError
from ..interact import native
from ..models.tasks import TeacherStudent

CHUNK_STEPS = 1024             # steps per C call (bounded by CHUNK_BYTES of noise)
CHUNK_BYTES = 32 * 2 ** 20

_ACT = {
    "relu": ("z > T(0) ? z : T(0)", "z > T(0) ? T(1) : T(0)"),
    "erf": ("std::erf(z * T(0.7071067811865476))",
            "T(0.7978845608028654) * std::exp(T(-0.5) * z * z)"),
    "tanh": ("std::tanh(z)", "T(1) - std::tanh(z) * std::tanh(z)"),
    "sigmoid": ("T(1) / (T(1) + std::exp(-z))",
                "(T(1) / (T(1) + std::exp(-z))) * (T(1) - T(1) / (T(1) + std::exp(-z)))"),
    "linear": ("z", "T(1)"),
}


def _act_cpp(activation) -> tuple[str, str]:
    if activation.name == "pwl":               # c + Σ_j α_j (z − τ_j)_+
        from ..models.activations import pwl_ramps

        c, ramps = pwl_ramps(dict(activation.params))
        val = " + ".join([f"T({c!r})"] + [f"T({a!r}) * (z > T({t!r}) ? z - T({t!r}) : T(0))"
                                          for a, t in ramps])
        der = " + ".join(["T(0)"] + [f"(z > T({t!r}) ? T({a!r}) : T(0))" for a, t in ramps])
        return val, der
    if activation.name == "piecewise":
        p = {k: repr(float(v)) for k, v in activation.params}
        t1, t2, s1, s2 = (f"T({p[k]})" for k in ("t1", "t2", "s1", "s2"))
        u = f"((z - {t1}) / ({t2} - {t1}))"
        return (f"{s1} + ({s2} - {s1}) * ({u} < T(0) ? T(0) : ({u} > T(1) ? T(1) : {u}))",
                f"(z > {t1} && z < {t2}) ? ({s2} - {s1}) / ({t2} - {t1}) : T(0)")
    return _ACT[activation.name]


def sgd_source(unit, ctype: str) -> str:
    """C++ source of the multi-step loop for this unit (layout, activation, d) and type."""
    sig, dsig = _act_cpp(unit.activation)
    ow, bias = int(unit.output_weight), int(unit.bias)
    return native.MATH_PRELUDE + f"""
typedef {ctype} T;
constexpr int d = {unit.d};
constexpr int D = {unit.D};
constexpr int OW = {ow};
constexpr int BIAS = {bias};
static inline T act(const T z) {{ return {sig}; }}
static inline T dact(const T z) {{ return {dsig}; }}
static inline T zacc4(T z, T v0, T v1, T v2, T v3, T n0, T n1, T n2, T n3) {{
    return std::fma(v3, n3, std::fma(v2, n2, std::fma(v1, n1, std::fma(v0, n0, z))));
}}

// One replica, K steps.  th: [D, N] (transposed), x: [K, B, d], y/e: [K, B] or null.
static void replica(long b, long K, long B, long N, T* __restrict th, const T* __restrict m,
                    const T* __restrict x, const T* __restrict yv, const T* __restrict e,
                    T noise_std, T offset, long m0, const T* __restrict tt, const T* __restrict tw,
                    const T* __restrict s2, const T* __restrict sc, const T* __restrict nz, T lam) {{
    std::vector<T> zb(N), sb(N), cb(N);
    T* __restrict z = zb.data(); T* __restrict sg = sb.data(); T* __restrict cds = cb.data();
    T* __restrict a = th;                         // row 0 when OW
    T* __restrict w = th + OW * N;                // rows OW .. OW + d - 1
    T* __restrict bb = th + (D - 1) * N;          // last row when BIAS
    // z = <w_i, x_0> for the first step (later steps get it from the fused update pass;
    // the same operations in the same order, so chunk boundaries never change a result)
    for (long i = 0; i < N; ++i) z[i] = 0;
    {{
        const T* __restrict x0p = x + b * d;
        int q = 0;
        for (; q + 4 <= d; q += 4) {{
            const T* __restrict w0 = w + q * N; const T* __restrict w1 = w0 + N;
            const T* __restrict w2 = w1 + N; const T* __restrict w3 = w2 + N;
            #pragma omp simd
            for (long i = 0; i < N; ++i)
                z[i] = zacc4(z[i], w0[i], w1[i], w2[i], w3[i], x0p[q], x0p[q + 1], x0p[q + 2], x0p[q + 3]);
        }}
        for (; q < d; ++q) {{
            const T* __restrict wq = w + q * N;
            #pragma omp simd
            for (long i = 0; i < N; ++i) z[i] = std::fma(wq[i], x0p[q], z[i]);
        }}
    }}
    for (long k = 0; k < K; ++k) {{
        const T* __restrict xk = x + (k * B + b) * d;
        const T* __restrict xn = x + ((k + 1 < K ? k + 1 : k) * B + b) * d;
        const bool more = k + 1 < K;
        const T* __restrict nk = nz ? nz + (k * B + b) * D * N : nullptr;
        const T sck = nz ? sc[k] : T(0);
        T y;
        if (yv) {{
            y = yv[k * B + b];
        }} else {{                                 // teacher: y = Σ_t m*_t a*_t σ(<w*_t, x>) + c + σ_ε ε
            y = 0;
            for (long t = 0; t < m0; ++t) {{
                const T* tr = tt + t * D;
                T zt = 0;
                for (int q = 0; q < d; ++q) zt += tr[OW + q] * xk[q];
                if (BIAS) zt += tr[D - 1];
                T ph = act(zt);
                if (OW) ph *= tr[0];
                y += ph * tw[t];
            }}
            y = y + offset;
            if (e) y = y + noise_std * e[k * B + b];
        }}
        T f = 0;
        #pragma omp simd reduction(+:f)
        for (long i = 0; i < N; ++i) {{
            if (BIAS) z[i] += bb[i];
            const T s = act(z[i]);
            sg[i] = s;
            f += (OW ? s * a[i] : s) * m[i];
        }}
        const T r = f - y, s2k = s2[k];
        #pragma omp simd
        for (long i = 0; i < N; ++i) {{
            T ds = dact(z[i]);
            if (OW) ds = ds * a[i];
            cds[i] = ds * r;
        }}
        if (OW) {{
            #pragma omp simd
            for (long i = 0; i < N; ++i) {{
                T v = a[i] - s2k * (sg[i] * r + lam * a[i]);
                if (nk) v = v + sck * nk[i];
                a[i] = v;
            }}
        }}
        if (BIAS) {{
            const T* __restrict nb = nk ? nk + (D - 1) * N : nullptr;
            #pragma omp simd
            for (long i = 0; i < N; ++i) {{
                T v = bb[i] - s2k * (cds[i] + lam * bb[i]);
                if (nb) v = v + sck * nb[i];
                bb[i] = v;
            }}
        }}
        // update w and, in the same pass, accumulate the next step's z = <w_i, x_{{k+1}}>,
        // four coordinates per pass so that z and cds are loaded once per four rows of w
        for (long i = 0; i < N; ++i) z[i] = 0;
        int q = 0;
        for (; q + 4 <= d; q += 4) {{
            const T x0 = xk[q], x1 = xk[q + 1], x2 = xk[q + 2], x3 = xk[q + 3];
            const T n0 = more ? xn[q] : T(0), n1 = more ? xn[q + 1] : T(0),
                    n2 = more ? xn[q + 2] : T(0), n3 = more ? xn[q + 3] : T(0);
            T* __restrict w0 = w + q * N; T* __restrict w1 = w0 + N;
            T* __restrict w2 = w1 + N; T* __restrict w3 = w2 + N;
            if (nk) {{
                const T* __restrict e0 = nk + (OW + q) * N; const T* __restrict e1 = e0 + N;
                const T* __restrict e2 = e1 + N; const T* __restrict e3 = e2 + N;
                #pragma omp simd
                for (long i = 0; i < N; ++i) {{
                    const T c = cds[i];
                    const T v0 = (w0[i] - s2k * (c * x0 + lam * w0[i])) + sck * e0[i];
                    const T v1 = (w1[i] - s2k * (c * x1 + lam * w1[i])) + sck * e1[i];
                    const T v2 = (w2[i] - s2k * (c * x2 + lam * w2[i])) + sck * e2[i];
                    const T v3 = (w3[i] - s2k * (c * x3 + lam * w3[i])) + sck * e3[i];
                    w0[i] = v0; w1[i] = v1; w2[i] = v2; w3[i] = v3;
                    z[i] = zacc4(z[i], v0, v1, v2, v3, n0, n1, n2, n3);
                }}
            }} else {{
                #pragma omp simd
                for (long i = 0; i < N; ++i) {{
                    const T c = cds[i];
                    const T v0 = w0[i] - s2k * (c * x0 + lam * w0[i]);
                    const T v1 = w1[i] - s2k * (c * x1 + lam * w1[i]);
                    const T v2 = w2[i] - s2k * (c * x2 + lam * w2[i]);
                    const T v3 = w3[i] - s2k * (c * x3 + lam * w3[i]);
                    w0[i] = v0; w1[i] = v1; w2[i] = v2; w3[i] = v3;
                    z[i] = zacc4(z[i], v0, v1, v2, v3, n0, n1, n2, n3);
                }}
            }}
        }}
        for (; q < d; ++q) {{
            const T xq = xk[q], xnq = more ? xn[q] : T(0);
            T* __restrict wq = w + q * N;
            const T* __restrict nq = nk ? nk + (OW + q) * N : nullptr;
            #pragma omp simd
            for (long i = 0; i < N; ++i) {{
                T v = wq[i] - s2k * (cds[i] * xq + lam * wq[i]);
                if (nq) v = v + sck * nq[i];
                wq[i] = v; z[i] = std::fma(v, xnq, z[i]);
            }}
        }}
    }}
}}

extern "C" long mf_sgd(long K, long B, long N, T* th, const T* m, long mstride,
                       const T* x, const T* yv, const T* e, T noise_std, T offset,
                       long m0, const T* tt, const T* tw, const T* s2, const T* sc,
                       const T* nz, T lam, int nthreads) {{
    mf_parallel(B, nthreads, [&](long b0, long b1) {{
        for (long b = b0; b < b1; ++b)
            replica(b, K, B, N, th + b * D * N, m + b * mstride, x, yv, e, noise_std, offset,
                    m0, tt, tw, s2, sc, nz, lam);
    }});
    long bad = 0;
    for (long i = 0; i < B * D * N; ++i) bad += !std::isfinite(th[i]);
    return bad;
}}

// Minibatch SGD (nb samples per step), one replica, K steps: the gradient of the batch mean
// Σ_j (r_j / nb) ∇_θφ(x_j; θ_i) from the positions before the step, then the update.
// th: [D, N]; x: [K, B, nb, d]; y/e: [K, B, nb] or null; nz: [K, B, D, N] or null.
static void replica_mb(long b, long K, long B, long N, long nb, T* __restrict th,
                       const T* __restrict m, const T* __restrict x, const T* __restrict yv,
                       const T* __restrict e, T noise_std, T offset, long m0,
                       const T* __restrict tt, const T* __restrict tw, const T* __restrict s2,
                       const T* __restrict sc, const T* __restrict nz, T lam) {{
    std::vector<T> zb(nb * N), cb(nb * N), rb(nb), gb(4 * N);
    T* __restrict z = zb.data(); T* __restrict cds = cb.data(); T* __restrict r = rb.data();
    T* __restrict g = gb.data();
    T* __restrict a = th;
    T* __restrict w = th + OW * N;
    T* __restrict bb = th + (D - 1) * N;
    for (long k = 0; k < K; ++k) {{
        const T* __restrict xk = x + (k * B + b) * nb * d;
        const T* __restrict nk = nz ? nz + (k * B + b) * D * N : nullptr;
        const T sck = nz ? sc[k] : T(0), s2k = s2[k];
        for (long j = 0; j < nb; ++j) {{
            const T* __restrict xj = xk + j * d;
            T y;
            if (yv) {{
                y = yv[(k * B + b) * nb + j];
            }} else {{
                y = 0;
                for (long t = 0; t < m0; ++t) {{
                    const T* tr = tt + t * D;
                    T zt = 0;
                    for (int q = 0; q < d; ++q) zt += tr[OW + q] * xj[q];
                    if (BIAS) zt += tr[D - 1];
                    T ph = act(zt);
                    if (OW) ph *= tr[0];
                    y += ph * tw[t];
                }}
                y = y + offset;
                if (e) y = y + noise_std * e[(k * B + b) * nb + j];
            }}
            T* __restrict zj = z + j * N;
            for (long i = 0; i < N; ++i) zj[i] = BIAS ? bb[i] : T(0);
            int q = 0;
            for (; q + 4 <= d; q += 4) {{
                const T* __restrict w0 = w + q * N; const T* __restrict w1 = w0 + N;
                const T* __restrict w2 = w1 + N; const T* __restrict w3 = w2 + N;
                #pragma omp simd
                for (long i = 0; i < N; ++i)
                    zj[i] = zacc4(zj[i], w0[i], w1[i], w2[i], w3[i], xj[q], xj[q + 1], xj[q + 2], xj[q + 3]);
            }}
            for (; q < d; ++q) {{
                const T* __restrict wq = w + q * N; const T xq = xj[q];
                #pragma omp simd
                for (long i = 0; i < N; ++i) zj[i] = std::fma(wq[i], xq, zj[i]);
            }}
            T f = 0;
            #pragma omp simd reduction(+:f)
            for (long i = 0; i < N; ++i) f += (OW ? act(zj[i]) * a[i] : act(zj[i])) * m[i];
            r[j] = (f - y) / T(nb);
        }}
        // cds_ji = σ'(z_ji) a_i r_j (before a moves); g_i = Σ_j σ(z_ji) r_j (the a-gradient)
        for (long i = 0; i < N; ++i) g[i] = 0;
        for (long j = 0; j < nb; ++j) {{
            const T rj = r[j];
            T* __restrict zj = z + j * N; T* __restrict cj = cds + j * N;
            #pragma omp simd
            for (long i = 0; i < N; ++i) {{
                T ds = dact(zj[i]);
                if (OW) ds = ds * a[i];
                cj[i] = ds * rj;
                if (OW) g[i] += act(zj[i]) * rj;
            }}
        }}
        if (OW) {{
            #pragma omp simd
            for (long i = 0; i < N; ++i) {{
                T v = a[i] - s2k * (g[i] + lam * a[i]);
                if (nk) v = v + sck * nk[i];
                a[i] = v;
            }}
        }}
        if (BIAS) {{
            for (long i = 0; i < N; ++i) g[i] = 0;
            for (long j = 0; j < nb; ++j) {{
                const T* __restrict cj = cds + j * N;
                #pragma omp simd
                for (long i = 0; i < N; ++i) g[i] += cj[i];
            }}
            const T* __restrict nbn = nk ? nk + (D - 1) * N : nullptr;
            #pragma omp simd
            for (long i = 0; i < N; ++i) {{
                T v = bb[i] - s2k * (g[i] + lam * bb[i]);
                if (nbn) v = v + sck * nbn[i];
                bb[i] = v;
            }}
        }}
        int q = 0;
        for (; q + 4 <= d; q += 4) {{                 // four coordinates of w per pass over cds
            T* __restrict g0 = g; T* __restrict g1 = g + N; T* __restrict g2 = g + 2 * N;
            T* __restrict g3 = g + 3 * N;
            for (long i = 0; i < 4 * N; ++i) g[i] = 0;
            for (long j = 0; j < nb; ++j) {{
                const T* __restrict cj = cds + j * N; const T* __restrict xj = xk + j * d + q;
                const T x0 = xj[0], x1 = xj[1], x2 = xj[2], x3 = xj[3];
                #pragma omp simd
                for (long i = 0; i < N; ++i) {{
                    const T c = cj[i];
                    g0[i] = std::fma(c, x0, g0[i]); g1[i] = std::fma(c, x1, g1[i]);
                    g2[i] = std::fma(c, x2, g2[i]); g3[i] = std::fma(c, x3, g3[i]);
                }}
            }}
            for (int u = 0; u < 4; ++u) {{
                T* __restrict wq = w + (q + u) * N; const T* __restrict gq = g + u * N;
                const T* __restrict nq = nk ? nk + (OW + q + u) * N : nullptr;
                #pragma omp simd
                for (long i = 0; i < N; ++i) {{
                    T v = wq[i] - s2k * (gq[i] + lam * wq[i]);
                    if (nq) v = v + sck * nq[i];
                    wq[i] = v;
                }}
            }}
        }}
        for (; q < d; ++q) {{
            for (long i = 0; i < N; ++i) g[i] = 0;
            for (long j = 0; j < nb; ++j) {{
                const T* __restrict cj = cds + j * N; const T xq = xk[j * d + q];
                #pragma omp simd
                for (long i = 0; i < N; ++i) g[i] = std::fma(cj[i], xq, g[i]);
            }}
            T* __restrict wq = w + q * N;
            const T* __restrict nq = nk ? nk + (OW + q) * N : nullptr;
            #pragma omp simd
            for (long i = 0; i < N; ++i) {{
                T v = wq[i] - s2k * (g[i] + lam * wq[i]);
                if (nq) v = v + sck * nq[i];
                wq[i] = v;
            }}
        }}
    }}
}}

extern "C" long mf_sgd_batch(long K, long B, long N, long nb, T* th, const T* m, long mstride,
                             const T* x, const T* yv, const T* e, T noise_std, T offset,
                             long m0, const T* tt, const T* tw, const T* s2, const T* sc,
                             const T* nz, T lam, int nthreads) {{
    mf_parallel(B, nthreads, [&](long b0, long b1) {{
        for (long b = b0; b < b1; ++b)
            replica_mb(b, K, B, N, nb, th + b * D * N, m + b * mstride, x, yv, e, noise_std,
                       offset, m0, tt, tw, s2, sc, nz, lam);
    }});
    long bad = 0;
    for (long i = 0; i < B * D * N; ++i) bad += !std::isfinite(th[i]);
    return bad;
}}
"""


_LIBS: dict = {}


def _lib(unit, dtype):
    key = (unit.d, unit.output_weight, unit.bias, unit.activation, dtype)
    if key not in _LIBS:
        ctype = {torch.float32: "float", torch.float64: "double"}[dtype]
        lib = native.load(f"sgd-{unit.activation.name}-d{unit.d}-{ctype}", sgd_source(unit, ctype))
        if lib is not None:
            S = ctypes.c_float if dtype == torch.float32 else ctypes.c_double
            P, L = ctypes.c_void_p, ctypes.c_long
            lib.mf_sgd.restype = ctypes.c_long
            lib.mf_sgd.argtypes = [L, L, L, P, P, L, P, P, P, S, S, L, P, P, P, P, P, S,
                                   ctypes.c_int]
            lib.mf_sgd_batch.restype = ctypes.c_long
            lib.mf_sgd_batch.argtypes = [L, L, L, L, P, P, L, P, P, P, S, S, L, P, P, P, P, P, S,
                                         ctypes.c_int]
        _LIBS[key] = lib
    return _LIBS[key]


def unsupported(dyn, state) -> str | None:
    """Why ``dyn`` cannot run ``state`` on the fast path (None if it can)."""
    task = dyn.task
    if dyn.drift != "sgd":
        return "only SGD (drift='sgd': online or minibatch)"
    if getattr(task, "unit", None) is None:
        return "the task has no unit"
    if not getattr(task, "standard_model", True):
        return "the compiled loop computes f = Σ m_i φ(x; θ_i); this task's model is scaled or linearised"
    if getattr(task, "loss", "squared") != "squared":
        return f"the compiled loop is written for the squared loss, the task uses the {task.loss} loss"
    th = state.theta
    if th.device.type != "cpu" or th.dtype not in (torch.float32, torch.float64):
        return "CPU float32/float64 particles only"
    if not native.enabled():
        return "no C++ compiler (or MEANFIELD_NATIVE=0)"
    if _lib(task.unit, th.dtype) is None:
        return "the native SGD kernel could not be built"
    return None


def _chunk(B, N, D, itemsize, noisy):
    if not noisy:
        return CHUNK_STEPS
    return max(1, min(CHUNK_STEPS, CHUNK_BYTES // (B * N * D * itemsize)))


def _draw_steps(dyn, task, g, K, xv, e, y, nz, t, xi_c, beta_c, teacher, dtype, B):
    """Draw K steps' randomness in step()'s order: task.sample(1, …) (for a teacher: x, then
    the label noise), then ζ when β(t_k) < ∞.  Returns (2 s_k, noise scales, any noise, t)."""
    dt = dyn.dt
    ev = e.unbind(0) if e is not None else None
    s2, sc, any_noise = [], [], False
    for k in range(K):
        if teacher:
            xv[k].normal_(generator=g)
            if ev is not None:
                ev[k].normal_(generator=g)
        else:
            xk, yk = task.sample(dyn.batch_size, generator=g, batch=B, dtype=dtype,
                                 device=xv[k].device)
            xv[k].copy_(xk)
            y[k].copy_(yk)
        s = dt * (xi_c if xi_c is not None else dyn.xi(t))
        beta = beta_c if beta_c is not None else dyn.beta(t)
        s2.append(2.0 * s)
        if beta != math.inf:
            nz[k].normal_(generator=g)
            sc.append(math.sqrt(4.0 * s / beta))
            any_noise = True
        else:
            sc.append(0.0)
        t = float(f"{t + dt:.15g}")
    return s2, sc, any_noise, t


def run(dyn, state, steps: int):
    """Advance ``state`` by ``steps`` SGD steps of ``dyn`` (see the module docstring)."""
    reason = unsupported(dyn, state)
    if reason is not None:
        raise ValueError(f"fast SGD path unavailable: {reason}")
    task, unit = dyn.task, dyn.task.unit
    theta = state.theta
    B, N, D = theta.shape
    dtype, g = theta.dtype, state.generator
    lib = _lib(unit, dtype)
    nb = dyn.batch_size
    m = state.masses.contiguous()                                    # (1 or B, N)
    mstride = N if m.shape[0] > 1 else 0
    teacher = isinstance(task, TeacherStudent)
    if teacher:
        tt, tw = (t.contiguous() for t in task.teacher(dtype))
        noise_std, offset = task.noise_std, task.offset
    th = theta.transpose(-1, -2).contiguous()                        # (B, D, N)
    xi_c = dyn.xi.params[0] if dyn.xi.is_constant else None
    beta_c = dyn.beta.params[0] if dyn.beta.is_constant else None
    noisy_possible = not (beta_c == math.inf)
    dt, t, done = dyn.dt, state.t, 0
    nthreads = max(1, min(torch.get_num_threads(), B))
    Kmax = min(steps, _chunk(B, N, D, theta.element_size(), noisy_possible))
    x_buf = torch.empty(Kmax, B, nb, unit.d, dtype=dtype)            # buffers reused per chunk
    xv_all = x_buf.unbind(0)
    e_buf = torch.empty(Kmax, B, nb, dtype=dtype) if teacher and noise_std > 0 else None
    y_buf = torch.empty(Kmax, B, nb, dtype=dtype) if not teacher else None
    nz_buf = torch.empty(Kmax, B, N, D, dtype=dtype) if noisy_possible else None
    while done < steps:
        K = min(steps - done, Kmax)
        x, xv = x_buf[:K], xv_all[:K]
        e = e_buf[:K] if e_buf is not None else None
        y = y_buf[:K] if y_buf is not None else None
        nz = nz_buf[:K] if nz_buf is not None else None
        if teacher and e is None and xi_c is not None and beta_c == math.inf:
            for xk in xv:                    # the common case: only x is random
                xk.normal_(generator=g)
            for _ in range(K):
                t = float(f"{t + dt:.15g}")
            s2, sc, any_noise = [2.0 * dt * xi_c] * K, [0.0] * K, False
        elif not teacher and hasattr(task, "sample_steps") and xi_c is not None \
                and beta_c == math.inf:      # a task that draws K steps' samples in one call
            xk, yk = task.sample_steps(K, nb, generator=g, batch=B, dtype=dtype)
            x.copy_(xk)
            y.copy_(yk)
            for _ in range(K):
                t = float(f"{t + dt:.15g}")
            s2, sc, any_noise = [2.0 * dt * xi_c] * K, [0.0] * K, False
        else:
            s2, sc, any_noise, t = _draw_steps(dyn, task, g, K, xv, e, y, nz, t, xi_c, beta_c,
                                               teacher, dtype, B)
        s2t = torch.tensor(s2, dtype=dtype)
        sct = torch.tensor(sc, dtype=dtype)
        nzT = nz.transpose(-1, -2).contiguous() if any_noise else None    # (K, B, D, N)
        P = native.ptr
        z = None
        call = lib.mf_sgd if nb == 1 else (lambda *a: lib.mf_sgd_batch(a[0], a[1], a[2], nb, *a[3:]))
        bad = call(K, B, N, P(th), P(m), mstride, P(x),
                   P(y) if y is not None else z, P(e) if e is not None else z,
                   noise_std if teacher else 0.0, offset if teacher else 0.0,
                   tt.shape[0] if teacher else 0, P(tt) if teacher else z,
                   P(tw) if teacher else z, P(s2t), P(sct),
                   P(nzT) if nzT is not None else z, dyn.lam, nthreads)
        if bad:
            raise DivergenceError(
                f"steps {state.step + done}–{state.step + done + K}: non-finite particle "
                f"positions (step size 2ξdt up to {max(s2):.3g}); the step size is likely too large")
        done += K
    out = th.transpose(-1, -2).contiguous()
    return replace(state, theta=out, step=state.step + steps, t=t)
