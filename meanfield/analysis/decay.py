"""Decay rates and their baselines: how fast an error falls in N, and a free energy in time.

In N (the n-scaling experiment; docs/design.md §1: R = E[(y − f)²], no ½):

* :func:`iid_constant`, :func:`teacher_iid_constant`, :func:`mmn_constant`: the constants K
  of the K/N baselines — the excess risk of N i.i.d. draws from a law and Mei–Montanari–
  Nguyen's bound sup U(θ, θ) on a support;
* :func:`limit_fit`: R_N = R_∞ + C N^α fitted to seed means, R_∞ free;
* :func:`spread_slope` and :func:`slopes_vs_time`: log-log slopes of the seed-to-seed spread
  and of the risk at earlier times (the slope of the gap itself, with its bootstrap interval,
  is ``meanfield.diagnostics.loglog_rate``).

In time (the mfld-torus experiment): :func:`decay_rate`, the exponential rate at which a
seed-mean free energy F(k) approaches its stationary value, fitted until the gap meets a
noise floor, and :func:`decay_rate_rules`, that rate under two floor rules with bootstrap
intervals over seeds (how much the rate depends on the rule).

Pure functions of arrays (and, for the i.i.d. constants, of a task's closed-form kernels);
nothing here simulates.
"""
from __future__ import annotations

import math
import warnings

import numpy as np
import torch

from ..errors import ConfigError
from ..interact import evaluate


# ---- baselines of the gap in N ---------------------------------------------------------------
def iid_constant(task, theta: torch.Tensor, backend="auto") -> np.ndarray:
    """E_x Var_ρ φ(x; θ) = ∫ U(θ,θ) dρ − ∬ U dρ dρ per replica [B] for ρ = uniform on θ [B, N, D]
    (float64): drawing N i.i.d. particles from ρ gives E R(ρ_N) − R(ρ) = this / N.
    U(θ, θ) = a² |w|² / 2 for ReLU units with an output weight (θ = (a, w)); ∬U = Σ_i m_i
    (Ψ_i − V_i) from the task's closed-form potential (``interact.evaluate``)."""
    th = theta.double()
    pot = evaluate(task, th, backend=backend)
    self_u = (th[..., 0] ** 2 * (th[..., 1:] ** 2).sum(-1) / 2).mean(-1)
    cross = (pot.psi - pot.V).mean(-1)
    return (self_u - cross).numpy()


def teacher_iid_constant(task) -> float:
    """:func:`iid_constant` of the teacher's own law ρ* = Σ_k m*_k δ_{θ*_k} of a ReLU
    teacher-student task (no offset or label noise): Σ_k m*_k a*_k²|w*_k|²/2 − R_#, since
    ∬U dρ* dρ* = E f*² = R_#.  As R(ρ*) = 0, this / N is the whole risk of N i.i.d. draws."""
    tt, tw = task.teacher(torch.float64)
    return float((tw * tt[:, 0] ** 2 * (tt[:, 1:] ** 2).sum(-1) / 2).sum()) - task.risk_sharp


def mmn_constant(theta: torch.Tensor) -> float:
    """K = max_i U(θ_i, θ_i) = max_i a_i²|w_i|²/2 over θ [..., N, 1 + d] (ReLU units with an
    output weight): the constant of Mei–Montanari–Nguyen's |inf R_N − inf R| ≤ K/N, taken
    over the support θ (ReLU units are unbounded, so sup U over all θ is infinite)."""
    th = theta.double()
    return float((th[..., 0] ** 2 * (th[..., 1:] ** 2).sum(-1) / 2).max())


# ---- fits in N -------------------------------------------------------------------------------
def limit_fit(n, means, sd, replicas: int) -> dict:
    """R_N = R_∞ + C N^α fitted to the seed means ``means`` [K] at the sizes ``n`` [K]
    (``scipy.optimize.curve_fit`` from (0, means[0]·n[0], −1), weighted by the standard
    errors sd/√replicas of the seed s.d. ``sd`` [K], at most 20 000 evaluations): {"R_inf",
    "R_inf_se" (inf when the covariance is singular), "alpha"}, or {"error": message} when
    the fit fails."""
    from scipy.optimize import OptimizeWarning, curve_fit

    try:
        with warnings.catch_warnings():          # a singular covariance is reported as se = inf
            warnings.simplefilter("ignore", OptimizeWarning)
            (r_inf, c, alpha), cov = curve_fit(lambda n, r0, c, a: r0 + c * n ** a, np.array(n, float),
                                               means, p0=(0.0, means[0] * n[0], -1.0),
                                               sigma=np.maximum(sd / math.sqrt(replicas), 1e-300),
                                               maxfev=20_000)
        se = float(math.sqrt(cov[0, 0])) if np.isfinite(cov[0, 0]) and cov[0, 0] >= 0 else math.inf
        return {"R_inf": float(r_inf), "R_inf_se": se, "alpha": float(alpha)}
    except (RuntimeError, ValueError) as e:
        return {"error": str(e)}


def spread_slope(n, sd) -> dict:
    """{"slope", "slope_se"}: the least-squares slope of log sd against log n
    (``scipy.stats.linregress``) for the seed-to-seed standard deviations ``sd`` [K] at the
    sizes ``n`` [K], and its standard error."""
    from scipy.stats import linregress

    fit = linregress(np.log(n), np.log(sd))
    return {"slope": float(fit.slope), "slope_se": float(fit.stderr)}


