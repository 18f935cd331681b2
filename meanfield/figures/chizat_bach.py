"""Figures of the Chizat–Bach experiments: cb-relu2d's particle paths in the plane and
cb-threshold's success fractions, thresholds m*(T) and excess-loss curves.

:func:`relu2d_figures` reads a cb-relu2d run directory (config.json, results.csv,
metrics.csv, particles.npz) and draws figures/trajectories.png (left: m = N, seed 0; right:
the worst seed at m = N_few) and figures/risk.png; :func:`threshold_figures` reads a
cb-threshold run directory (results.csv, thresholds.csv, fit.json, metrics.csv,
particles.npz) and draws figures/threshold.png (success fraction against m for each T with
m*(T) marked; every seed's excess loss against m at each T; m*(T)/m0 against T for every
criterion) and figures/risk.png (seed-mean R(t)/R_# per m; every seed at m = m0, the stuck
ones marked).  :func:`plane_coordinates` maps θ = (a, w0, w1) to Chizat's plotted point
|a| w ∈ R².
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .. import io
from ..plotting import pyplot, save_figure

RESULTS = "results.csv"         # cb-relu2d: per (m, seed); cb-threshold: per (T, m)
FIT = "fit.json"                # the summaries of both experiments
THRESHOLDS = "thresholds.csv"   # cb-threshold: m*(T) per horizon and success criterion


def plane_coordinates(theta: np.ndarray) -> np.ndarray:
    """|a_i| w_i ∈ R² for θ [..., 3] = (a, w0, w1) → [..., 2] (Chizat's a_i|b_i|)."""
    return np.abs(theta[..., :1]) * theta[..., 1:3]


def relu2d_figures(run_dir, coords=None) -> list[Path]:
    """figures/trajectories.png: paths of |a_i| w_i in the plane for m = N (seed 0) and for the
    worst seed at m = N_few; final points red (a > 0) or blue (a < 0); teacher directions w*_k
    as stars coloured by their sign, with rays; the init circle |θ| = 2 dotted.
    figures/risk.png: risk against t for every seed of both m."""
    run_dir = Path(run_dir)
    cfg = json.loads((run_dir / io.CONFIG).read_text())["config"]
    res = io.read_metrics(run_dir / RESULTS)
    met = io.read_metrics(run_dir / io.METRICS)
    with np.load(run_dir / io.PARTICLES) as z:
        paths = {N: z[f"theta_N{N}"] for N in (cfg["N_few"], cfg["N"])}
        teacher, tw = z["teacher_theta"], z["teacher_weights"]
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9, 4.4), dpi=120)
    few = res["m"] == cfg["N_few"]
    worst = int(res["seed"][few][np.argmax(res["final_risk"][few])])
    for ax, (N, seed) in zip(axes, ((cfg["N"], 0), (cfg["N_few"], worst))):
        th = paths[N][:, seed]                                    # (K, N, 3)
        P = plane_coordinates(th)
        sign = np.sign(th[-1, :, 0])
        for i in range(N):
            ax.plot(P[:, i, 0], P[:, i, 1], color="k", lw=0.6, alpha=0.7)
        ax.scatter(P[-1, :, 0], P[-1, :, 1], s=28, c=np.where(sign > 0, "C3", "C0"), zorder=3)
        r0 = cfg["init_radius"]
        u = np.linspace(0, 2 * np.pi, 200)
        ax.plot(r0 * np.cos(u), r0 * np.sin(u), ":", color="0.5", lw=0.8)
        bx = max(1.2, 1.1 * np.abs(P).max())
        for k in range(len(teacher)):
            c = "C3" if tw[k] > 0 else "C0"
            ax.plot([0, bx * teacher[k, 1]], [0, bx * teacher[k, 2]], "--", color=c, lw=0.6, alpha=0.6)
            ax.scatter([teacher[k, 1]], [teacher[k, 2]], marker="*", s=140, color=c, edgecolor="k",
                       lw=0.6, zorder=4)
        r_fin = float(res["final_risk"][(res["m"] == N) & (res["seed"] == seed)][0])
        ax.set_title(f"m = {N}, seed {seed}: final risk {r_fin:.2g}", fontsize=9)
        ax.set_aspect("equal")
        ax.set_xlim(-bx, bx)
        ax.set_ylim(-bx, bx)
        ax.set_xlabel("|a| w₀")
        ax.set_ylabel("|a| w₁")
    fig.tight_layout()
    out = [save_figure(fig, run_dir / io.FIGURES / "trajectories.png")]
    fig, ax = plt.subplots(figsize=(5, 3.5), dpi=120)
    for N, c in ((cfg["N_few"], "C1"), (cfg["N"], "C0")):
        sel = (met["N"] == N) & (met["t"] > 0)
        for k in sorted(k for k in met if k.startswith("risk_r")):
            ax.plot(met["t"][sel], met[k][sel], color=c, lw=0.7, alpha=0.6)
        ax.plot([], [], color=c, label=f"m = {N}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("t (t = k·dt; Chizat's iteration k = 2t)")
    ax.set_ylabel("empirical risk (no ½)")
    ax.legend(frameon=False)
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    out.append(save_figure(fig, run_dir / io.FIGURES / "risk.png"))
    return out


def threshold_figures(run_dir, coords=None) -> list[Path]:
    """figures/threshold.png: (left) the success fraction against m for each horizon T, m*(T)
    marked; (middle) R(T)/R_# of every seed against m at each T, with the medians; (right)
    m*(T)/m0 against T for every criterion.  figures/risk.png: (left) the seed-mean
    R(t)/R_# for every m; (right) every seed at m = m0, the stuck ones in red."""
    run_dir = Path(run_dir)
    res = io.read_metrics(run_dir / RESULTS)
    thr = io.read_metrics(run_dir / THRESHOLDS)
    fit = json.loads((run_dir / FIT).read_text())
    met = io.read_metrics(run_dir / io.METRICS)
    plt = pyplot()
    Ts = [float(T) for T in fit["horizons"]]
    m0, tol, frac = fit["m0"], fit["success_tol"], fit["success_frac"]
    cols = {T: plt.cm.plasma(0.1 + 0.7 * i / max(1, len(Ts) - 1)) for i, T in enumerate(Ts)}
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2), dpi=120)
    ax = axes[0]
    for i, T in enumerate(Ts):
        sel = res["T"] == T
        m = res["m"][sel]
        ms_T = fit["m_star_by_T"][f"{T:g}"]
        lab = f"T = {T:g}: " + (f"m* = {ms_T}, m*/m0 = {ms_T / m0:.3g}" if ms_T is not None else "no m*")
        ax.plot(m + 0.06 * (i - (len(Ts) - 1) / 2), res["success_frac"][sel], "o-", color=cols[T],
                ms=4, lw=1.2, label=lab)
        if ms_T is not None:
            ax.plot([ms_T], [1.04 + 0.025 * i], "v", color=cols[T], ms=7)
    ax.axhline(frac, color="0.5", lw=0.7, ls="--", label=f"success fraction {frac:g}")
    ax.axvline(m0, color="k", lw=0.8, ls=":", label=f"m0 = {m0}")
    ms_all = np.unique(res["m"])
    ax.set_xticks(ms_all, [str(int(v)) for v in ms_all], fontsize=7)
    ax.set_ylim(-0.03, 1.03 + 0.025 * len(Ts) + 0.03)
    ax.set_xlabel("number of particles m  (▼: m*(T))")
    ax.set_ylabel(f"fraction of {fit['replicas']} seeds with R(T)/R_# < {tol:g}")
    ax.set_title(f"d = {fit['d']}, teacher m0 = {m0}; R_# = E[y²] = {fit['risk_sharp']:.3g}", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(frameon=False, fontsize=7, loc="center right")
    ax = axes[1]
    floor = 1e-14
    seeds = sorted((k for k in res if k.startswith("excess_s")), key=lambda k: int(k[8:]))
    for i, T in enumerate(Ts):
        sel = res["T"] == T
        m = res["m"][sel] + 0.12 * (i - (len(Ts) - 1) / 2)
        for k in seeds:
            ax.scatter(m, np.maximum(res[k][sel], floor), s=6, color=cols[T], alpha=0.45, lw=0)
        ax.plot(m, np.maximum(res["excess_median"][sel], floor), "-", color=cols[T], lw=1.2,
                label=f"T = {T:g}: median")
    ax.axhline(tol, color="C2", lw=0.8, ls="--", label=f"tolerance {tol:g}")
    ax.axvline(m0, color="k", lw=0.8, ls=":")
    ax.set_yscale("log")
    ax.set_xticks(ms_all, [str(int(v)) for v in ms_all], fontsize=7)
    ax.set_xlabel("number of particles m  (dots: seeds)")
    ax.set_ylabel("excess loss R(T) / R_#")
    ax.grid(alpha=0.3, which="both")
    ax.legend(frameon=False, fontsize=7)
    ax = axes[2]
    crits = []
    for tol_c, frac_c, prim in zip(thr["success_tol"], thr["success_frac"], thr["primary"]):
        if (tol_c, frac_c, prim) not in crits:
            crits.append((tol_c, frac_c, prim))
    for c, (tol_c, frac_c, prim) in enumerate(crits):
        sel = (thr["success_tol"] == tol_c) & (thr["success_frac"] == frac_c)
        ax.plot(thr["T"][sel] * np.exp(0.025 * (c - (len(crits) - 1) / 2)), thr["m_star_over_m0"][sel],
                "o-" if prim else "s--", lw=2 if prim else 1, ms=5 if prim else 4,
                color="k" if prim else f"C{c}",
                label=f"tol {tol_c:g}, fraction {frac_c:g}" + (" (primary)" if prim else ""))
    ax.axhline(1, color="0.5", lw=0.7, ls=":")
    ax.set_xscale("log")
    ax.set_xticks(Ts, [f"{T:g}" for T in Ts])
    ax.minorticks_off()
    ax.set_xlabel("horizon T (MMN time, t = k·dt)")
    ax.set_ylabel("m*(T) / m0")
    ax.set_title("m*(T)/m0 per success criterion (points shifted in T to be seen)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(frameon=False, fontsize=7)
    fig.tight_layout()
    paths = [save_figure(fig, run_dir / io.FIGURES / "threshold.png")]

    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), dpi=120)
    ax = axes[0]
    risk_cols = sorted((k for k in met if k.startswith("risk_m")), key=lambda k: int(k[6:]))
    sel = met["t"] > 0
    for j, k in enumerate(risk_cols):
        ax.plot(met["t"][sel], met[k][sel] / fit["risk_sharp"],
                color=plt.cm.viridis(j / max(1, len(risk_cols) - 1)), lw=1.1, label=f"m = {k[6:]}")
    ax.set_ylabel("seed-mean R(t) / R_#")
    ax.legend(frameon=False, fontsize=6, ncol=2)
    ax = axes[1]
    with np.load(run_dir / io.PARTICLES) as z:
        t_traj, traj, m_vals = z["excess_t"], z["excess_traj"], list(z["m_values"])
    if m0 in m_vals:
        j0 = m_vals.index(m0)
        stuck = {s["seed"] for s in (fit["stuck"] or {}).get("systems", []) if s["m"] == m0}
        keep = t_traj > 0
        for s in range(traj.shape[2]):
            ax.plot(t_traj[keep], np.maximum(traj[keep, j0, s], floor), lw=1.4 if s in stuck else 0.8,
                    color="C3" if s in stuck else "0.4", alpha=0.9 if s in stuck else 0.6)
        ax.plot([], [], color="C3", label=f"stuck ({len(stuck)}): unchanged to {fit['stuck']['rtol']:g}"
                if fit["stuck"] else "stuck")
        ax.plot([], [], color="0.4", label="other seeds")
        ax.axhline(tol, color="C2", lw=0.8, ls="--")
        ax.set_ylabel(f"R(t) / R_# of every seed at m = m0 = {m0}")
        ax.legend(frameon=False, fontsize=7)
    for ax in axes:
        for T in Ts:
            ax.axvline(T, color=cols[T], lw=0.8, ls=":")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("t (MMN time, t = k·dt)")
        ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    paths.append(save_figure(fig, run_dir / io.FIGURES / "risk.png"))
    return paths
