"""Figures of the MMN experiments: mmn-isotropic and mmn-bifurcation (:func:`radial_figures`)
and chaos-rate (:func:`chaos_figures`), drawn from a run directory alone.

* :func:`radial_figures`: risk.png — the particles' Monte Carlo risk (± 2 s.e. for one
  replica) as symbols and the radial PDE's risk as lines, one colour per initial law (κ) —
  and histograms.png — |w_i| at 4 snapshot times against the PDE's cell density (and the
  self-consistent Gibbs law at the last time, when the run computed it); a spike of units
  near w = 0 is clipped and its mass printed.  Reads metrics.csv, ``pde.npz``
  (:data:`PDE_FILE`), particles.npz and config.json.
* :func:`chaos_figures`: chaos.png — three panels against N: the risk's bias and its
  seed-to-seed s.d. at T with the Monte Carlo error taken out (log-log), W1 of the particles
  beside the exact expectation for N i.i.d. draws of the PDE law (log-log), and the per-seed
  ratios' distribution.  Reads summary.csv (:data:`SUMMARY_FILE`) and fit.json
  (:data:`FIT_FILE`).

The file names here are the ones the experiments write (they import them from here).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .. import io
from ..plotting import pyplot, save_figure

# result files the MMN experiments write and these figures read
PDE_FILE = "pde.npz"          # the radial PDE: t [T], r [M], density [L, T, M], risk [L, T] …
FIT_FILE = "fit.json"         # acceptance, grid error (chaos-rate: slopes and intervals)
SUMMARY_FILE = "summary.csv"  # chaos-rate: one row per N


def radial_figures(run_dir, coords=None) -> list[Path]:
    """risk.png (particles' risk ± 2 s.e. as symbols, the PDE as lines, per initial law) and
    histograms.png (|w_i| at 4 snapshot times against the PDE density), from the run
    directory alone."""
    run_dir = Path(run_dir)
    m = io.read_metrics(run_dir / io.METRICS)
    with np.load(run_dir / PDE_FILE) as z:
        pt, r, dens, prisk, index = z["t"], z["r"], z["density"], z["risk"], z["law_index"]
        gibbs = z["gibbs"] if "gibbs" in z else None
        kappa = z["kappa"]
    with np.load(run_dir / io.PARTICLES) as z:
        theta, ts = z["theta"], z["t"]
    if theta.ndim == 3:
        theta = theta[:, None]                                               # (K, B, N, D)
    B = theta.shape[1]
    n_run = io.load_run_config(run_dir)["config"]["N"]
    labels = [f" (κ = {kappa[i]:g})" if len(kappa) > 1 else "" for i in index]
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(5.5, 3.8), dpi=120)
    for b in range(B) if B > 1 else [0]:
        key = f"risk_r{b}" if B > 1 else "risk"
        c = f"C{int(index[b])}"
        ax.plot(m["t"], m[key], "o", ms=3, color=c, alpha=0.8,
                label=f"SGD, N = {n_run}{labels[b]}" if b == list(index).index(index[b]) else None)
    if B == 1 and "risk_se" in m:
        ax.errorbar(m["t"], m["risk"], yerr=2 * m["risk_se"], fmt="none", color="C0", alpha=0.5)
    for law in range(prisk.shape[0]):
        ax.plot(pt, prisk[law], "-", color=f"C{law}", lw=1.4,
                label="PDE" + (labels[list(index).index(law)] if prisk.shape[0] > 1 else ""))
    ax.set_yscale("log")
    ax.set_xlabel("t (= k ε)")
    ax.set_ylabel("risk R")
    ax.grid(alpha=0.3)
    ax.legend(frameon=False, fontsize=8)
    fig.tight_layout()
    paths = [save_figure(fig, run_dir / io.FIGURES / "risk.png")]

    picks = np.unique(np.linspace(0, len(ts) - 1, min(4, len(ts))).round().astype(int))
    laws = sorted(set(int(i) for i in index))
    fig, axes = plt.subplots(len(laws), len(picks), figsize=(3.2 * len(picks), 2.8 * len(laws)),
                             dpi=120, squeeze=False)
    for row, law in enumerate(laws):
        b = list(index).index(law)
        for ax, k in zip(axes[row], picks):
            rs = np.linalg.norm(theta[k, b], axis=-1)
            kp = int(np.argmin(np.abs(pt - ts[k])))
            ax.hist(rs, bins=40, density=True, color=f"C{law}", alpha=0.45, label="SGD")
            ax.ticklabel_format(axis="x", style="sci", scilimits=(-2, 3))
            h = r[1] - r[0]
            faces = np.append(r - h / 2, r[-1] + h / 2)
            ax.stairs(dens[law, kp], faces, color="k", lw=1.2, label="PDE (cell averages)")
            if gibbs is not None and k == picks[-1]:
                ax.stairs(gibbs[law], faces, color="C3", ls="--", lw=1.0, label="Gibbs")
            rmax = max(rs.max(), faces[1:][dens[law, kp] > 1e-3 * dens[law, kp].max()].max()) * 1.05
            ax.set_xlim(0, rmax)
            # a spike of units near w = 0 would flatten the bulk: clip it and print its mass
            cut = 0.1 * rmax
            bulk = dens[law, kp][r > cut]
            mass_pde = float(dens[law, kp][r <= cut].sum() * (r[1] - r[0]))
            if mass_pde > 0.02 and bulk.size:
                ax.set_ylim(0, 1.6 * bulk.max())
                ax.text(0.97, 0.95, f"mass at |w| < {cut:.2g}:\nPDE {mass_pde:.0%}, SGD "
                        f"{(rs < cut).mean():.0%}", ha="right", va="top", fontsize=7,
                        transform=ax.transAxes)
            ax.set_title(f"t = {ts[k]:.3g}{labels[b]}", fontsize=9)
            ax.set_xlabel("|w|")
        axes[row][0].legend(frameon=False, fontsize=7)
    fig.tight_layout()
    paths.append(save_figure(fig, run_dir / io.FIGURES / "histograms.png"))
    return paths



def chaos_figures(run_dir, coords=None) -> list[Path]:
    """figures/chaos.png, three panels against N (log-log, fitted slopes with their intervals,
    and the theory's guides): the risk's bias E[R_N − R_PDE] at T (± 2 s.e.; theory 1/N), its
    seed-to-seed s.d. with the Monte Carlo error taken out (the interval of that error alone;
    the raw s.d. and the Monte Carlo s.e. faded; with paired seeds, its initial-sampling and
    SGD parts; theory N^{−1/2} for the initial sampling); W1 of the particles (± 2 s.e.) beside
    the exact expectation for N i.i.d. draws of the PDE law (its Monte Carlo draws as a
    check); and the per-seed ratios W1 / E W1_iid (quartile boxes, range whiskers, median)
    with the ratio of the seed mean and its bootstrap interval, beside the quartiles of the
    i.i.d. draws' own ratios (chaos: N-independent).  Reads summary.csv (:data:`SUMMARY_FILE`)
    and fit.json (:data:`FIT_FILE`)."""
    from matplotlib.ticker import NullFormatter

    run_dir = Path(run_dir)
    s = io.read_metrics(run_dir / SUMMARY_FILE)
    fit = json.loads((run_dir / FIT_FILE).read_text())
    N = s["N"]
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8), dpi=120)

    def line(ax, key, v, color, label):
        f = fit.get(key) or {}
        if f.get("slope") is None:
            return
        ok = np.asarray(v) > 0
        c = np.exp(np.mean(np.log(np.asarray(v)[ok])) - f["slope"] * np.mean(np.log(N[ok])))
        ax.plot(N, c * N ** f["slope"], "-", color=color, lw=1,
                label=f"{label}: slope {f['slope']:.2f} [{f['ci95'][0]:.2f}, {f['ci95'][1]:.2f}]")

    ax = axes[0]
    ax.errorbar(N, s["risk_bias"], yerr=2 * s["risk_bias_se"], fmt="o", color="C0", ms=4, capsize=2)
    line(ax, "risk_bias", s["risk_bias"], "C0", "bias E R_N − R_PDE")
    sd = s["risk_sd"]
    ax.errorbar(N, sd, yerr=[sd - s["risk_sd_lo"], s["risk_sd_hi"] - sd], fmt="s", color="C1", ms=4,
                capsize=2)
    line(ax, "risk_sd", sd, "C1", "s.d. over seeds, MC error out")
    ax.plot(N, s["risk_sd_raw"], "s", color="C1", mfc="none", alpha=0.4, ms=4, label="raw s.d.")
    ax.plot(N, s["mc_se"], ".", color="0.5", label="MC s.e. of one risk")
    if "risk_sd_init" in s:
        for key, c, lab in (("risk_sd_init", "C4", "initial sampling"), ("risk_sd_sgd", "C5", "SGD noise")):
            f = fit.get(key) or {}
            ax.plot(N, np.where(s[key] > 0, s[key], np.nan), "D", color=c, ms=3,
                    label=lab if f.get("slope") is None else None)
            line(ax, key, s[key], c, lab)
    ax.plot(N, s["risk_bias"][0] * N[0] / N, ":", color="0.4", label="1/N")
    ax.plot(N, sd[0] * np.sqrt(N[0] / N), "--", color="0.6", label="N^(−1/2)")
    ax.set_title(f"risk at T = {fit['T']:g}", fontsize=9)
    ax = axes[1]
    ax.errorbar(N, s["w1"], yerr=2 * s["w1_se"], fmt="o", color="C0", ms=4, capsize=2)
    line(ax, "w1", s["w1"], "C0", "particles")
    ax.plot(N, s["w1_iid"], "-", color="C2", lw=1.2,
            label=f"E W1 of N i.i.d. draws (exact): slope {fit['w1_iid']['slope']:.2f}")
    if "w1_iid_mc" in s:
        ax.errorbar(N, s["w1_iid_mc"], yerr=2 * s["w1_iid_mc_se"], fmt="^", color="C2", ms=3,
                    capsize=2, alpha=0.6, label="its Monte Carlo draws")
    ax.set_title("W1(law of |w| at T, PDE law)", fontsize=9)
    ax = axes[2]
    r = fit["w1_ratio"]
    x = np.arange(len(N))
    ax.vlines(x, s["w1_ratio_min"], s["w1_ratio_max"], color="C3", lw=0.8)
    ax.bar(x, s["w1_ratio_q75"] - s["w1_ratio_q25"], bottom=s["w1_ratio_q25"], width=0.35,
           color="C3", alpha=0.3, label="per seed: quartiles, range")
    ax.plot(x, s["w1_ratio_median"], "_", color="C3", ms=14, mew=2, label="per seed: median")
    ax.errorbar(x + 0.3, s["w1_ratio"], yerr=[s["w1_ratio"] - s["w1_ratio_lo"], s["w1_ratio_hi"] - s["w1_ratio"]],
                fmt="o", color="k", ms=4, capsize=2,
                label=f"seed mean, 95 %: slope {r['slope']:.2f} [{r['slope_ci95'][0]:.2f}, {r['slope_ci95'][1]:.2f}]")
    if "iid_ratio_q25" in s:
        ax.bar(x - 0.3, s["iid_ratio_q75"] - s["iid_ratio_q25"], bottom=s["iid_ratio_q25"], width=0.2,
               color="C2", alpha=0.4, label="i.i.d. draws: quartiles")
    ax.axhline(1.0, color="0.5", ls="--", lw=1)
    ax.set_xticks(x, [str(int(n)) for n in N])
    ax.set_ylim(0, max(2.0, float(np.max(s["w1_ratio_max"])) * 1.1))
    ax.set_xlabel("N")
    ax.set_title("W1(particles) / E W1(i.i.d.)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(frameon=False, fontsize=6.5)
    for ax in axes[:2]:
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xticks(N, [str(int(n)) for n in N])
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("N")
        ax.grid(alpha=0.3, which="both")
        ax.legend(frameon=False, fontsize=6.5)
    fig.tight_layout()
    return [save_figure(fig, run_dir / io.FIGURES / "chaos.png")]
