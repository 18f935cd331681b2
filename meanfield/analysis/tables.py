"""Tables of finished sweeps: one row per grid value, seed means and bootstrap intervals.

:func:`sweep_table` reads a ``meanfield sweep`` directory (its summary.csv and each finished
run's metrics.csv) and tabulates the final value of chosen metrics per N.
"""
from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np

from .. import io
from ..errors import ConfigError


def sweep_table(sweep_dir, columns=("test_error", "margin", "risk", "test_risk"), *,
                n_boot: int = 2000, seed: int = 0) -> list[dict]:
    """One row per N of a finished ``meanfield sweep dataset`` (points with status ok): the
    final value of each metrics.csv column in ``columns`` (the last row of each run), seed
    mean and 95 % percentile bootstrap interval of the mean over the seeds (and other grid
    keys) at that N: {"N", "seeds", "<col>", "<col>_lo", "<col>_hi"}; columns a run lacks
    are NaN.  The interval resamples the S seed values v [S] with replacement ``n_boot``
    times (``numpy.random.default_rng(seed)``, one generator for the whole table, drawn in the
    order N, then ``columns``) and takes the 2.5 % and 97.5 % quantiles of the resampled
    means; it is NaN with one seed or a non-finite value.  ConfigError when ``sweep_dir`` has
    no summary.csv.  The README's breast_cancer table is this function's output."""
    d = Path(sweep_dir)
    if not (d / "summary.csv").exists():
        raise ConfigError(f"{d} is not a sweep directory (no summary.csv)")
    with open(d / "summary.csv", newline="") as f:
        summary = list(csv.DictReader(f))
    by_n: dict = {}
    for r in summary:
        if r.get("status") != "ok":
            continue
        m = io.read_metrics(d / r["run"] / io.METRICS)
        by_n.setdefault(int(float(r["N"])), []).append(
            {c: float(m[c][-1]) if c in m else math.nan for c in columns})
    rng = np.random.default_rng(seed)
    out = []
    for N in sorted(by_n):
        row = {"N": N, "seeds": len(by_n[N])}
        for c in columns:
            v = np.array([p[c] for p in by_n[N]])
            row[c] = float(v.mean())
            if len(v) > 1 and np.isfinite(v).all():
                means = v[rng.integers(0, len(v), (n_boot, len(v)))].mean(1)
                row[f"{c}_lo"], row[f"{c}_hi"] = (float(np.quantile(means, 0.025)),
                                                  float(np.quantile(means, 0.975)))
            else:
                row[f"{c}_lo"] = row[f"{c}_hi"] = math.nan
        out.append(row)
    return out