def slopes_vs_time(n, rows, steps: int, log_every: int, dt: float) -> dict:
    """{"t": slope}: the least-squares slope of log(risk) against log n at the logged steps
    k nearest T/4, T/2 and T (k = log_every·round(frac·steps/log_every), t = k·dt), where
    ``rows[j]`` are the metrics rows (dicts with "step" and "risk", the seed mean) of size
    n[j] and the risk at k is that of the row whose step is nearest k."""
    from scipy.stats import linregress

    out = {}
    for frac in (0.25, 0.5, 1.0):
        k = log_every * round(frac * steps / log_every)
        vals = [min(r, key=lambda row: abs(row["step"] - k))["risk"] for r in rows]
        out[f"{k * dt:g}"] = float(linregress(np.log(n), np.log(vals)).slope)
    return out


# ---- decay in time ---------------------------------------------------------------------------
def seed_curves(rows, replicas: int) -> dict:
    """The per-seed curves of one run's metrics rows (dicts with "step" and, per seed b <
    ``replicas``, "risk_r<b>", "entropy_r<b>", "free_energy_r<b>"): {"k": iterations [K],
    "R", "H", "F": [K, S]} (risk, entropy estimate, free energy)."""
    S = replicas
    return {"k": np.array([r["step"] for r in rows]),
            "R": np.array([[r[f"risk_r{b}"] for b in range(S)] for r in rows]),
            "H": np.array([[r[f"entropy_r{b}"] for b in range(S)] for r in rows]),
            "F": np.array([[r[f"free_energy_r{b}"] for b in range(S)] for r in rows])}


FLOOR_RULES = ("window_sd", "seed_se")


def decay_rate(k, F, k_off, floor: str = "window_sd", factor: float = 5.0, until=None):
    """The exponential rate at which the seed-mean F̄(k) of ``F`` [K, S] (per seed, at the
    iterations ``k`` [K]) approaches its stationary value F^∞ = the mean of F̄ over the window
    k_off/2 ≤ k < k_off: the least-squares fit log(F̄ − F^∞) ≈ intercept − rate·k
    (``scipy.stats.linregress``) over the iterations before the gap F̄ − F^∞ first falls
    below ``factor`` × the noise floor σ or k reaches k_off.  The floor rule ``floor``:
    "window_sd", σ = the standard deviation of F̄ over the window (its fluctuation in time);
    "seed_se", σ = the mean over the window of F̄'s standard error across seeds,
    s.d._seeds/√S.  ``until`` (an iteration) fixes the end of the fit instead.

    Returns (rate per iteration, F^∞, k_end the last iteration fitted, intercept); rate and
    intercept are nan when fewer than 3 iterations are left to fit."""
    from scipy.stats import linregress

    if floor not in FLOOR_RULES:
        raise ConfigError(f"floor must be one of {FLOOR_RULES}, got {floor!r}")
    Fm = F.mean(-1)
    win = (k >= k_off / 2) & (k < k_off)
    f_inf = float(Fm[win].mean())
    if floor == "window_sd":
        se = float(Fm[win].std(ddof=1)) if win.sum() > 1 else 0.0
    else:
        S = F.shape[-1]
        se = float((F[win].std(-1, ddof=1) / math.sqrt(S)).mean()) if S > 1 else 0.0
    gap = Fm - f_inf
    if until is None:
        small = np.nonzero((gap < factor * se) | (k >= k_off))[0]
        end = int(small[0]) if len(small) else len(k)
    else:
        end = int(np.sum(k <= until))
    if end < 3 or not (gap[:end] > 0).all():
        return math.nan, f_inf, int(k[max(end - 1, 0)]), math.nan
    fit = linregress(k[:end], np.log(gap[:end]))
    return float(-fit.slope), f_inf, int(k[end - 1]), float(fit.intercept)


def decay_rate_rules(k, F, k_off, *, n_boot: int = 1000, seed: int = 0) -> dict:
    """:func:`decay_rate` under each floor rule of FLOOR_RULES, with a 95 % percentile
    bootstrap interval over seeds (the seeds of F [K, S] resampled, F^∞ re-estimated in every
    resample, the fit window the rule chose on all seeds; resamples whose gap is not positive
    over it are left out): {rule: {"rate", "ci95", "fit_until", "points" (records fitted),
    "F_inf", "intercept"}, "floor_sensitivity": max/min − 1 of the rates (what the choice of
    window adds to the interval)}."""
    rng = np.random.default_rng(seed)
    S = F.shape[-1]
    idx = rng.integers(0, S, (n_boot, S))
    out = {}
    for rule in FLOOR_RULES:
        rate, f_inf, k_end, icpt = decay_rate(k, F, k_off, rule)
        boot = np.array([decay_rate(k, F[:, i], k_off, rule, until=k_end)[0] for i in idx])
        boot = boot[np.isfinite(boot)]
        ci = np.percentile(boot, [2.5, 97.5]).tolist() if len(boot) else [math.nan, math.nan]
        out[rule] = {"rate": rate, "ci95": [float(v) for v in ci], "fit_until": k_end,
                     "points": int(np.sum(k <= k_end)), "F_inf": f_inf, "intercept": icpt}
    rates = [out[r]["rate"] for r in FLOOR_RULES]
    out["floor_sensitivity"] = (float(max(rates) / min(rates) - 1)
                                if all(np.isfinite(rates)) and min(rates) > 0 else math.nan)
    return out
