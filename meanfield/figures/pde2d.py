"""Figures of the 2-D grid PDE experiments: pde2d-teacher (:func:`teacher_figures`) and
pde2d-torus (:func:`torus_figures`), drawn from a run directory alone.

* :func:`teacher_figures`: density.png — the grid density at the snapshots of the W2 times
  (at most 6) with the first seed's particles of the largest N (at most 500) and the teacher
  units as crosses — and rates.png — the risk against t (grid line, particles per N), the
  risk gaps |R_N(T) − R(T)| and sup_t |R_N − R| against N with fitted slopes and the grid
  error, and W2 at T and at 0 against N with the quantisation bound.
* :func:`torus_figures`: density.png — the same panels on the torus (particles wrapped to
  [0, 2π)², the targets as crosses) — and free_energy.png — F − F_∞ against t for the grid
  and for each N's particles (theirs against their own limit c_N, each N's Monte-Carlo floor
  dotted), the local log-slope against t with the rate window shaded
  (``meanfield.analysis.rates``) and the asymptotic rate from the spectrum of the linearised
  flow (on the run's grid and extrapolated to h → 0, when fit.json has ``spectral``), the
  free-energy gap against N beside N i.i.d. draws of ρ_T, and W2 at T against N.

Both read metrics.csv, summary.csv (:data:`SUMMARY_FILE`), fit.json (:data:`FIT_FILE`),
pde.npz (:data:`PDE_FILE`), particles.npz and config.json; the file names here are the ones
the experiments write (they import them from here).  :func:`density_panels` and
:func:`plot_fits` are the panels both draw.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from .. import io
from ..analysis.rates import RateRule, grid_curve, local_log_slope, resolved_records
from ..plotting import pyplot, save_figure

# result files the pde2d experiments write and these figures read
PDE_FILE = "pde.npz"          # the grid PDE record: t, x, y, density [T, nx, ny], risk …
FIT_FILE = "fit.json"         # slopes in N, the PDE's bookkeeping, grid error (torus: rates)
SUMMARY_FILE = "summary.csv"  # one row per N
PERIOD = 2 * math.pi          # pde2d-torus's torus is [0, PERIOD)²


def w2_steps(steps: int, w2_every: int) -> list[int]:
    """The steps where the pde2d experiments measure W2 to the grid density (and whose
    snapshots the still figure shows): multiples of ``w2_every`` below ``steps``, and
    ``steps``."""
    return sorted(set(range(0, steps, w2_every)) | {steps})


def still_snapshots(st, steps, cfg: dict) -> list[int]:
    """Indices of the snapshots (times ``st``, steps ``steps`` [S]) shown in the still
    figure: those at the W2 steps (:func:`w2_steps` of config.json's ``steps`` and
    ``w2_every``, in ``cfg``), at most 6."""
    keep = set(w2_steps(cfg["steps"], cfg["w2_every"]))
    idx = [j for j, k in enumerate(steps) if int(k) in keep] or list(range(len(st)))
    return [idx[j] for j in np.unique(np.linspace(0, len(idx) - 1, min(6, len(idx))).round().astype(int))]


def plot_fits(ax, N, series, fit, *, guide=-0.5, guide_label="N^(−1/2)", floor=None):
    """Log-log panel: per-N means ± 2 s.e. of each (label, key, values, se, colour) in
    ``series`` with its fitted line from ``fit[key]``, a guide slope, an optional floor."""
    for label, key, v, se, colour in series:
        ax.errorbar(N, v, yerr=2 * se, fmt="o", color=colour, ms=4, capsize=2)
        f = fit[key]
        c = np.exp(np.mean(np.log(v)) - f["slope"] * np.mean(np.log(N)))
        ax.plot(N, c * N ** f["slope"], "-", color=colour,
                label=f"{label}: {f['slope']:.2f} [{f['ci95'][0]:.2f}, {f['ci95'][1]:.2f}]")
    v0 = series[0][2]
    ax.plot(N, v0[0] * (N / N[0]) ** guide, "--", color="0.5", lw=0.8, label=guide_label)
    if floor is not None:
        ax.axhline(floor, color="0.6", ls=":", lw=0.8, label="grid quantisation bound")
    from matplotlib.ticker import NullFormatter

    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("N")
    ax.grid(alpha=0.3, which="both")
    ax.legend(frameon=False, fontsize=6)


def density_panels(fig, axes, grid_axes, densities, times, particles, *, extra=None, period=None,
                   max_points: int = 500):
    """One panel per snapshot: the grid density (pcolormesh) with particles [n, 2] overlaid
    (white dots, the first ``max_points``); ``extra`` [m, 2] marked as crosses (teacher units,
    targets)."""
    xc, yc = grid_axes
    hx, hy = xc[1] - xc[0], yc[1] - yc[0]
    xf = np.concatenate([xc - hx / 2, [xc[-1] + hx / 2]])
    yf = np.concatenate([yc - hy / 2, [yc[-1] + hy / 2]])
    for ax, P, t, th in zip(axes, densities, times, particles):
        ax.pcolormesh(xf, yf, P.T, cmap="viridis", shading="flat", rasterized=True)
        pts = np.mod(th[:max_points], period) if period is not None else th[:max_points]
        ax.plot(pts[:, 0], pts[:, 1], ".", color="white", ms=1.2, alpha=0.6)
        if extra is not None:
            ax.plot(extra[:, 0], extra[:, 1], "x", color="red", ms=6, mew=1.5)
        ax.set_title(f"t = {t:.3g}", fontsize=9)
        ax.set_aspect("equal")
        ax.set_xlim(xf[0], xf[-1])
        ax.set_ylim(yf[0], yf[-1])
        ax.tick_params(labelsize=7)


def teacher_figures(run_dir, coords=None) -> list[Path]:
    """figures/density.png (the grid density at the snapshot times with the first seed's
    particles of the largest N, at most 500 of them, and the teacher units) and figures/rates.png (risk against t,
    the risk gaps and W2 against N with fitted slopes), from the run directory alone."""
    run_dir = Path(run_dir)
    plt = pyplot()
    fit = json.loads((run_dir / FIT_FILE).read_text())
    s = io.read_metrics(run_dir / SUMMARY_FILE)
    m = io.read_metrics(run_dir / io.METRICS)
    with np.load(run_dir / PDE_FILE) as z:
        pt, x, y, dens, prisk = z["t"], z["x"], z["y"], z["density"], z["risk"]
    cfg = io.load_run_config(run_dir)["config"]
    with np.load(run_dir / io.PARTICLES) as z:
        st, Ns, ks = z["t"], z["N_grid"], z["step"]
        th = z["theta"][:, 0]                                   # (S, N, 2): the largest N, seed 0
        teacher = z["teacher_theta"]
    keep = still_snapshots(st, ks, cfg)
    st, th = st[keep], th[keep]
    idx = [int(np.argmin(np.abs(pt - t))) for t in st]
    fig, axes = plt.subplots(1, len(st), figsize=(2.6 * len(st), 2.8), dpi=120, squeeze=False)
    density_panels(fig, axes[0], (x, y), dens[idx], st, th, extra=teacher)
    fig.suptitle(f"grid density ({len(x)}² cells) and N = {Ns[-1]} particles (seed 0, ≤ 500 shown); "
                 "× teacher", fontsize=9)
    fig.tight_layout()
    paths = [save_figure(fig, run_dir / io.FIGURES / "density.png")]

    fig, ax = plt.subplots(1, 3, figsize=(13, 3.6), dpi=120)
    ax[0].plot(pt, prisk, "k-", lw=1.5, label="grid PDE")
    for j, N in enumerate(Ns):
        sel = m["N"] == N
        ax[0].plot(m["t"][sel], m["risk"][sel], "o", ms=2.5, color=f"C{j}", label=f"N = {N}")
    ax[0].set_yscale("log")
    ax[0].set_xlabel("t")
    ax[0].set_ylabel("R")
    ax[0].legend(frameon=False, fontsize=6)
    ax[0].grid(alpha=0.3)
    N = s["N"]
    plot_fits(ax[1], N, [("|R_N(T) − R(T)|", "risk_gap_T", s["risk_gap_T"], s["risk_gap_T_se"], "C0"),
                         ("sup_t |R_N − R|", "sup_risk_gap", s["sup_risk_gap"], s["sup_risk_gap_se"], "C1")],
              fit, guide=-1.0, guide_label="N^(−1)")
    if fit.get("pde_grid"):
        ax[1].axhline(fit["pde_grid"]["max_abs_change"], color="0.6", ls=":", lw=0.8,
                      label="grid error (max_t |R_h − R_h/2|)")
    ax[1].set_title("risk gap to the grid PDE", fontsize=9)
    ax[1].legend(frameon=False, fontsize=6)
    plot_fits(ax[2], N, [("W2 at T", "w2_T", s["w2_T"], s["w2_T_se"], "C2"),
                         ("W2 at 0 (i.i.d.)", "w2_0", s["w2_0"], s["w2_0_se"], "C3")],
              fit, floor=fit["pde"]["w2_quantisation_bound"])
    ax[2].set_title("W2(particles, grid density)", fontsize=9)
    fig.tight_layout()
    paths.append(save_figure(fig, run_dir / io.FIGURES / "rates.png"))
    return paths


def torus_figures(run_dir, coords=None) -> list[Path]:
    """figures/density.png (grid density at the snapshots with the first seed's particles of
    the largest N and the targets) and figures/free_energy.png (F − F_∞ against t for the grid
    and the particles — theirs against their own limit c_N, with each N's Monte-Carlo floor —,
    the local log-slope against t with the rate window, the free-energy gap and W2 against N),
    from the run directory alone."""
    run_dir = Path(run_dir)
    plt = pyplot()
    fit = json.loads((run_dir / FIT_FILE).read_text())
    s = io.read_metrics(run_dir / SUMMARY_FILE)
    m = io.read_metrics(run_dir / io.METRICS)
    with np.load(run_dir / PDE_FILE) as z:
        pt, x, y, dens, Fg = z["t"], z["x"], z["y"], z["density"], z["free_energy"]
        tt, Ft, F_inf = z["t_tail"], z["free_energy_tail"], float(z["F_inf"])
    cfg = io.load_run_config(run_dir)["config"]
    rule = RateRule.from_config(cfg)
    with np.load(run_dir / io.PARTICLES) as z:
        st, Ns, ks = z["t"], z["N_grid"], z["step"]
        th = z["theta"][:, 0]
        targets = z["targets"]
    keep = still_snapshots(st, ks, cfg)
    st, th = st[keep], th[keep]
    idx = [int(np.argmin(np.abs(pt - t))) for t in st]
    fig, axes = plt.subplots(1, len(st), figsize=(2.8 * len(st), 3.0), dpi=120, squeeze=False)
    density_panels(fig, axes[0], (x, y), dens[idx], st, th, extra=targets, period=PERIOD)
    fig.suptitle(f"grid density ({len(x)}² cells, τ = {fit['tau']:g}) and N = {Ns[-1]} particles "
                 "(seed 0, ≤ 500 shown); × targets", fontsize=9)
    fig.tight_layout()
    paths = [save_figure(fig, run_dir / io.FIGURES / "density.png")]

    fig, axs = plt.subplots(2, 2, figsize=(11.5, 7.6), dpi=120)
    ax = axs.ravel()
    pde = {"t": pt, "free_energy": Fg, "t_tail": tt, "free_energy_tail": Ft, "F_inf": F_inf,
           "residual": np.zeros_like(pt), "residual_tail": np.zeros_like(tt)}
    tall, gall, _ = grid_curve(pde)
    ok = gall >= rule.fit_floor
    r, win = fit["long_time_rate_pde"], fit["rate_window"]
    label = (f"grid PDE: long-time rate {r:.3f} on [{win[0]:g}, {win[1]:g}]" if fit["settled"]
             else "grid PDE: local slope not settled")
    ax[0].plot(tall[ok], gall[ok], "k-", lw=1.5, label=label)
    s_grid = local_log_slope(tall, gall, rule.slope_width, rule.fit_floor)
    ax[1].plot(tall, s_grid, "k-", lw=1.5, label="grid PDE")
    T = cfg["steps"] * cfg["dt"]
    for j, N in enumerate(Ns):
        sel = m["N"] == N
        tN, FN, se = m["t"][sel], m["free_energy"][sel], m["free_energy_se"][sel]
        plat = tN >= 0.75 * T - 1e-9 * max(1.0, T)
        gap_pde = m["free_energy_pde"][sel] - F_inf
        gap = FN - (FN[plat] - gap_pde[plat]).mean()          # particle_rates' c_N
        sigma = float(se[plat].mean())
        floor = rule.snr * sigma
        mr = fit["matched_window_rates"][str(int(N))]
        lab = f"N = {N}"
        if mr["rate"] is not None:
            lab += f": {mr['rate']:.2f} vs grid {mr['rate_pde']:.2f} on [{mr['window'][0]:g}, {mr['window'][1]:g}]"
        ax[0].plot(tN[gap > 0], gap[gap > 0], "o", ms=2.5, color=f"C{j}", label=lab)
        ax[0].axhline(floor, color=f"C{j}", lw=0.6, ls=":")
        res = resolved_records(rule, tN, gap_pde, sigma)
        if res.sum() >= 3:
            sl = local_log_slope(tN[res], gap[res], rule.slope_width, np.finfo(float).tiny)
            ax[1].plot(tN[res], sl, "o-", ms=3, lw=0.8, color=f"C{j}", label=f"N = {N}")
    for a in ax[:2]:
        if win is not None:
            a.axvspan(*win, color="0.9", zorder=0)
        a.set_xlabel("t (= notebook iterations × η)")
        a.grid(alpha=0.3)
    ax[0].set_yscale("log")
    ax[0].set_ylabel("F(t) − F_∞ (particles: minus their plateau)")
    ax[0].set_title("free-energy gap; dotted: each N's Monte-Carlo floor (snr × s.e.)", fontsize=8)
    ax[0].legend(frameon=False, fontsize=6)
    if r is not None:
        ax[1].axhline(r, color="k", ls="--", lw=0.8, label=f"window rate {r:.3f}")
    sp = fit.get("spectral")
    if sp:
        own = sp["run_grid"]["rate_free_energy"]
        ax[1].axhline(own, color="C3", ls="-", lw=0.9,
                      label=f"asymptotic rate 2μ₁ on this grid (spectrum): {own:.4f}")
        if "extrapolated" in sp:
            e = sp["extrapolated"]["extrapolated"]
            ax[1].axhline(e, color="C3", ls=":", lw=0.9, label=f"2μ₁ extrapolated to h → 0: {e:.4f}")
    ax[1].set_ylim(0, 1.0)
    ax[1].set_ylabel("local log-slope −d/dt log(F − F_∞)")
    ax[1].set_title(f"local slopes over {rule.slope_width:g}-wide windows (particles: where resolved); "
                    f"grey: rate window (spread < {100 * rule.settle_tol:g} %)", fontsize=8)
    ax[1].legend(frameon=False, fontsize=6)
    ax = [ax[0], ax[2], ax[3]]
    N = s["N"]
    plot_fits(ax[1], N, [("|F_N − F| (last quarter)", "free_energy_gap", s["free_energy_gap"],
                          s["free_energy_gap_se"], "C0"),
                         ("N i.i.d. draws of ρ_T", "free_energy_gap_iid", s["free_energy_gap_iid"],
                          s["free_energy_gap_iid_se"], "C3")], fit)
    ax[1].set_title("free-energy gap to the grid PDE", fontsize=9)
    plot_fits(ax[2], N, [("W2 at T", "w2_T", s["w2_T"], s["w2_T_se"], "C2")], fit,
              floor=fit["pde"]["w2_quantisation_bound"])
    ax[2].set_title("W2(particles, grid density), periodic cost", fontsize=9)
    fig.tight_layout()
    paths.append(save_figure(fig, run_dir / io.FIGURES / "free_energy.png"))
    return paths
