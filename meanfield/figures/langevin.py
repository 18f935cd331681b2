"""Figures of mean-field Langevin on the torus (the mfld-torus experiment).

:func:`torus_figures` reads the run directory alone and draws
figures/free_energy.png (the seed-mean F_τ − F_τ^∞ against iteration for each fixed τ, on a
symmetric-log axis — the gap fluctuates around 0 once a run is stationary, and the larger τ
get there first —, with the fitted exponential ``meanfield.analysis.decay.decay_rate``
recorded in fit.json), annealing.png (the seed-mean MMD² R against iteration: annealed, noiseless and
fixed τ) and particles.png (every run's final particles of seed 0 and the targets, on
[0, 2π)²).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .. import io
from ..plotting import pyplot, save_figure, value_scale

FIT = "fit.json"          # the decay rates per τ and the annealing comparison
CURVES = "curves.npz"     # per run j: k_run<j> [K], R_run<j>, H_run<j>, F_run<j> [K, S]; labels


def torus_figures(run_dir, coords=None) -> list[Path]:
    """figures/free_energy.png, annealing.png and particles.png (module docstring) from the
    run directory's fit.json, curves.npz and particles.npz."""
    run_dir = Path(run_dir)
    fit = json.loads((run_dir / FIT).read_text())
    with np.load(run_dir / CURVES) as z:
        labels = [str(s) for s in z["labels"]]
        curves = {j: {k: z[f"{k}_run{j}"] for k in ("k", "R", "H", "F")} for j in range(len(labels))}
    with np.load(run_dir / io.PARTICLES) as z:
        theta, targets = z["theta"][0], z["targets"]
    plt = pyplot()
    k_off = fit["noise_off"]
    paths = []
    fig, ax = plt.subplots(figsize=(5.5, 3.8), dpi=120)
    gaps = []
    for j, (label, info) in enumerate(fit["fixed_tau"].items()):
        c = curves[j]
        sel = c["k"] < k_off
        m = c["F"][sel].mean(-1) - info["F_inf"]
        gaps.extend(m.tolist())
        ax.plot(c["k"][sel], m, color=f"C{j}", lw=1.0, alpha=0.8,
                label=f"τ = {info['tau']:g}: rate {info['rate_per_iteration']:.3g}/iter")
        kk = np.arange(0, info["fit_until"] + 1)
        if np.isfinite(info["rate_per_iteration"]):
            ax.plot(kk, np.exp(info["fit_intercept"] - info["rate_per_iteration"] * kk), color=f"C{j}",
                    lw=2.2, ls="--")
            mf = info.get("mean_field_asymptotic")
            if mf:          # the mean-field limit's asymptotic rate (spectrum), same intercept
                r = mf["rate_free_energy"][-1]
                ax.plot(kk, np.exp(info["fit_intercept"] - r * kk), color=f"C{j}", lw=1.0, ls=":",
                        label=f"  mean-field asymptotic {r:.3g}/iter")
    value_scale(ax, gaps)                 # signed: stationary gaps are as often < 0 as > 0
    ax.axhline(0.0, color="0.5", lw=0.6)
    ax.set_xlabel("iteration k (t = k·dt)")
    ax.set_ylabel("F_τ(ρ_k) − F_τ^∞")
    ax.set_title("seed-mean free energy ½R − τĤ (KL 1-NN), noise on; dashed: fit", fontsize=9)
    ax.grid(alpha=0.3, which="both")
    ax.legend(frameon=False, fontsize=7)
    fig.tight_layout()
    paths.append(save_figure(fig, run_dir / io.FIGURES / "free_energy.png"))

    fig, ax = plt.subplots(figsize=(5.5, 3.8), dpi=120)
    for j, label in enumerate(labels):
        c = curves[j]
        style = {"lw": 2.0, "color": "k"} if label.startswith("annealed") else \
            ({"lw": 2.0, "color": "C3", "ls": "--"} if label == "noiseless" else {"lw": 1.0, "color": f"C{j}", "alpha": 0.7})
        ax.plot(c["k"], c["R"].mean(-1), label=label, **style)
    ax.axvline(k_off, color="0.5", lw=0.8, ls=":")
    ax.set_yscale("log")
    ax.set_xlabel("iteration k")
    ax.set_ylabel("MMD² R(ρ_k), seed mean")
    a, n = fit["annealed"]["final_risk_mean"], fit["noiseless"]["final_risk_mean"]
    ax.set_title(f"final R: annealed {a:.3g}, noiseless {n:.3g}", fontsize=9)
    ax.grid(alpha=0.3, which="both")
    ax.legend(frameon=False, fontsize=7)
    fig.tight_layout()
    paths.append(save_figure(fig, run_dir / io.FIGURES / "annealing.png"))

    fig, axes = plt.subplots(1, len(labels), figsize=(2.6 * len(labels), 2.8), dpi=120)
    for ax, j in zip(np.atleast_1d(axes), range(len(labels))):
        p = np.mod(theta[j, 0], 2 * np.pi)
        ax.scatter(p[:, 0], p[:, 1], s=6, color="k")
        ax.scatter(targets[:, 0], targets[:, 1], s=30, color="C3")
        ax.set_xlim(0, 2 * np.pi)
        ax.set_ylim(0, 2 * np.pi)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(labels[j], fontsize=8)
    fig.tight_layout()
    paths.append(save_figure(fig, run_dir / io.FIGURES / "particles.png"))
    return paths
