"""Lazy against mean-field: crossover scales and rates in the output scale α.

Pure functions of per-seed arrays (the ``lazy-vs-meanfield`` experiment's rows, or yours):

* :func:`crossover_scale` — per seed, the α at which a quantity that falls with α (the
  relative change of the tangent kernel over training, say) crosses a level, by linear
  interpolation of log(value) in log α between the two grid points around the first
  crossing;
* :func:`rate_in_alpha` — the slope of log(seed mean) against log α on the lazy side
  (α ≥ ``alpha_min``) with its bootstrap interval (``diagnostics.loglog_rate``);
* :func:`crossover_rate` — the slope of log α*(N) against log N with its interval, and the
  same slope in Geiger–Spigler–Jacot–Wyart's normalisation (their α_G carries the 1/√h of a
  width-h network that ours does not: α_G = α/√N, so their slope is ours − ½).

Mean-field theory predicts that at fixed α the training converges to its N → ∞ limit, so
α*(N) does not move with N in this normalisation (slope 0, i.e. Geiger et al.'s α_G* ∝
N^{-1/2}); lazy-training theory predicts the particles' displacement and the distance to
the linearised flow fall as 1/α for large α (Chizat–Oyallon–Bach 2019), the latter as 1/α²
from a symmetric initialisation, whose pairs cancel the second-order term
(``tests/test_lazy.py``).
"""
from __future__ import annotations

import numpy as np

from ..diagnostics import loglog_rate
from ..errors import ConfigError


def crossover_scale(alphas, values, level: float) -> np.ndarray:
    """α* per seed: ``values`` [A, S] at the increasing scales ``alphas`` [A] (positive),
    the first α where the value falls to ``level`` or below, interpolated log-linearly
    (log v against log α) from the grid point before it; NaN for a seed whose values never
    fall to ``level`` or start at or below it.  Returns [S]."""
    a = np.log(np.asarray(alphas, dtype=np.float64))
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 2 or v.shape[0] != a.size or a.size < 2 or not np.all(np.diff(a) > 0):
        raise ConfigError(f"crossover_scale needs increasing alphas [A] and values [A, S], got "
                          f"{a.size} alphas and values of shape {v.shape}")
    if not level > 0:
        raise ConfigError(f"the crossover level must be > 0, got {level}")
    out = np.full(v.shape[1], np.nan)
    lv = np.log(np.maximum(v, 1e-300))
    for s in range(v.shape[1]):
        below = np.nonzero(v[:, s] <= level)[0]
        if below.size == 0 or below[0] == 0:
            continue
        i = below[0]
        f = (np.log(level) - lv[i - 1, s]) / (lv[i, s] - lv[i - 1, s])
        out[s] = float(np.exp(a[i - 1] + f * (a[i] - a[i - 1])))
    return out


def rate_in_alpha(alphas, samples, *, alpha_min: float = 10.0, n_boot: int = 2000, seed: int = 0) -> dict:
    """The slope of log(seed mean) against log α over the scales ≥ ``alpha_min``, with its
    95 % bootstrap interval over seeds: ``samples`` [A, S] positive (one row per α).
    {"slope", "ci95", "half_width", "intercept", "alphas"}; ConfigError with fewer than 3
    scales in the window."""
    a = np.asarray(alphas, dtype=np.float64)
    sel = a >= alpha_min
    if sel.sum() < 3:
        raise ConfigError(f"a rate in α needs at least 3 scales >= {alpha_min:g}, got {a[sel].tolist()}")
    rows = np.asarray(samples, dtype=np.float64)[sel]
    fit = loglog_rate(a[sel], list(rows), n_boot=n_boot, seed=seed)
    return {**fit, "alphas": a[sel].tolist()}


def crossover_rate(Ns, alpha_star, *, n_boot: int = 2000, seed: int = 0) -> dict:
    """The slope of log(seed-mean α*) against log N with its bootstrap interval (seeds with no
    crossing left out; ``alpha_star`` [K, S] for the widths ``Ns`` [K]), and
    ``geiger_slope`` = slope − ½ (module docstring).  {"slope", "ci95", "half_width",
    "geiger_slope", "geiger_ci95", "predicted": 0.0, "N"}; ConfigError when fewer than 3
    widths have two seeds with a crossing."""
    keep = [(N, s[np.isfinite(s)]) for N, s in zip(Ns, np.asarray(alpha_star, dtype=np.float64))]
    keep = [(N, s) for N, s in keep if s.size >= 2]
    if len(keep) < 3:
        raise ConfigError("the crossover rate needs at least 3 widths with two seeds that cross")
    fit = loglog_rate([N for N, _ in keep], [s for _, s in keep], n_boot=n_boot, seed=seed)
    return {**fit, "geiger_slope": fit["slope"] - 0.5,
            "geiger_ci95": [fit["ci95"][0] - 0.5, fit["ci95"][1] - 0.5],
            "predicted": 0.0, "N": [N for N, _ in keep]}


