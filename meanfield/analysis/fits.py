"""Fitted rates: least-squares slopes in log-log coordinates, with confidence intervals.

:func:`fit_slope` fits the rate of an error measured over seeds and sizes (a slope of
log(mean error) against log size, with a bootstrap interval over the seeds and the
regression's own t-interval); :func:`late_log_slope` fits a rate over the second half of a
run's times.  Both are pure functions of arrays.
"""
from __future__ import annotations

import numpy as np


def fit_slope(x, errors, *, n_resamples: int = 2000, seed: int = 0) -> dict:
    """The fitted rate p of errors ``E`` [R, K] (R seeds, K sizes ``x`` [K]) in E ≈ c x^p.

    ``slope`` and ``intercept``: the least-squares line log Ē_k = intercept + slope · log x_k
    through Ē = the mean of ``E`` over the seeds (``scipy.stats.linregress``);
    ``t_low``/``t_high``: the regression's own 95 % t-interval slope ± t_{0.975, K−2} · stderr
    (nan when K ≤ 2); ``boot_low``/``boot_high``: a 95 % percentile bootstrap interval
    over the seeds (``scipy.stats.bootstrap``, ``n_resamples`` resamples from
    ``numpy.random.default_rng(seed)``; each resample refits the slope of log(mean over the
    resampled seeds) against log x), nan with fewer than two seeds.  Also ``seeds`` (R),
    ``x`` and ``mean_error`` (Ē) as lists.  Returns that dict (JSON-ready floats)."""
    from scipy import stats

    x = np.asarray(x, dtype=float)
    E = np.asarray(errors, dtype=float)
    lx = np.log(x)

    xc = lx - lx.mean()

    def slope(idx, axis=-1):
        # least-squares slope of log(mean over the resampled seeds) on log x, vectorised
        ly = np.log(E[np.asarray(idx, dtype=int)].mean(-2))                  # (..., K)
        return (ly * xc).sum(-1) / (xc * xc).sum()

    reg = stats.linregress(lx, np.log(E.mean(0)))
    tq = stats.t.ppf(0.975, len(x) - 2) if len(x) > 2 else float("nan")
    out = {"slope": float(reg.slope), "intercept": float(reg.intercept),
           "t_low": float(reg.slope - tq * reg.stderr), "t_high": float(reg.slope + tq * reg.stderr),
           "boot_low": float("nan"), "boot_high": float("nan"), "seeds": int(E.shape[0]),
           "x": x.tolist(), "mean_error": E.mean(0).tolist()}
    if E.shape[0] >= 2:
        res = stats.bootstrap((np.arange(E.shape[0]),), slope, vectorized=True, n_resamples=n_resamples,
                              method="percentile", confidence_level=0.95,
                              random_state=np.random.default_rng(seed))
        out["boot_low"] = float(res.confidence_interval.low)
        out["boot_high"] = float(res.confidence_interval.high)
    return out


def late_log_slope(t, y, *, log_y: bool = True) -> float:
    """The rate of y [K] in log t [K] over the second half of the run: the least-squares
    slope (``scipy.stats.linregress``) of log y (``log_y``, a power law y ~ t^p) or of y
    itself (``log_y=False``, a logarithmic growth y ~ p log t) against log t, over the
    points with t ≥ t[-1]/2 (t > 0, increasing; y > 0 when ``log_y``).  Returns p."""
    from scipy.stats import linregress

    t, y = np.asarray(t, dtype=float), np.asarray(y, dtype=float)
    half = t >= t[-1] / 2
    return float(linregress(np.log(t[half]), np.log(y[half]) if log_y else y[half]).slope)


__all__ = ["fit_slope", "late_log_slope"]
