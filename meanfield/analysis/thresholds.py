"""Thresholds in the number of particles: from which width m gradient descent succeeds, and
which systems are stuck (the cb-threshold experiment, Chizat–Bach 2018).

The input is the excess loss R(T)/R_# of systems (m, seed) at horizons T, arrays
``[M, S]`` (M widths ``ms`` sorted ascending, S seeds), gathered as {T: [M, S]}.  A system
*succeeds at T* when R(T)/R_# < tol; m*(T) is the smallest m from which every m' ≥ m of
the grid has a fraction of successful seeds ≥ frac (:func:`threshold`,
:func:`threshold_table`).  A failing system is *stuck* when it has stopped moving between
two horizons (:func:`stuck_systems`).  :func:`excess_at` reads the excess losses off the
metrics rows, :func:`excess_table` tabulates them per (T, m), :func:`threshold_summary`
gathers the thresholds, the stuck systems and the statistics at m0 of a run and
:func:`criterion_text` says the success criterion in words.

Pure functions of arrays; nothing here simulates.
"""
from __future__ import annotations

import numpy as np


def threshold(ms, success, frac) -> int | None:
    """The smallest m from which every m' ≥ m has a success fraction ≥ ``frac`` (None if none),
    for widths ``ms`` [M] (ascending) and their success fractions ``success`` [M]."""
    m_star = None
    for m, s in zip(reversed(ms), reversed(success)):
        if s >= frac:
            m_star = m
        else:
            break
    return m_star


def threshold_table(ms, excess: dict, criteria, m0: int | None = None) -> list[dict]:
    """One row per horizon T (the keys of ``excess``: {T: R(T)/R_# [M, S]}) and criterion
    (tol, frac) of ``criteria``: {"T", "success_tol", "success_frac", "primary" (1 for the
    first criterion), "m_star"} with m_star = :func:`threshold` of the success fractions
    mean_s [R(T)/R_# < tol] (None when no m succeeds), and "m_star_over_m0" (None with
    m_star) when ``m0`` is given."""
    rows = []
    for T, ex in excess.items():
        for c, (tol, frac) in enumerate(criteria):
            success = (np.asarray(ex) < tol).mean(-1)
            rows.append({"T": float(T), "success_tol": tol, "success_frac": frac,
                         "primary": int(c == 0), "m_star": threshold(list(ms), list(success), frac)})
            if m0 is not None:
                m_star = rows[-1]["m_star"]
                rows[-1]["m_star_over_m0"] = None if m_star is None else m_star / m0
    return rows


def stuck_systems(ms, ex_a, ex_b, tol, rtol) -> list[dict]:
    """The systems (m, seed) that fail at the longer horizon (R(T_b)/R_# ≥ ``tol``) and did not
    move between the two horizons (|ex_b − ex_a| ≤ ``rtol``·ex_a), from R(T)/R_# [M, S] at
    T_a (``ex_a``) and T_b (``ex_b``): [{"m", "seed", "excess_from", "excess_to", "rel_change"}]."""
    out = []
    ex_a, ex_b = np.asarray(ex_a, float), np.asarray(ex_b, float)
    for j, m in enumerate(ms):
        for s in range(ex_a.shape[1]):
            a, b = ex_a[j, s], ex_b[j, s]
            change = abs(b - a) / a
            if b >= tol and change <= rtol:
                out.append({"m": int(m), "seed": s, "excess_from": float(a), "excess_to": float(b),
                            "rel_change": float(change)})
    return out


def excess_at(rows, column: str, shape, risk_sharp: float) -> dict:
    """{step: R/R_# [M, S]} of metrics rows (dicts with "step" and ``column``, every system's
    risk [M·S], system (j, s) at j·S + s), each divided by R_#."""
    return {int(r["step"]): np.asarray(r[column], float).reshape(shape) / risk_sharp for r in rows}


