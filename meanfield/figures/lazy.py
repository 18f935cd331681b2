"""Figures of lazy-vs-meanfield (``meanfield.experiments.lazy_vs_meanfield``), from its run
directory alone: summary.csv, fit.json and particles.npz.

* ``paths.png`` — (a) the paths of |a|w in the plane for the largest width at the smallest
  and the largest α, side by side, with the teacher's rays: the particles travel to the
  teacher's directions at small α and barely move at large α;
* ``alpha.png`` — (b) against α, one curve per width N with 95 % seed intervals: the test
  risk of the flow (solid) and of its linearisation (dashed), and the displacement
  mean_j |θ_j − θ_{0,j}| with its fitted slope on α ≥ 10;
* ``crossover.png`` — (c) the crossover scale α*(N), where the tangent kernel's relative
  change at T falls to the stated level, per seed and its mean, against N, with the fitted
  slope and interval (mean-field prediction 0; Geiger et al.'s normalisation subtracts ½);
* ``linearization.png`` — (d) sup_t RMS ‖f_α − f_lin,α‖ against α per N, with the fitted
  slopes.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import io
from ..plotting import pyplot, save_figure

SUMMARY = "summary.csv"
FIT = "fit.json"


def _table(run_dir) -> dict:
    return io.read_metrics(Path(run_dir) / SUMMARY)


def _band(ax, x, t, col, color, label, ls="-"):
    ax.plot(x, t[col], ls, marker="o", ms=3, color=color, label=label)
    if f"{col}_lo" in t:
        ax.fill_between(x, t[f"{col}_lo"], t[f"{col}_hi"], color=color, alpha=0.15, lw=0)


def lazy_figures(run_dir, coords=None) -> list[Path]:
    """The four figures of the module docstring, into ``run_dir/figures``; ``coords`` is
    ignored (the views are fixed)."""
    run_dir = Path(run_dir)
    plt = pyplot()
    t = _table(run_dir)
    fit = io.read_json(run_dir / FIT)
    widths = sorted({int(v) for v in t["N"]})
    out = []

    # (a) paths
    z = io.read_npz(run_dir / io.PARTICLES)
    snaps = {s["phase"]: s for s in io.read_snapshots(run_dir)}
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.8))
    keys = sorted(snaps, key=lambda k: float(k.split("alpha=")[1]))
    teacher, tw = z["teacher_theta"], z["teacher_weights"]
    for ax, key in zip(axes, [keys[0], keys[-1]]):
        th = snaps[key]["theta"]
        th = th[:, 0] if th.ndim == 4 else th                            # seed 0: [K, N, 3]
        P = np.abs(th[..., :1]) * th[..., 1:]
        for j in range(P.shape[1]):
            ax.plot(P[:, j, 0], P[:, j, 1], "-", color="0.55", lw=0.5)
        ax.scatter(P[0, :, 0], P[0, :, 1], s=6, color="C0", label="t = 0", zorder=3)
        ax.scatter(P[-1, :, 0], P[-1, :, 1], s=6, color="C3", label=f"t = {snaps[key]['t'][-1]:g}", zorder=3)
        r = float(np.percentile(np.abs(P), 99)) * 1.1 or 1.0
        for k in range(len(teacher)):
            d = teacher[k, 1:] / np.linalg.norm(teacher[k, 1:])
            ax.plot([0, r * d[0]], [0, r * d[1]], "--", color="C2" if tw[k] > 0 else "C1", lw=1)
        ax.set_xlim(-r, r)
        ax.set_ylim(-r, r)
        ax.set_aspect("equal")
        ax.set_title(f"{key.replace('/', ', ').replace('alpha', 'α')}", fontsize=9)
        ax.set_xlabel("|a| w0")
        ax.set_ylabel("|a| w1")
    axes[0].legend(fontsize=7, loc="lower left")
    fig.suptitle("(a) particle paths: feature learning (small α) and lazy training (large α)", fontsize=10)
    fig.tight_layout()
    out.append(save_figure(fig, run_dir / io.FIGURES / "paths.png"))

    # (b) risks and displacement against α
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for i, N in enumerate(widths):
        sel = t["N"] == N
        x = t["alpha"][sel]
        sub = {k: v[sel] for k, v in t.items()}
        _band(axes[0], x, sub, "test_risk", f"C{i}", f"N = {N}")
        _band(axes[0], x, sub, "lin_test_risk", f"C{i}", None, ls="--")
        fs = fit["displacement_slope"].get(str(N), {})
        lab = f"N = {N}" + (f": slope {fs['slope']:.2f} [{fs['ci95'][0]:.2f}, {fs['ci95'][1]:.2f}]"
                            if "slope" in fs else "")
        _band(axes[1], x, sub, "displacement", f"C{i}", lab)
    for ax, what in zip(axes, ["test risk R(f_α) (dashed: linearised flow)", "displacement mean |θ_T − θ_0|"]):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("output scale α")
        ax.set_ylabel(what)
        ax.legend(fontsize=7)
    axes[0].set_title("(b) test risk against α", fontsize=10)
    axes[1].set_title("displacement against α (lazy side: slope −1)", fontsize=10)
    fig.tight_layout()
    out.append(save_figure(fig, run_dir / io.FIGURES / "alpha.png"))

    # (c) crossover scale against N
    cr = fit["crossover"]
    fig, ax = plt.subplots(figsize=(5.4, 4.2))
    for N in widths:
        s = np.array(cr["alpha_star"][str(N)], dtype=float)
        ax.scatter(np.full(s.size, N), s, s=12, color="0.5")
        if np.isfinite(s).any():
            ax.scatter([N], [np.nanmean(s)], s=40, color="C0", zorder=3)
    rate = cr["rate"]
    if "slope" in rate:
        xs = np.array([min(widths), max(widths)], dtype=float)
        ax.plot(xs, np.exp(rate["intercept"]) * xs ** rate["slope"], "-", color="C0",
                label=f"slope {rate['slope']:.2f} [{rate['ci95'][0]:.2f}, {rate['ci95'][1]:.2f}] "
                      f"(Geiger et al.'s α: {rate['geiger_slope']:.2f})")
        ax.legend(fontsize=7)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("width N")
    ax.set_ylabel(f"α* (kernel change = {cr['level']:g})")
    ax.set_title("(c) crossover scale against width", fontsize=10)
    fig.tight_layout()
    out.append(save_figure(fig, run_dir / io.FIGURES / "crossover.png"))

    # (d) linearisation gap against α
    fig, ax = plt.subplots(figsize=(5.4, 4.2))
    for i, N in enumerate(widths):
        sel = t["N"] == N
        fs = fit["linearization_slope"].get(str(N), {})
        lab = f"N = {N}" + (f": slope {fs['slope']:.2f}" if "slope" in fs else "")
        _band(ax, t["alpha"][sel], {k: v[sel] for k, v in t.items()}, "lin_gap_sup", f"C{i}", lab)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("output scale α")
    ax.set_ylabel("sup_t RMS |f_α − f_lin,α|")
    ax.set_title("(d) distance to the linearised flow", fontsize=10)
    ax.legend(fontsize=7)
    fig.tight_layout()
    out.append(save_figure(fig, run_dir / io.FIGURES / "linearization.png"))
    return out
