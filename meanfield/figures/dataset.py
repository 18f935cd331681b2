"""Figures of the ``dataset`` experiment (a two-layer network trained on your own data).

:func:`dataset_figures` draws figures/dataset.png — the train and test risk, the train and
test classification error and the normalised margin against t, each panel only when
metrics.csv has its columns — beside the standard figures of a particle run
(``plotting.plot_run``: risk, diagnostics, particles, histograms).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import io
from ..plotting import plot_run, pyplot, save_figure


def dataset_figures(run_dir, coords=None) -> list[Path]:
    """figures/dataset.png (train and test risk, test error, margin against t, each from
    metrics.csv) beside ``plotting.plot_run``'s risk, diagnostics, particles and histograms."""
    run_dir = Path(run_dir)
    out = plot_run(run_dir, coords)
    m = io.read_metrics(run_dir / io.METRICS)
    panels = [("risk", [("risk", "train"), ("test_risk", "test")], "risk (no ½)"),
              ("error", [("train_accuracy", "train"), ("test_error", "test")], "classification error"),
              ("margin", [("margin", "train")], "normalised margin min y f / ∫|θ|² dρ")]
    panels = [p for p in panels if any(k in m for k, _ in p[1])]
    plt = pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.3), dpi=120, squeeze=False)
    t = m["t"]
    for ax, (kind, series, label) in zip(axes[0], panels):
        for k, lab in series:
            if k not in m:
                continue
            y = 1.0 - m[k] if k == "train_accuracy" else m[k]
            ax.plot(t, y, color="C0" if lab == "train" else "C1", label=lab)
        if kind == "risk" and np.all(m["risk"] > 0):
            ax.set_yscale("log")
        ax.set_xlabel("t (t = k·dt)")
        ax.set_title(label, fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(frameon=False, fontsize=8)
    fig.tight_layout()
    out.append(save_figure(fig, run_dir / io.FIGURES / "dataset.png"))
    return out