def excess_table(ms, m0: int, excess: dict, tol: float) -> list[dict]:
    """One row per horizon T and width m of {T: R(T)/R_# [M, S]}: {"T", "m", "m_over_m0",
    "excess_median", "excess_mean", "excess_max" over the seeds, "success_frac" (the fraction
    with R(T)/R_# < ``tol``), "excess_s<s>" of every seed s}."""
    out = []
    for T, rel in excess.items():
        for j, m in enumerate(ms):
            r = rel[j]
            row = {"T": T, "m": m, "m_over_m0": m / m0, "excess_median": float(np.median(r)),
                   "excess_mean": float(r.mean()), "excess_max": float(r.max()),
                   "success_frac": float((r < tol).mean())}
            row.update({f"excess_s{s}": float(x) for s, x in enumerate(r)})
            out.append(row)
    return out


def threshold_summary(ms, m0: int, excess: dict, table: list[dict], tol: float, rtol: float) -> dict:
    """What a run found, from {T: R(T)/R_# [M, S]} (horizons ascending) and its
    :func:`threshold_table` (with m_star_over_m0; the primary criterion's tolerance ``tol``):

    "m_star", "m_star_over_m0" at the last horizon; "m_star_by_T", "m_star_over_m0_by_T"
    ({"T": value}, T formatted with ``:g``); "thresholds" (the table);
    "success_frac_at_m0_by_T" (None when m0 is not in ``ms``); "median_excess_at_m0_or_below"
    (the largest seed median at the last horizon over m ≤ m0, None if no such m);
    "max_excess_from_m_star" (the largest R(T)/R_# at the last horizon over m ≥ m*, None
    without m*); "stuck" (None with one horizon, else the :func:`stuck_systems` between the
    two last horizons with ``rtol``, their count per m and the criterion in words)."""
    Ts = list(excess)
    T_final, final = Ts[-1], excess[Ts[-1]]
    primary = {r["T"]: r for r in table if r["primary"]}
    m_star = primary[T_final]["m_star"]
    stuck = None
    if len(Ts) >= 2:
        systems = stuck_systems(ms, excess[Ts[-2]], final, tol, rtol)
        stuck = {"T_from": Ts[-2], "T_to": T_final, "rtol": rtol,
                 "criterion": f"R(T_to)/R_# >= {tol:g} and |R(T_to) - R(T_from)| <= "
                              f"{rtol:g} R(T_from)",
                 "count_by_m": {str(m): sum(s["m"] == m for s in systems) for m in ms},
                 "systems": systems}
    below = [j for j, m in enumerate(ms) if m <= m0]
    above = [j for j, m in enumerate(ms) if m_star is not None and m >= m_star]
    return {"m_star": m_star, "m_star_over_m0": None if m_star is None else m_star / m0,
            "m_star_by_T": {f"{T:g}": primary[T]["m_star"] for T in Ts},
            "m_star_over_m0_by_T": {f"{T:g}": primary[T]["m_star_over_m0"] for T in Ts},
            "thresholds": table,
            "success_frac_at_m0_by_T": ({f"{T:g}": float((excess[T][ms.index(m0)] < tol).mean())
                                         for T in Ts} if m0 in ms else None),
            "median_excess_at_m0_or_below": float(np.median(final[below], -1).max()) if below else None,
            "max_excess_from_m_star": float(final[above].max()) if above else None,
            "stuck": stuck}


def criterion_text(tol: float, frac: float, seeds: int) -> str:
    """The success criterion (tolerance ``tol`` on R(T)/R_#, fraction ``frac`` of ``seeds``
    seeds) in words, as fit.json gives it: what a success is, that m* needs every larger m of
    the grid to pass as well (not m alone), and how many failing seeds a fraction allows
    (with 16 seeds, "≥ 0.9" is at most one failure)."""
    import math

    need = math.ceil(frac * seeds - 1e-9)
    return (f"a seed succeeds at T when R(T)/R_# < {tol:g}, with R_# = E[y^2] the risk of "
            f"the zero network (x ~ N(0, I_d), no label noise); an m passes when at least "
            f"{frac:g} of its {seeds} seeds succeed, i.e. at least {need} of {seeds} (at most "
            f"{seeds - need} failing); m*(T) is the smallest m of the grid that passes and "
            f"from which every larger m of the grid passes too")
