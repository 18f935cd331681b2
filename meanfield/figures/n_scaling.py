"""Figures of n-scaling: the gap R_N(T) − R_∞ against N, its seed-to-seed spread, and R_N(t).

:func:`scaling_figures` reads the run directory alone (results.csv, metrics.csv, fit.json;
``meanfield.experiments.n_scaling`` writes them) and draws figures/n_scaling.png.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .. import io
from ..plotting import pyplot, save_figure

RESULTS = "results.csv"     # per N: final gaps per seed, mean, s.d., references, convergence
FIT = "fit.json"            # slopes, intervals, the R_∞ fit, the references' constants


def scaling_figures(run_dir, coords=None) -> list[Path]:
    """figures/n_scaling.png: (left) the gap R_N(T) − R_∞ against N, per seed and seed mean,
    with the fitted slope and its bootstrap interval, the i.i.d.-sampling excess of the
    limiting law and of the teacher's law, and MMN's K/N; (middle) the seed-to-seed standard
    deviation against N; (right) the seed-mean risk against t for every N."""
    run_dir = Path(run_dir)
    res = io.read_metrics(run_dir / RESULTS)
    met = io.read_metrics(run_dir / io.METRICS)
    fit = json.loads((run_dir / FIT).read_text())
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8), dpi=120)
    N = res["N"]
    ax = axes[0]
    for k in sorted(k for k in res if k.startswith("gap_r")):
        ax.scatter(N, res[k], s=8, color="C0", alpha=0.35, lw=0)
    ax.plot(N, res["gap_mean"], "o", color="C0", ms=5, label="GD, seed mean")
    g = fit["gap"]
    ax.plot(N, np.exp(g["intercept"]) * N ** g["slope"], "-", color="C0",
            label=f"slope {g['slope']:.2f} [{g['ci95'][0]:.2f}, {g['ci95'][1]:.2f}]")
    ax.plot(N, res["iid_limit"], "--", color="C1", label="i.i.d. from limit law (1/N)·E Var φ")
    ax.plot(N, res["iid_teacher"], ":", color="C2", label="i.i.d. from teacher law")
    ax.plot(N, res["mmn_K_over_N"], "-.", color="C3", label="MMN K/N")
    ax.set_title(f"R_N(T) − R_∞ (R_∞ = 0), T = {fit['T']:.3g}", fontsize=9)
    ax2 = axes[1]
    ax2.plot(N, res["gap_sd"], "s", color="C4", ms=5)
    sp = fit["spread"]
    c = np.exp(np.mean(np.log(res["gap_sd"])) - sp["slope"] * np.mean(np.log(N)))
    ax2.plot(N, c * N ** sp["slope"], "-", color="C4", label=f"slope {sp['slope']:.2f} ± {2 * sp['slope_se']:.2f}")
    ax2.set_title("seed-to-seed s.d. of R_N(T)", fontsize=9)
    for a in (ax, ax2):
        a.set_xscale("log")
        a.set_yscale("log")
        a.set_xlabel("N")
        a.grid(alpha=0.3, which="both")
        a.legend(frameon=False, fontsize=7)
    ax3 = axes[2]
    cmap = plt.cm.viridis
    for j, n in enumerate(N):
        sel = (met["N"] == n) & (met["t"] > 0)
        ax3.plot(met["t"][sel], met["risk"][sel], color=cmap(j / max(1, len(N) - 1)), lw=1.2,
                 label=f"N = {int(n)}")
    ax3.set_yscale("log")
    ax3.set_xscale("log")
    ax3.set_xlabel("t (MMN time)")
    ax3.set_title("seed-mean risk R_N(t)", fontsize=9)
    ax3.grid(alpha=0.3, which="both")
    ax3.legend(frameon=False, fontsize=7, ncol=2)
    fig.tight_layout()
    return [save_figure(fig, run_dir / io.FIGURES / "n_scaling.png")]
