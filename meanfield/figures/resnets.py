"""Figures of the ResNet experiments and of the linear obstruction, from their run directories.

Each function reads ``results.json`` (``analysis.results.read_results``) and
``metrics.csv`` of a finished run and writes PNGs into its ``figures/``:

* :func:`limit_figures` (resnet-limit): limits.png, the output and risk-curve distances to
  the reference against L (M = M_ref) and against M (L = L_ref), per seed and their mean,
  with the fitted slopes and bootstrap intervals and guides of slope −1 (depth) and −1/2
  (width); risk.png, the risk curves of the depth sweep and the reference.
* :func:`rkhs_figures` (resnet-rkhs): separation.png, first the local exponent
  d log λ_min / d log δ against δ (exact kernel, ν = 1 log-corrected with its raw slope
  dashed, the trained M features dotted, the prediction min(2ν, 2), the asymptotic window
  shaded and the run's δ range hatched), then per target λ_min(K_X0), the minimum PL ratio
  and the minimum PL bound against δ per ν (crosses: λ_min of the exact kernel);
  training.png, risk, ‖v‖², PL ratio and λ_min along training at the smallest and largest δ.
* :func:`digits_figures` (resnet-digits): accuracy.png, the final test accuracy against L
  for each M (seeds as dots); risk.png, the training cross-entropy and test accuracy along
  training.
* :func:`obstruction_figures` (linear-obstruction): obstruction.png, f, ‖e^θ‖, max Re eig θ
  and ‖∇f‖ against t for every start.

Every function has the signature ``(run_dir, coords=None) -> [Path]`` of an experiment's
``FIGURES`` (``coords`` is unused) and never simulates.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import io
from ..analysis.results import read_results
from ..plotting import pyplot, save_figure


def limit_figures(run_dir, coords=None) -> list[Path]:
    """figures/limits.png (distances against L and M with fitted slopes) and
    figures/risk.png (risk curves of the depth sweep and the reference)."""
    run_dir = Path(run_dir)
    res = read_results(run_dir)
    m = io.read_metrics(run_dir / io.METRICS)
    p = pyplot()
    tasks = list(res["tasks"])
    fig, axes = p.subplots(len(tasks), 2, figsize=(9, 3.4 * len(tasks)), dpi=110, squeeze=False)
    for i, task in enumerate(tasks):
        for j, kind in enumerate(("depth", "width")):
            ax = axes[i, j]
            r = res["tasks"][task][kind]
            x = np.array(r["sizes"], dtype=float)
            for name, col in (("output", "C0"), ("risk", "C1")):
                E = np.array(r[f"{name}_distance"])
                fit = r[f"{name}_slope"]
                ax.loglog(x, E.T, color=col, alpha=0.25, lw=0.8)
                ax.loglog(x, E.mean(0), "o-", color=col,
                          label=f"{name}: slope {fit['slope']:.2f} [{fit['boot_low']:.2f}, {fit['boot_high']:.2f}]")
            guide = -1.0 if kind == "depth" else -0.5
            y0 = np.array(r["output_distance"]).mean(0)[0]
            ax.loglog(x, y0 * (x / x[0]) ** guide, "k--", lw=0.8, label=f"slope {guide:g}")
            ax.set_xticks(x, [f"{v:g}" for v in x])
            ax.minorticks_off()
            ax.set_xlabel("L (M = M_ref)" if kind == "depth" else "M (L = L_ref)")
            ax.set_ylabel("distance to reference")
            ax.set_title(f"{task}: {kind}")
            ax.legend(frameon=False, fontsize=7)
            ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    paths = [run_dir / io.FIGURES / "limits.png"]
    save_figure(fig, paths[0])
    fig, axes = p.subplots(1, len(tasks), figsize=(4.5 * len(tasks), 3.4), dpi=110, squeeze=False)
    sz = res["sizes"]
    for i, task in enumerate(tasks):
        ax = axes[0, i]
        sel = (m["task"] == i) & (m["M"] == sz["M_ref"])          # the depth sweep and the reference
        for k, L in enumerate(sorted({int(v) for v in m["L"][sel]})):
            rows = sel & (m["L"] == L)
            ref = L == sz["L_ref"]
            ax.plot(m["t"][rows], m["risk"][rows], color="k" if ref else f"C{k}", lw=1.6 if ref else 1,
                    label=f"L={L}, M={sz['M_ref']}" + (" (reference)" if ref else ""))
        ax.set_yscale("log")
        ax.set_xlabel("t (MMN time)")
        ax.set_ylabel("risk (mean over seeds)")
        ax.set_title(task)
        ax.legend(frameon=False, fontsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    paths.append(run_dir / io.FIGURES / "risk.png")
    save_figure(fig, paths[1])
    return paths


def rkhs_figures(run_dir, coords=None) -> list[Path]:
    """figures/separation.png (the local slope d log λ_min / d log δ against δ, then per target
    λ_min(K_X0), min PL ratio and min PL bound against δ per ν) and figures/training.png
    (risk, ‖v‖², PL ratio and λ_min along training)."""
    from matplotlib.ticker import NullLocator

    run_dir = Path(run_dir)
    res = read_results(run_dir)
    m = io.read_metrics(run_dir / io.METRICS)
    p = pyplot()
    targets = list(res["targets"])
    fig, axes = p.subplots(1, len(targets) + 1, figsize=(5 * (len(targets) + 1), 3.8), dpi=110, squeeze=False)
    _plot_local_slopes(axes[0, 0], res)
    for i, target in enumerate(targets):
        ax = axes[0, i + 1]
        for k, (nu, r) in enumerate(res["targets"][target].items()):
            x = np.array(r["deltas"])
            ax.loglog(x, r["lam_min_0_exact_kernel"], "x", color=f"C{k}", ms=6)
            for name, style in (("lam_min_0", "o-"), ("pl_ratio_min", "s--"), ("pl_bound_min", "^:")):
                y = np.array(r[name]).mean(0)
                lab = f"ν={nu}: {name}" + (f" (slope {r[name + '_slope']['slope']:.2f})" if name != "pl_bound_min" else "")
                ax.loglog(x, y, style, color=f"C{k}", label=lab, ms=4)
        ax.set_xticks(x, [f"{v:g}" for v in x])
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xlabel("separation δ   (x: λ_min of the exact kernel)")
        ax.set_title(f"target {target}")
        ax.legend(frameon=False, fontsize=6)
        ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    paths = [run_dir / io.FIGURES / "separation.png"]
    save_figure(fig, paths[0])
    fig, axes = p.subplots(len(targets), 4, figsize=(14, 3.2 * len(targets)), dpi=100, squeeze=False)
    dmin, dmax = float(np.min(m["delta"])), float(np.max(m["delta"]))
    for i, target in enumerate(targets):
        for j, name in enumerate(("risk", "velocity_sq", "pl_ratio", "lam_min")):
            ax = axes[i, j]
            for k, nu in enumerate(sorted(set(m["nu"].tolist()))):
                for delta, ls in ((dmin, "-"), (dmax, "--")):
                    sel = (m["target"] == i) & (m["nu"] == nu) & (m["delta"] == delta)
                    ax.plot(m["t"][sel], m[name][sel], ls, color=f"C{k}", label=f"ν={nu:g}, δ={delta:g}")
            ax.set_yscale("log")
            ax.set_xlabel("t")
            ax.set_title(f"{target}: {name}")
            ax.grid(alpha=0.3)
        axes[i, 0].legend(frameon=False, fontsize=6)
    fig.tight_layout()
    paths.append(run_dir / io.FIGURES / "training.png")
    save_figure(fig, paths[1])
    return paths


def _plot_local_slopes(ax, res):
    """The local slope of λ_min(δ) against δ: exact kernel (solid; ν = 1 log-corrected, its raw
    slope dashed), the trained M features at initialisation (dotted), the prediction
    min(2ν, 2) (thin), the asymptotic window (grey) and the run's δ range (hatched)."""
    ex = res.get("exponents")
    if not ex:
        return
    for k, (nu, e) in enumerate(ex["nus"].items()):
        x = np.array(e["local_slope_at"])
        s = e["summary"]
        ax.semilogx(x, e["local_slope_exact"], "-", color=f"C{k}",
                    label=f"ν={nu}{' (÷log)' if e['log_corrected'] else ''}: asympt. {s['asymptotic']:.3f}, "
                          f"pre {s['pre_asymptotic']:.2f}, M feats {s['trained_features']:.2f}")
        if e["log_corrected"]:
            ax.semilogx(x, e["local_slope_exact_uncorrected"], "--", color=f"C{k}", lw=0.9,
                        label=f"ν={nu}: raw (no log correction)")
        if "local_slope_features" in e:
            ax.semilogx(x, e["local_slope_features"], ":", color=f"C{k}", lw=0.8)
        ax.axhline(e["predicted"], color=f"C{k}", lw=0.6, alpha=0.6)
    lo, hi = ex["nus"][next(iter(ex["nus"]))]["asymptotic"]["window"]
    ax.axvspan(lo, hi, color="0.85", zorder=0, label="asymptotic window")
    lo, hi = ex["nus"][next(iter(ex["nus"]))]["pre_asymptotic"]["window"]
    ax.axvspan(lo, hi, fill=False, hatch="//", ec="0.6", lw=0, zorder=0, label="run's δ (pre-asymptotic)")
    ax.set_xlabel("separation δ   (solid: exact kernel, dotted: M features)")
    ax.set_ylabel("local slope d log λ_min / d log δ")
    ax.set_ylim(-0.1, 2.6)
    ax.set_title("λ_min(K_X) ~ δ^p: local exponent")
    ax.legend(frameon=False, fontsize=6)
    ax.grid(alpha=0.3, which="both")


