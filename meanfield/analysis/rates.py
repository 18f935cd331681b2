"""Rates of the 2-D grid PDE experiments (pde2d-teacher, pde2d-torus): exponential rates in
t fitted from free-energy curves, rates in N of the particle–PDE gaps, and the
grid-refinement check beside those gaps.

The long-time exponential rate of a decaying gap g(t) = F(t) − F_∞ (:class:`RateRule` holds
the rule's parameters and states it in words, :meth:`RateRule.describe`):

* :func:`local_log_slope`: s(t) = −d/dt log g by ``linregress`` over a window of width w;
* :func:`settled_window`: the longest window, ending at the last defined s, where the local
  slopes agree within ``settle_tol``; :func:`grid_rate`: the grid's rate over it (and the
  Gibbs residual's, which decays at half that rate);
* :func:`exp_rate`: a least-squares fit of A e^{−rt} on the linear scale, and
  :func:`bootstrap_rate` with a percentile interval over seeds; :func:`resolved_records`
  and :func:`particle_rates`: the particles' rates where they resolve the grid's gap above
  their Monte-Carlo floor.

The asymptotic rate itself is the spectrum's (``meanfield.pde.grid2d_spectrum``: the grid PDE
linearised at its Gibbs state): :func:`spectral_table` reports a refinement sequence of it
and :func:`richardson` extrapolates a sequence to h → 0.

:func:`grid_curve` joins a PDE record's main and long-time parts; :func:`grid_refinement` is
fit.json's ``pde_grid``: the grid error between a grid and one twice as fine, beside the
particle–PDE gaps it must resolve.  :func:`risk_gap_tables` (pde2d-teacher) and
:func:`free_energy_tables` (pde2d-torus) make the per-record and per-N tables and the
log-log slopes in N.  Conventions: docs/design.md §1.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy.stats import linregress

from ..diagnostics import loglog_rate
from ..errors import ConfigError


@dataclass(frozen=True)
class RateRule:
    """The parameters of the long-time rate rule: the run's ``steps`` and ``dt`` (T = steps·dt;
    its plateau is the last quarter of [0, T]), ``fit_t0`` (no window starts before),
    ``fit_floor`` (local slopes only where every gap is ≥ it), ``slope_width`` w (the local
    slopes' window), ``settle_tol`` (the local slopes' spread max/min − 1 in the rate window)
    and ``snr`` (particles resolve a record where the grid's gap is ≥ snr × their Monte-Carlo
    floor)."""

    steps: int
    dt: float
    fit_t0: float
    fit_floor: float
    slope_width: float
    settle_tol: float
    snr: float

    @classmethod
    def from_config(cls, cfg) -> "RateRule":
        """The rule of a config: an object with these attributes (an experiment's Config) or
        a mapping with these keys (config.json's ``config``)."""
        keys = ("steps", "dt", "fit_t0", "fit_floor", "slope_width", "settle_tol", "snr")
        if isinstance(cfg, dict):
            return cls(**{k: cfg[k] for k in keys})
        return cls(**{k: getattr(cfg, k) for k in keys})

    @property
    def T(self) -> float:
        """The horizon steps·dt."""
        return self.steps * self.dt

    def plateau(self, t) -> np.ndarray:
        """Indices of the records t [K] in the last quarter of [0, T]."""
        return np.flatnonzero(t >= 0.75 * self.steps * self.dt - 1e-9 * max(1.0, self.steps * self.dt))

    def describe(self) -> str:
        """The window rule of the long-time rate, in words (written to fit.json)."""
        w = self.slope_width
        return (f"local log-slope s(t) = -d/dt log(F - F_inf): -slope of log(F - F_inf) against t over "
                f"the records in [t - {w:g}/2, t + {w:g}/2] (all of them with F - F_inf >= floor); "
                f"the grid's rate window ends at the last t where s is defined (floor fit_floor = "
                f"{self.fit_floor:g}) and extends back, from t >= fit_t0 = {self.fit_t0:g}, while "
                f"max s / min s - 1 < settle_tol = {self.settle_tol:g}; settled when the local slopes "
                f"span >= slope_width; the rate is -slope of log(F - F_inf) over the window.  "
                f"Particles at N: their gap is the seed-mean F_N minus c_N, c_N = the mean over the "
                f"plateau (last quarter of [0, T]) of F_N - (grid's F - F_inf); they resolve the "
                f"records from fit_t0 on where the grid's gap is >= snr = {self.snr:g} x sigma_N "
                f"(sigma_N: the seed mean's standard error on the plateau, the Monte-Carlo floor), "
                f"up to resolved_until; rates there by a least-squares fit of A exp(-r t) (the same "
                f"fit for the grid on the same records): the long-time rate on the resolved part of "
                f"the rate window (resolved only if it spans >= slope_width), and the matched-window "
                f"rate on [fit_t0, resolved_until]; "
                f"95 % percentile bootstrap intervals over seeds")


# ---- the grid's long-time rate ---------------------------------------------------------------
def local_log_slope(t, gap, width: float, floor: float) -> np.ndarray:
    """Local log-slope s(t_c) = −d/dt log gap at every record time t_c: −slope of
    ``linregress(t, log gap)`` over the records with |t − t_c| ≤ width/2.  Defined (NaN
    otherwise) only where that interval lies inside [t_0, t_{K−1}], holds ≥ 3 records, and
    every gap in it is ≥ ``floor``.  t [K] increasing, gap [K] → s [K]."""
    t, gap = np.asarray(t, dtype=np.float64), np.asarray(gap, dtype=np.float64)
    s = np.full(len(t), np.nan)
    if len(t) < 3:
        return s
    eps = 1e-9 * max(1.0, abs(float(t[-1])))
    for k, c in enumerate(t):
        if c - width / 2 < t[0] - eps or c + width / 2 > t[-1] + eps:
            continue
        sel = np.abs(t - c) <= width / 2 + eps
        if sel.sum() >= 3 and (gap[sel] >= floor).all():
            s[k] = -linregress(t[sel], np.log(gap[sel])).slope
    return s


def settled_window(t, s, *, t0: float, width: float, tol: float):
    """The long-time window of the local slopes s [K] at t [K], as record indices (ka, kb), or
    None when no local slope is defined at t ≥ t0 + width/2.  kb is the last record with a
    defined s; ka ≤ kb the earliest record such that s is defined and positive on all of
    [ka, kb], t_ka − width/2 ≥ t0, and max s / min s − 1 < tol there.  The data entering these
    local fits span [t_ka − width/2, t_kb + width/2]."""
    t, s = np.asarray(t, dtype=np.float64), np.asarray(s, dtype=np.float64)
    eps = 1e-9 * max(1.0, abs(float(t[-1]))) if len(t) else 0.0
    ok = np.isfinite(s) & (t - width / 2 >= t0 - eps)
    idx = np.flatnonzero(ok)
    if not len(idx) or not s[idx[-1]] > 0:
        return None
    kb = ka = int(idx[-1])
    lo = hi = s[kb]
    for k in range(kb - 1, -1, -1):
        if not ok[k] or not s[k] > 0:
            break
        lo2, hi2 = min(lo, s[k]), max(hi, s[k])
        if hi2 / lo2 - 1 >= tol:
            break
        lo, hi, ka = lo2, hi2, k
    return ka, kb


def grid_rate(rule: RateRule, t, gap, residual) -> dict:
    """The grid's long-time rate from its free-energy gap F(t) − F_∞ [K] and Gibbs residual
    ‖G(ρ_t) − ρ_t‖₁ [K] at t [K] (over [0, t_long]), by ``rule`` (:meth:`RateRule.describe`):
    a dict with ``settled``, ``long_time_rate_pde`` (None unless settled), ``rate_window``
    [t_a, t_b], the local slopes' range in it and at its end, the residual's rate over the
    same window (F − F_∞ is quadratic in ρ − ρ_∞, so it decays twice as fast as the residual)
    and ``local_slope`` [K] (:func:`local_log_slope`)."""
    w = rule.slope_width
    s = local_log_slope(t, gap, w, rule.fit_floor)
    win = settled_window(t, s, t0=rule.fit_t0, width=w, tol=rule.settle_tol)
    out = {"settled": False, "long_time_rate_pde": None, "rate_window": None,
           "local_slope_range": None, "local_slope_end": None, "gibbs_residual_rate": None,
           "local_slope": s}
    if win is None:
        return out
    ka, kb = win
    eps = 1e-9 * max(1.0, abs(float(t[-1])))
    ta, tb = float(t[ka] - w / 2), float(t[kb] + w / 2)
    sel = (t >= ta - eps) & (t <= tb + eps)
    out.update({"rate_window": [ta, tb], "local_slope_range": [float(s[ka:kb + 1].min()),
                                                               float(s[ka:kb + 1].max())],
                "local_slope_end": float(s[kb])})
    out["settled"] = bool(t[kb] - t[ka] >= w - eps)
    if out["settled"]:
        out["long_time_rate_pde"] = float(-linregress(t[sel], np.log(gap[sel])).slope)
        r = np.asarray(residual)[sel]
        if (r > 0).all():
            out["gibbs_residual_rate"] = float(-linregress(t[sel], np.log(r)).slope)
    return out


def grid_curve(pde):
    """The grid's record over [0, t_long] from a PDE record (main records, then the tail):
    (t [K], F − F_∞ [K], Gibbs residual [K])."""
    t = np.concatenate([np.asarray(pde["t"]), np.asarray(pde["t_tail"])[1:]])
    F = np.concatenate([np.asarray(pde["free_energy"]), np.asarray(pde["free_energy_tail"])[1:]])
    res = np.concatenate([np.asarray(pde["residual"]), np.asarray(pde["residual_tail"])[1:]])
    return t, F - float(pde["F_inf"]), res


# ---- exponential fits and the particles' rates ----------------------------------------------
RATE_GRID = np.linspace(-0.5, 3.0, 3501)     # candidate rates of :func:`exp_rate` (step 0.001)


def exp_rate(t, gap) -> np.ndarray:
    """Least-squares exponential rate of gap [..., k] at t [k]: the r of RATE_GRID (−0.5 … 3,
    step 0.001) minimising min_A Σ_j (gap_j − A e^{−r(t_j − t_0)})², i.e. maximising
    (gap·e_r)² / (e_r·e_r) over r with A = gap·e_r / e_r·e_r > 0.  On the linear scale (no
    logarithm of noisy near-floor values, so no resample is lost) → rates [...]."""
    t = np.asarray(t, dtype=np.float64)
    E = np.exp(-RATE_GRID[:, None] * (t - t[0])[None, :])                   # (R, k)
    proj = np.asarray(gap, dtype=np.float64) @ E.T                         # (..., R)
    score = np.where(proj > 0, proj * proj / (E * E).sum(1), -np.inf)
    return RATE_GRID[np.argmax(score, axis=-1)]


def bootstrap_rate(t, F, sel, offset, n_boot, generator):
    """:func:`exp_rate` of F̄ − c over the records ``sel`` [K] (bool) at t [K], F̄ the seed
    mean of F [B, K] and c = ``offset``(curves [n, K]) → [n] the limit of each curve (see
    :func:`particle_rates`), with a 95 % percentile interval over ``n_boot`` resamples of
    the seeds (index draws from the torch ``generator``).  Returns {"rate" (rounded to
    3 decimals), "ci95" (4 decimals)}."""
    B = F.shape[0]
    idx = torch.randint(B, (n_boot, B), generator=generator).numpy()             # (n_boot, B)
    curves = np.concatenate([F.mean(0)[None], F[idx].mean(1)])                  # (1 + n_boot, K)
    gap = curves[:, sel] - offset(curves)[:, None]                             # (1 + n_boot, k)
    r = np.concatenate([exp_rate(t[sel], gap[i:i + 500]) for i in range(0, len(gap), 500)])
    ci = np.percentile(r[1:], [2.5, 97.5])
    return {"rate": round(float(r[0]), 3), "ci95": [round(float(v), 4) for v in ci]}


def resolved_records(rule: RateRule, t, gap_pde, sigma: float) -> np.ndarray:
    """The records [K] (bool) the particles resolve, given their Monte-Carlo floor σ: from
    fit_t0 on, before the plateau (the last quarter of [0, T]), as long as the grid's gap
    gap_pde [K] at the row times t [K] stays ≥ snr·σ (a prefix: the grid's F decreases)."""
    T = rule.T
    eps = 1e-9 * max(1.0, T)
    cand = (t >= rule.fit_t0 - eps) & (t < 0.75 * T - eps)
    good = cand & (gap_pde >= rule.snr * sigma)
    first_bad = np.flatnonzero(cand & ~good)
    if len(first_bad):
        good &= t < t[first_bad[0]]
    return good


def particle_rates(rule: RateRule, t, F, gap_pde, window, *, n_boot: int, generator) -> dict:
    """Rates of the particles' free energy at N: F [B, K] per seed at the metrics rows t [K],
    gap_pde [K] the grid's F − F_∞ there, ``window`` the grid's rate window (or None).

    The particles' limit is c_N = mean over the plateau (the last quarter of [0, T]) of
    F̄_N − gap_pde — their plateau less what the grid still decays there (their own F_∞ plus
    their N-dependent bias) — and their gap is F̄_N(t) − c_N, F̄_N the seed mean.  The
    Monte-Carlo floor σ_N is the mean over the plateau of the seed mean's standard error;
    the particles resolve the records of :func:`resolved_records` (the grid's gap ≥ snr·σ_N),
    up to ``resolved_until``.  Rates by :func:`exp_rate` with 95 % bootstrap intervals over
    seeds (c_N re-estimated in every resample; ``n_boot`` resamples drawn from the torch
    ``generator``).  Returns {"floor", "resolved_until", "matched": {window, rate, ci95,
    rate_pde}, "long_time": {resolved, window, rate, ci95, rate_pde}}: ``matched`` over the whole resolved window, beside the grid's rate on the
    same records by the same estimator; ``long_time`` on the part of the resolved window
    inside the grid's rate window, resolved only if it spans ≥ slope_width."""
    T = rule.T
    eps = 1e-9 * max(1.0, T)
    plat = t >= 0.75 * T - eps
    B = F.shape[0]
    sigma = float((F[:, plat].std(0, ddof=1) / math.sqrt(B)).mean())
    good = resolved_records(rule, t, gap_pde, sigma)

    def offset(curves):                                         # c_N per curve [n]
        return (curves[:, plat] - gap_pde[plat]).mean(1)

    out = {"floor": sigma, "resolved_until": float(t[good][-1]) if good.any() else None}
    matched = {"window": None, "rate": None, "ci95": None, "rate_pde": None}
    if good.sum() >= 3:
        matched.update(bootstrap_rate(t, F, good, offset, n_boot, generator))
        matched["window"] = [float(t[good][0]), float(t[good][-1])]
        matched["rate_pde"] = round(float(exp_rate(t[good], gap_pde[good])), 3)
    long = {"resolved": False, "window": None, "rate": None, "ci95": None, "rate_pde": None}
    if window is not None:
        sel = good & (t >= window[0] - eps) & (t <= window[1] + eps)
        if sel.sum() >= 3 and t[sel][-1] - t[sel][0] >= rule.slope_width - eps:
            long.update(bootstrap_rate(t, F, sel, offset, n_boot, generator))
            long.update({"resolved": True, "window": [float(t[sel][0]), float(t[sel][-1])],
                         "rate_pde": round(float(exp_rate(t[sel], gap_pde[sel])), 3)})
    out.update({"matched": matched, "long_time": long})
    return out


# ---- the asymptotic rate from the spectrum ---------------------------------------------------
def richardson(h, values) -> dict:
    """Extrapolation to h → 0 of values [G] computed on grids of spacing h [G] (G ≥ 2, any
    order): with the three finest, v = a + b h^p solved exactly for (a, b, p) (p by
    ``scipy.optimize.brentq`` in [0.25, 8]; ``order`` None when the differences do not
    shrink monotonically); with the two finest, a with p = 2 (``extrapolated_p2``).  The
    ``error`` estimate is max(|a − a_p2|, |a − v_finest|/10) when three grids give an order,
    else |a_p2 − v_finest|.  Returns {"extrapolated", "order", "extrapolated_p2", "error",
    "finest"}."""
    from scipy.optimize import brentq

    h, v = np.asarray(h, np.float64), np.asarray(values, np.float64)
    o = np.argsort(-h)
    h, v = h[o], v[o]
    if len(h) < 2:
        raise ConfigError(f"richardson needs at least two grids, got {len(h)}")
    h2, h3, v2, v3 = h[-2], h[-1], v[-2], v[-1]
    a2 = float(v3 + (v3 - v2) * h3 ** 2 / (h2 ** 2 - h3 ** 2))
    out = {"extrapolated": a2, "order": None, "extrapolated_p2": a2, "error": abs(a2 - float(v3)),
           "finest": float(v3)}
    if len(h) >= 3:
        h1, v1 = h[-3], v[-3]
        q = (v1 - v2) / (v2 - v3) if v2 != v3 else math.inf

        def f(p):
            return (h1 ** p - h2 ** p) / (h2 ** p - h3 ** p) - q

        if math.isfinite(q) and q > 0 and f(0.25) * f(8.0) < 0:
            p = brentq(f, 0.25, 8.0)
            a = float(v3 - (v2 - v3) * h3 ** p / (h2 ** p - h3 ** p))
            out.update({"extrapolated": a, "order": float(p),
                        "error": max(abs(a - a2), abs(a - float(v3)) / 10)})
    return out


def spectral_table(seq: dict, time_unit: float = 1.0) -> dict:
    """fit.json's ``spectral``: the asymptotic rates of a grid refinement sequence
    (``meanfield.pde.grid2d_spectrum.spectral_sequence``: per grid the smallest non-zero
    eigenvalues μ of the flow linearised at the Gibbs state), in rates per ``time_unit`` (1:
    per unit of t; dt: per iteration).  ρ − ρ_∞ (and the Gibbs residual) decays at μ_1, the
    free energy's gap at 2μ_1.  Returns {"cells", "rate_free_energy" [G] (2μ_1), "rate_density"
    [G] (μ_1), "mu2_over_mu1" [G], "rate_frozen_potential" [G] (2μ_1 without the kernel term),
    "mass_mode_max", "max_imag", "gibbs_residual_max", "extrapolated": :func:`richardson` of
    2μ_1, "extrapolated_density": of μ_1}."""
    mu = np.asarray(seq["mu"], np.float64)
    u = float(time_unit)
    out = {"cells": [int(c) for c in np.asarray(seq["cells"])],
           "rate_free_energy": (2 * mu[:, 0] * u).tolist(), "rate_density": (mu[:, 0] * u).tolist(),
           "mu2_over_mu1": (mu[:, 1] / mu[:, 0]).tolist() if mu.shape[1] > 1 else None,
           "rate_frozen_potential": (2 * np.asarray(seq["mu_frozen_potential"]) * u).tolist(),
           "mass_mode_max": float(np.abs(seq["mass_mode"]).max()),
           "max_imag": float(np.max(seq["max_imag"])),
           "gibbs_residual_max": float(np.max(seq["gibbs_residual"]))}
    h = np.asarray(seq["h"], np.float64)
    if len(h) >= 2:
        out["extrapolated"] = richardson(h, 2 * mu[:, 0] * u)
        out["extrapolated_density"] = richardson(h, mu[:, 0] * u)
    return out


# ---- grid refinement -------------------------------------------------------------------------
def grid_refinement(pde, key, gaps: dict, window=None) -> dict | None:
    """fit.json's ``pde_grid``: the grid-error estimate max_t |q_h(t) − q_h/2(t)| of the
    compared quantity ``key`` ("risk" or "free_energy") between the run's grid and one twice
    as fine per direction (``pde[key + "_fine"]``, same recorded times), set beside the
    particle–PDE gaps the run reports (``gaps``: name → one gap per N): for each, the smallest
    and the ratio error / smallest (a comparison the grid resolves wants it ≪ 1; the small
    modes keep it < 0.1 for the gap their tests check).  ``window`` (record indices) restricts
    the error in those ratios to the times the gaps are measured at (``max_abs_change_window``);
    ``max_abs_change`` is over every recorded time.  None when no fine grid was solved
    (``pde_refine=false``)."""
    if key + "_fine" not in pde:
        return None
    diff = np.abs(np.asarray(pde[key], dtype=np.float64) - np.asarray(pde[key + "_fine"], dtype=np.float64))
    err = float(diff.max())
    out = {"cells": int(pde["cells"]), "cells_fine": 2 * int(pde["cells"]), "quantity": key,
           "max_abs_change": err, "abs_change_T": float(diff[-1]), "gaps": {}}
    if window is not None:
        err = out["max_abs_change_window"] = float(diff[np.asarray(window)].max())
    for name, g in gaps.items():
        smallest = float(np.min(g))
        out["gaps"][name] = {"smallest": smallest, "ratio": err / smallest if smallest > 0 else math.inf}
    return out


# ---- the tables in N ---------------------------------------------------------------------------
def _sd(v) -> float:
    """The standard error of a seed mean: s.d. (ddof 1) / √n of v [n]."""
    return float(v.std(ddof=1) / math.sqrt(len(v)))


def _num(v) -> float:
    """A float for summary.csv: NaN for None."""
    return float("nan") if v is None else float(v)


def risk_gap_tables(Ns, series: dict, *, n_boot: int = 2000, seed: int = 0):
    """pde2d-teacher's tables: the particles' risk against the grid PDE's, and W2, over N.

    ``series``: {N: metrics rows in step order}, a row {"step", "t", "risk": R_N [B] per seed,
    "risk_pde": R(t) of the grid, and at the W2 records "w2" [B']}.  Returns (metrics,
    summary, slopes): metrics, per N and record, the seed mean of R_N and its s.e. (s.d./√B),
    R(t), the mean over seeds of |R_N − R| and the mean W2; summary, per N, |R_N(T) − R(T)|
    and sup_t |R_N − R| (seed means and s.e.), bias_T = |mean_seeds R_N(T) − R(T)|, W2 at the
    first and the last W2 record (means and s.e.); slopes {"w2_T", "w2_0", "risk_gap_T",
    "sup_risk_gap"}: ``diagnostics.loglog_rate`` of each against N (``n_boot``, ``seed``)."""
    metrics, summary = [], []
    gaps_T, sup_gaps, w2_T, w2_0 = [], [], [], []
    for N in Ns:
        rows = series[N]
        for s in rows:
            B = len(s["risk"])
            row = {"N": N, "step": s["step"], "t": s["t"], "risk": float(s["risk"].mean()),
                   "risk_se": float(s["risk"].std(ddof=1) / math.sqrt(B)), "risk_pde": s["risk_pde"],
                   "risk_gap": float(np.abs(s["risk"] - s["risk_pde"]).mean())}
            if "w2" in s:
                row["w2"] = float(s["w2"].mean())
            metrics.append(row)
        gap = np.abs(rows[-1]["risk"] - rows[-1]["risk_pde"])
        sup = np.max([np.abs(s["risk"] - s["risk_pde"]) for s in rows], axis=0)
        w2s = [s["w2"] for s in rows if "w2" in s]
        gaps_T.append(gap)
        sup_gaps.append(sup)
        w2_T.append(w2s[-1])
        w2_0.append(w2s[0])
        summary.append({"N": N, "risk_gap_T": float(gap.mean()), "risk_gap_T_se": _sd(gap),
                        "sup_risk_gap": float(sup.mean()), "sup_risk_gap_se": _sd(sup),
                        "bias_T": float(abs(rows[-1]["risk"].mean() - rows[-1]["risk_pde"])),
                        "w2_0": float(w2s[0].mean()), "w2_0_se": _sd(w2s[0]),
                        "w2_T": float(w2s[-1].mean()), "w2_T_se": _sd(w2s[-1])})
    kw = {"n_boot": n_boot, "seed": seed}
    slopes = {"w2_T": loglog_rate(Ns, w2_T, **kw), "w2_0": loglog_rate(Ns, w2_0, **kw),
              "risk_gap_T": loglog_rate(Ns, gaps_T, **kw), "sup_risk_gap": loglog_rate(Ns, sup_gaps, **kw)}
    return metrics, summary, slopes


def free_energy_tables(rule: RateRule, Ns, series: dict, F_iid: dict, pde, window, *,
                       n_boot: int = 2000, seed: int = 0, generators: dict):
    """pde2d-torus's tables: the particles' free energy against the grid PDE's, over N.

    ``series``: {N: metrics rows in step order}, a row {"step", "t", "free_energy": F_N [B]
    per seed, "risk" [B], "neg_entropy" [B], and at the W2 records "w2" [B']}; ``F_iid``: {N:
    F of N i.i.d. draws of ρ_T minus the grid's F(T) [B]}; ``pde``: the grid record at the
    rows' times t [K] ("t", "free_energy", "risk", "neg_entropy", "F_inf"); ``window``: the
    grid's rate window (:func:`grid_rate`) or None; ``generators``: {N: torch generator of
    N's bootstrap resamples}.  Returns (metrics, summary, fit): metrics, per N and record, the
    seed means (and F's s.e.) beside the grid's values; summary, per N, the free-energy gap
    |mean over the plateau (:meth:`RateRule.plateau`) of F_N − F| (seed mean, s.e.), its
    signed mean (bias), the i.i.d. draws' |F − F(T)|, W2 at T, the Monte-Carlo floor and the
    rates of :func:`particle_rates` (NaN where none); fit {"free_energy_gap", "w2_T",
    "free_energy_gap_iid"}: ``diagnostics.loglog_rate`` against N (``n_boot``, ``seed``), and
    {"long_time_rate_particles", "matched_window_rates"}: per N (keys str(N)) the rates."""
    t = np.asarray(pde["t"])
    Fg = np.asarray(pde["free_energy"])
    F_inf = float(pde["F_inf"])
    plat = rule.plateau(t)
    metrics, summary, gaps, gaps_iid, w2_T, rates = [], [], [], [], [], {}
    for N in Ns:
        rows = series[N]
        F = np.stack([s["free_energy"] for s in rows], -1)                     # (B, T)
        B = F.shape[0]
        for s in rows:
            i = int(np.argmin(np.abs(t - s["t"])))
            row = {"N": N, "step": s["step"], "t": s["t"], "free_energy": float(s["free_energy"].mean()),
                   "free_energy_se": float(s["free_energy"].std(ddof=1) / math.sqrt(B)),
                   "free_energy_pde": float(Fg[i]), "risk": float(s["risk"].mean()),
                   "risk_pde": float(pde["risk"][i]), "neg_entropy": float(s["neg_entropy"].mean()),
                   "neg_entropy_pde": float(pde["neg_entropy"][i])}
            if "w2" in s:
                row["w2"] = float(s["w2"].mean())
            metrics.append(row)
        gap = np.abs((F[:, plat] - Fg[plat]).mean(-1))                          # (B,)
        w2 = [s["w2"] for s in rows if "w2" in s][-1]
        gaps.append(gap)
        gaps_iid.append(np.abs(F_iid[N]))
        w2_T.append(w2)
        rates[N] = particle_rates(rule, t, F, Fg - F_inf, window, n_boot=n_boot, generator=generators[N])
        mr, lr = rates[N]["matched"], rates[N]["long_time"]
        summary.append({"N": N, "free_energy_gap": float(gap.mean()), "free_energy_gap_se": _sd(gap),
                        "free_energy_bias": float((F[:, plat] - Fg[plat]).mean()),
                        "free_energy_gap_iid": float(gaps_iid[-1].mean()),
                        "free_energy_gap_iid_se": _sd(gaps_iid[-1]),
                        "w2_T": float(w2.mean()), "w2_T_se": _sd(w2),
                        "mc_floor": rates[N]["floor"],
                        "resolved_until": _num(rates[N]["resolved_until"]),
                        "rate_matched": _num(mr["rate"]),
                        "rate_matched_lo": _num(mr["ci95"] and mr["ci95"][0]),
                        "rate_matched_hi": _num(mr["ci95"] and mr["ci95"][1]),
                        "rate_matched_pde": _num(mr["rate_pde"]),
                        "long_time_rate": _num(lr["rate"]) if lr["resolved"] else float("nan")})
    kw = {"n_boot": n_boot, "seed": seed}
    fit = {"free_energy_gap": loglog_rate(Ns, gaps, **kw), "w2_T": loglog_rate(Ns, w2_T, **kw),
           "free_energy_gap_iid": loglog_rate(Ns, gaps_iid, **kw),
           "long_time_rate_particles": {str(N): {**rates[N]["long_time"], "floor": rates[N]["floor"]}
                                        for N in Ns},
           "matched_window_rates": {str(N): {**rates[N]["matched"],
                                             "resolved_until": rates[N]["resolved_until"]}
                                    for N in Ns}}
    return metrics, summary, fit