def mean_ci(samples, *, n_boot: int = 1000, seed: int = 0) -> tuple[float, float, float]:
    """(mean, low, high): the seed mean of ``samples`` [S] and its 95 % percentile bootstrap
    interval (``n_boot`` resamples; NaNs dropped; (nan, nan, nan) when none is left)."""
    v = np.asarray(samples, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    if v.size == 0:
        return (float("nan"),) * 3
    rng = np.random.default_rng(seed)
    boot = v[rng.integers(0, v.size, (n_boot, v.size))].mean(-1)
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return float(v.mean()), float(lo), float(hi)


SUMMARISED = ("test_risk", "risk", "lin_test_risk", "displacement", "w2", "ntk_change",
              "ntk_lam_min", "ntk_rayleigh")


def summarise(widths, alphas, finals: dict, sups: dict, *, level: float, n_boot: int = 1000,
              seed: int = 0) -> tuple[list[dict], dict]:
    """The table and the fits of a lazy-versus-mean-field sweep.

    ``finals[(N, α)]``: the final row of each run ({column: per-seed array [S]}, the columns
    of :data:`SUMMARISED`); ``sups[(N, α)]``: sup over the recorded times of the linearisation
    gap, per seed [S].  Returns (rows: one per (N, α) with each column's seed mean and its
    interval ``<col>_lo``/``<col>_hi`` and ``lin_gap_sup``; fit: {"displacement_slope",
    "linearization_slope": {N: :func:`rate_in_alpha`}, "crossover": {"level", "alpha_star":
    {N: [S]}, "rate": :func:`crossover_rate`}}), a fit that cannot be made recorded as
    {"error": why}."""
    rows = []
    for N in widths:
        for a in alphas:
            row = {"N": N, "alpha": a}
            cols = {c: finals[(N, a)][c] for c in SUMMARISED if c in finals[(N, a)]}
            cols["lin_gap_sup"] = sups[(N, a)]
            for c, v in cols.items():
                m, lo, hi = mean_ci(v, n_boot=n_boot, seed=seed)
                row.update({c: m, f"{c}_lo": lo, f"{c}_hi": hi})
            rows.append(row)

    def attempt(fn, *args, **kw):
        try:
            return fn(*args, **kw)
        except ConfigError as e:
            return {"error": str(e)}

    fit = {"displacement_slope": {}, "linearization_slope": {}, "predicted_displacement_slope": -1.0}
    for N in widths:
        fit["displacement_slope"][str(N)] = attempt(
            rate_in_alpha, alphas, [finals[(N, a)]["displacement"] for a in alphas], n_boot=n_boot, seed=seed)
        fit["linearization_slope"][str(N)] = attempt(
            rate_in_alpha, alphas, [sups[(N, a)] for a in alphas], n_boot=n_boot, seed=seed)
    stars = [crossover_scale(alphas, np.stack([finals[(N, a)]["ntk_change"] for a in alphas]), level)
             for N in widths]
    fit["crossover"] = {"level": level, "alpha_star": {str(N): s.tolist() for N, s in zip(widths, stars)},
                        "rate": attempt(crossover_rate, widths, np.stack(stars), n_boot=n_boot, seed=seed)}
    return rows, fit


def rayleigh_certificate(t, q, risk, *, xi: float = 1.0) -> dict:
    """The convergence certificate of a squared-loss run from its Rayleigh quotients
    (Robin–Scaman–Lelarge 2022): along the flow of docs/design.md §1 on n points,
    dR/dt = −4 ξ q_t R with q_t = ⟨r, K_t r⟩/(n‖r‖²) (``diagnostics.kernel_rayleigh``), so

        R(t) = R(0) exp(−4 ξ ∫_0^t q_s ds) ≤ R(0) exp(−4 ξ t inf_{s≤t} q_s).

    From records t [K] (increasing, t_0 = 0), q [K] and risk [K]: {"q_inf": the running
    infimum [K], "bound": R(0) exp(−4ξ ∫q) with the integral by the trapezoid rule [K],
    "bound_inf": R(0) exp(−4ξ t q_inf) [K], "rate": 4ξ·q_inf at the last record (the rate
    the certificate guarantees from then on), "ratio": max_k R_k / bound_k (1 up to the
    time discretisation when the certificate holds)}."""
    t, q, R = (np.asarray(v, dtype=np.float64).ravel() for v in (t, q, risk))
    if not (t.size == q.size == R.size >= 2) or np.any(np.diff(t) <= 0) or R[0] <= 0:
        raise ConfigError("rayleigh_certificate needs increasing times and q, risk of the same length "
                          ">= 2, with R(0) > 0")
    q_inf = np.minimum.accumulate(q)
    integral = np.concatenate([[0.0], np.cumsum(0.5 * (q[1:] + q[:-1]) * np.diff(t))])
    bound = R[0] * np.exp(-4 * xi * integral)
    bound_inf = R[0] * np.exp(-4 * xi * (t - t[0]) * q_inf)
    return {"q_inf": q_inf, "bound": bound, "bound_inf": bound_inf, "rate": float(4 * xi * q_inf[-1]),
            "ratio": float(np.max(R / bound))}