def digits_figures(run_dir, coords=None) -> list[Path]:
    """figures/accuracy.png (final test accuracy against L for each M) and figures/risk.png
    (training cross-entropy and test accuracy along training)."""
    run_dir = Path(run_dir)
    res = read_results(run_dir)
    m = io.read_metrics(run_dir / io.METRICS)
    p = pyplot()
    fig, ax = p.subplots(figsize=(5, 3.6), dpi=110)
    Ms = sorted({v["M"] for v in res["final"].values()})
    for k, M in enumerate(Ms):
        pts = sorted((v["L"], v["test_acc"], v["test_acc_seeds"]) for v in res["final"].values() if v["M"] == M)
        Ls = [q[0] for q in pts]
        ax.plot(Ls, [100 * q[1] for q in pts], "o-", color=f"C{k}", label=f"M = {M}")
        for L, _, seeds in pts:
            ax.scatter([L] * len(seeds), [100 * s for s in seeds], color=f"C{k}", s=8, alpha=0.4)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("depth L")
    ax.set_ylabel("test accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(frameon=False)
    fig.tight_layout()
    paths = [run_dir / io.FIGURES / "accuracy.png"]
    save_figure(fig, paths[0])
    fig, axes = p.subplots(1, 2, figsize=(10, 3.6), dpi=100)
    pairs = sorted({(int(a), int(b)) for a, b in zip(m["L"], m["M"])}, key=lambda q: (q[1], q[0]))
    for k, (L, M) in enumerate(pairs):
        sel = (m["L"] == L) & (m["M"] == M)
        axes[0].plot(m["t"][sel], m["risk"][sel], color=f"C{k % 10}", label=f"L={L}, M={M}")
        axes[1].plot(m["t"][sel], 100 * m["test_acc"][sel], color=f"C{k % 10}")
    axes[0].set_yscale("log")
    axes[0].set_ylabel("training cross-entropy")
    axes[1].set_ylabel("test accuracy (%)")
    for ax in axes:
        ax.set_xlabel("t (MMN time)")
        ax.grid(alpha=0.3)
    axes[0].legend(frameon=False, fontsize=6, ncol=2)
    fig.tight_layout()
    paths.append(run_dir / io.FIGURES / "risk.png")
    save_figure(fig, paths[1])
    return paths


def obstruction_figures(run_dir, coords=None) -> list[Path]:
    """figures/obstruction.png: f, ‖e^θ‖, max Re eig θ and ‖∇f‖ against t for every start."""
    run_dir = Path(run_dir)
    m = io.read_metrics(run_dir / io.METRICS)
    res = read_results(run_dir)
    p = pyplot()
    fig, axes = p.subplots(1, 4, figsize=(15, 3.4), dpi=100)
    R = len([k for k in m if k.startswith("risk_r")])
    for r in range(R):
        lab = "θ₀ = 0" if r == 0 else f"θ₀ random ({r})"
        for ax, name in zip(axes, ("risk", "expnorm", "maxre", "grad")):
            ax.plot(m["t"][1:], m[f"{name}_r{r}"][1:], label=lab)          # t > 0 on log axes
    axes[0].axhline(res["d"], color="k", ls=":", lw=0.8, label="f = d")
    for ax, title, log in zip(axes, ("f(θ) = ‖e^θ + I‖²", "‖e^θ‖_F", "max Re eig(θ)", "‖∇f‖"),
                              (True, True, False, True)):
        ax.set_title(title)
        ax.set_xlabel("t")
        ax.set_xscale("log")
        if log:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    axes[0].legend(frameon=False, fontsize=7)
    fig.tight_layout()
    path = run_dir / io.FIGURES / "obstruction.png"
    save_figure(fig, path)
    return [path]


__all__ = ["digits_figures", "limit_figures", "obstruction_figures", "rkhs_figures"]
