"""What a sweep summarises, and its figures, fitted rates and table (``meanfield plot|show
SWEEP_DIR``).

A sweep (``meanfield.sweep``) writes one run directory per grid point and ``summary.csv``
(one row per point and seed) with the final and best value of its metric (``--metric``, a
metrics.csv column: risk by default) in columns named after it, ``final_<metric>`` and
``best_<metric>`` (:func:`stat_columns`).  The metric is checked before the sweep runs
(:func:`check_metric`: one measured row of every phase of the first point, in memory).
Here, for every numeric grid key K with at least three values (N first; ``seed`` is the
sample, never a key), and for each combination of the other keys:

* the final and the best value of the summarised metric against K, seed mean with a 95 %
  bootstrap interval of the mean, on log-log axes (a symmetric-log value axis when the
  metric takes values ≤ 0, as a free energy does);
* the fitted slope of log(seed mean) against log K with its 95 % percentile bootstrap
  interval (seeds resampled within each K) — ``meanfield.diagnostics.loglog_rate``, the
  fitter the n-scaling and chaos-rate experiments use;
* the curves R(t) of every point on the MMN time axis (t = k·dt), coloured by K.

Only finished points (status ``ok``) count, so a sweep can be plotted while it runs.  Fits
go to ``SWEEP_DIR/fit.json``, figures to ``SWEEP_DIR/figures/<metric>_vs_<K>.png``.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from . import io
from .errors import ConfigError

SUMMARY, RECORD, FIT = "summary.csv", "sweep.json", "fit.json"
SAMPLE_KEYS = ("seed",)
STATS = ("final_risk", "best_risk")        # the summary columns of the default metric


def stat_columns(metric: str = "risk") -> tuple[str, str]:
    """The summary.csv columns of a metric: ("final_<metric>", "best_<metric>")."""
    return f"final_{metric}", f"best_{metric}"


def _stats(record: dict, rows: list) -> tuple[str, str]:
    """The summary's value columns for the sweep's metric; a sweep written before the columns
    were named after the metric has final_risk/best_risk whatever its metric."""
    stats = stat_columns(record.get("metric", "risk"))
    return stats if not rows or stats[0] in rows[0] else STATS


def read_summary(path) -> list[dict]:
    """summary.csv as a list of dicts of strings."""
    import csv

    with open(path, newline="") as f:
        return list(csv.DictReader(f))


class MetricError(ConfigError):
    """``--metric`` names no column of the experiment's metrics.csv (stops the sweep)."""


def metric_values(run_dir: Path, metric: str, replicas: int):
    """Per replica: (final value, best value, final t) of ``metric`` from a point's
    metrics.csv (best: the smallest finite value); :class:`MetricError` when the table has
    rows but no such column."""
    path = Path(run_dir) / io.METRICS
    m = io.read_metrics(path) if path.exists() else {}
    if m and metric not in m and f"{metric}_r0" not in m:
        raise MetricError(f"--metric {metric!r} is not a column of {Path(run_dir).name}'s {io.METRICS} "
                          f"(columns: {', '.join(m)})")
    out = []
    for r in range(replicas):
        col = f"{metric}_r{r}" if replicas > 1 and f"{metric}_r{r}" in m else metric
        if col in m and len(m[col]):
            v = m[col]
            finite = v[~(v != v)]
            out.append((float(v[-1]), float(finite.min()) if len(finite) else math.nan,
                        float(m["t"][-1]) if "t" in m else math.nan))
        else:
            out.append((math.nan, math.nan, math.nan))
    return out


DRY_RUN_SECONDS = 20.0     # measured_columns gives up after this long (the first point checks)


class _TooLong(BaseException):  # not an Exception: no except clause on the way swallows it
    pass


def measured_columns(experiment: str, config: dict, *, timeout: float = DRY_RUN_SECONDS) -> set[str] | None:
    """The metrics.csv columns a run of ``config`` writes: the phases' fixed columns and one
    measured row (and last row) of the first phase at step 0, in memory, nothing written, on
    ``config`` made cheap where that changes no column (two steps, every cadence 1, n_mc ≤
    1000, a coarse PDE grid); a plan's prelude (a PDE solve) runs only when its first phase
    cannot be measured without it.  None when that cannot be done, or (in the main thread)
    takes more than ``timeout`` seconds: the first finished point then checks the metric."""
    import signal
    import threading

    from .experiments import get_experiment

    exp = get_experiment(experiment)
    small = {k: 1 for k in ("log_every", "save_every", "checkpoint_every", "w2_every") if k in config}
    small.update({k: v for k, v in (("steps", 2), ("noise_off", 2), ("pde_refine", False), ("fit_t0", 0.0),
                                    ("t_long", 2 * float(config.get("dt") or 0)), ("cells", 8),
                                    ("pde_cells", min(int(config.get("pde_cells") or 3), 64)),
                                    ("n_mc", min(int(config.get("n_mc") or 2), 1000))) if k in config})

    def first_row(plan, shared):
        phases = list(plan.phases(shared))
        dyn, state = phases[0].build()
        cols = {"step", "t"}.union(*(ph.columns for ph in phases)) | set(phases[0].measure(dyn, state, None))
        return cols | (set(phases[0].measure_last(dyn, state)) if phases[0].measure_last else set())

    def on_alarm(signum, frame):
        raise _TooLong()

    alarm = (threading.current_thread() is threading.main_thread() and hasattr(signal, "setitimer")
             and signal.getsignal(signal.SIGALRM) in (signal.SIG_DFL, None))
    if alarm:
        signal.signal(signal.SIGALRM, on_alarm)
        signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        plan = exp.plan(exp.Config.from_mapping({**config, **small}))
        try:
            return first_row(plan, {})
        except Exception:  # noqa: BLE001 — its measurements need the prelude's results
            if plan.prelude is None:
                raise
            return first_row(plan, plan.prelude())
    except (Exception, _TooLong):  # noqa: BLE001 — the points report their own errors
        return None
    finally:
        if alarm:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, signal.SIG_DFL)


def check_metric(experiment: str, config: dict, metric: str) -> None:
    """:class:`MetricError` (exit status 2, before the sweep starts) when ``metric`` is not a
    column of what a run of ``config`` measures (:func:`measured_columns`), naming the
    columns there are.  Measuring is the one source that cannot drift from the experiment:
    columns depend on the config (replicas' ``_r<b>``, noise's entropy and free energy …)."""
    cols = measured_columns(experiment, config)
    if cols is not None and metric not in cols and f"{metric}_r0" not in cols:
        shown = sorted(c for c in cols if not c.rpartition("_r")[2].isdigit())
        raise MetricError(f"--metric {metric!r} is not a column of {experiment}'s {io.METRICS} for this "
                          f"config (columns: {', '.join(shown)})")


def is_sweep_dir(path) -> bool:
    """Whether ``path`` is a sweep directory (it holds sweep.json, no config.json)."""
    p = Path(path)
    return p.is_dir() and (p / RECORD).is_file() and not (p / io.CONFIG).exists()


def _load(sweep_dir):
    d = Path(sweep_dir)
    record = io.read_json(d / RECORD)
    if not isinstance(record, dict) or not isinstance(record.get("grid"), dict):
        raise ConfigError(f"{d / RECORD} is not a meanfield sweep record")
    if not (d / SUMMARY).exists():
        raise ConfigError(f"{d} has no {SUMMARY} yet")
    try:
        rows = read_summary(d / SUMMARY)
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise ConfigError(f"{d / SUMMARY} is unreadable or corrupted ({type(e).__name__})") from None
    return record, rows


def _number(v):
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def numeric_keys(record: dict) -> list[str]:
    """The grid keys whose every value is a number, except the sample keys (seed): N first,
    then in grid order; only keys with at least three distinct values can be fitted."""
    keys = [k for k, vals in record["grid"].items()
            if k not in SAMPLE_KEYS and all(_number(v) is not None for v in vals)]
    return sorted(keys, key=lambda k: (k != "N", list(record["grid"]).index(k)))


def _groups(record, rows, key):
    """{fixed other keys (tuple of (k, v)): {x: [row, ...]}} over finished rows."""
    others = [k for k in record["grid"] if k not in SAMPLE_KEYS and k != key]
    out: dict = {}
    for r in rows:
        if r.get("status") != "ok":
            continue
        x = _number(r.get(key))
        if x is None:
            continue
        fixed = tuple((k, r.get(k)) for k in others)
        out.setdefault(fixed, {}).setdefault(x, []).append(r)
    return out


def sweep_fits(sweep_dir, *, n_boot: int = 2000, write: bool = True) -> dict:
    """Fitted slopes of the final and best metric against every numeric grid key (module
    docstring), written to ``SWEEP_DIR/fit.json`` when ``write``.

    Returns {"metric", "stats", "points_ok", "points", "fits": [{"key", "fixed": {k: v},
    "x": [K], "n": [K] (samples per x), and per stat of "stats" (``final_<metric>``,
    ``best_<metric>``): {"mean": [K], "slope", "intercept", "ci95", "half_width"} or {"mean",
    "error"}}]}.  A group needs ≥ 3 values of the key and ≥ 2 finite positive samples at
    each (else its "error" says why)."""
    from .diagnostics import loglog_rate

    d = Path(sweep_dir)
    record, rows = _load(d)
    stats = _stats(record, rows)
    fits = []
    for key in numeric_keys(record):
        for fixed, by_x in _groups(record, rows, key).items():
            xs = sorted(by_x)
            entry = {"key": key, "fixed": dict(fixed), "x": xs, "n": [len(by_x[x]) for x in xs]}
            for stat in stats:
                samples = [np.array([_number(r.get(stat)) for r in by_x[x]], dtype=float) for x in xs]
                samples = [s[np.isfinite(s)] for s in samples]
                res = {"mean": [float(s.mean()) if s.size else math.nan for s in samples]}
                if len(xs) < 3:
                    res["error"] = f"{key} has {len(xs)} finished values; a slope needs 3"
                elif any(s.size < 2 or (s <= 0).any() for s in samples):
                    res["error"] = "each value needs >= 2 finished seeds with a positive metric"
                else:
                    res.update(loglog_rate(xs, samples, n_boot=n_boot))
                entry[stat] = res
            fits.append(entry)
    out = {"metric": record.get("metric", "risk"), "stats": list(stats), "experiment": record.get("experiment"),
           "points": len(rows), "points_ok": sum(r.get("status") == "ok" for r in rows), "fits": fits}
    if write:
        io.write_json(d / FIT, out)
    return out


def _mean_ci(values, n_boot=1000, seed=0):
    """Mean of ``values`` and a 95 % percentile bootstrap interval of the mean."""
    v = np.asarray(values, dtype=float)
    if v.size < 2:
        return float(v.mean()), float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, v.size, (n_boot, v.size))].mean(1)
    return float(v.mean()), float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))


def plot_sweep(sweep_dir) -> list[Path]:
    """``SWEEP_DIR/figures/<metric>_vs_<K>.png`` for every numeric grid key K: (left) the
    final and best metric against K, seed means with 95 % bootstrap intervals and the fitted
    slopes; (right) the metric against t of every finished point, coloured by K.  Value axes
    are logarithmic when every value is > 0, else symmetric-log (``plotting.value_scale``: a
    free energy's negative values stay on the plot).  Also writes fit.json.  ConfigError
    when nothing has finished yet."""
    from matplotlib.ticker import NullFormatter

    from .plotting import pyplot, save_figure, value_scale

    d = Path(sweep_dir)
    record, rows = _load(d)
    fit = sweep_fits(d)
    if not fit["points_ok"]:
        raise ConfigError(f"{d}: no point has finished yet (summary.csv has no 'ok' row)")
    keys = numeric_keys(record)
    if not keys:
        raise ConfigError(f"{d}: no numeric grid key besides seed to plot against")
    fig_dir = d / io.FIGURES
    if fig_dir.exists() and not fig_dir.is_dir():
        raise ConfigError(f"{fig_dir} is a file, not a directory")
    metric = fit["metric"]
    plt = pyplot()
    paths = []
    for key in keys:
        groups = _groups(record, rows, key)
        fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4), dpi=110)
        for g, (fixed, by_x) in enumerate(groups.items()):
            xs = sorted(by_x)
            label = ", ".join(f"{k}={v}" for k, v in fixed) or None
            entry = next(f for f in fit["fits"] if f["key"] == key and f["fixed"] == dict(fixed))
            for j, (stat, marker, ls) in enumerate(zip(fit["stats"], "os", ("-", "--"))):
                stats = [_mean_ci([_number(r.get(stat)) for r in by_x[x]]) for x in xs]
                m = np.array([s[0] for s in stats])
                lo, hi = np.array([s[1] for s in stats]), np.array([s[2] for s in stats])
                err = np.vstack([m - lo, hi - m])
                c = f"C{2 * g + j}"
                ax.errorbar(xs, m, yerr=np.where(np.isfinite(err), err, 0), fmt=marker, color=c,
                            ms=4, capsize=2)
                f = entry[stat]
                name = f"{('final', 'best')[j]} {metric}" + (f" ({label})" if label else "")
                if "slope" in f:
                    xx = np.array(xs, dtype=float)
                    ax.plot(xx, np.exp(f["intercept"]) * xx ** f["slope"], ls, color=c, lw=1,
                            label=f"{name}: slope {f['slope']:.2f} [{f['ci95'][0]:.2f}, {f['ci95'][1]:.2f}]")
                else:
                    ax.plot([], [], marker, color=c, label=f"{name} ({f.get('error', 'no fit')})")
        ticks = sorted({x for by_x in groups.values() for x in by_x})
        value_scale(ax, ticks, axis="x")
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xticks(ticks, [f"{x:g}" for x in ticks])
        value_scale(ax, [_number(r.get(s)) for r in rows if r.get("status") == "ok" for s in fit["stats"]])
        ax.set_xlabel(key)
        ax.set_ylabel(f"{metric} (seed mean, 95 % interval)")
        ax.grid(alpha=0.3, which="both")
        ax.legend(frameon=False, fontsize=7)
        _curves(ax2, d, rows, key, metric, plt)
        fig.suptitle(f"{fit['experiment']} sweep over {key}: {fit['points_ok']} of {fit['points']} "
                     "points finished", fontsize=9)
        fig.tight_layout()
        paths.append(save_figure(fig, fig_dir / f"{metric}_vs_{key}.png"))
    return paths


def _curves(ax, d, rows, key, metric, plt):
    """The metric against t of every finished point, coloured by ``key`` (log scale, or
    symmetric-log where the metric takes values ≤ 0)."""
    import matplotlib.colors as mcolors
    from matplotlib.ticker import NullFormatter

    from .plotting import value_scale

    ok = [r for r in rows if r.get("status") == "ok" and _number(r.get(key)) is not None]
    vals = sorted({_number(r[key]) for r in ok})
    positive = all(v > 0 for v in vals)
    norm = (mcolors.LogNorm if positive and len(vals) > 1 else mcolors.Normalize)(
        vmin=min(vals), vmax=max(vals) if len(vals) > 1 else min(vals) + 1)
    cmap = plt.cm.viridis
    drawn, seen = set(), []
    for r in ok:
        path = d / r["run"] / io.METRICS
        try:
            m = io.read_metrics(path)
        except ConfigError:
            continue
        col = f"{metric}_r{r['replica']}" if r.get("replica") not in (None, "") and f"{metric}_r{r['replica']}" in m else metric
        if col not in m or "t" not in m:
            continue
        x = _number(r[key])
        sel = m["t"] > 0
        ax.plot(m["t"][sel], m[col][sel], color=cmap(norm(x)), lw=0.8, alpha=0.7,
                label=f"{key} = {r[key]}" if x not in drawn else None)
        drawn.add(x)
        seen.extend(m[col][sel].tolist())
    ax.set_xscale("log")
    value_scale(ax, seen)
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("t (MMN time, t = k·dt)")
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3, which="both")
    ax.legend(frameon=False, fontsize=6, ncol=2)


def describe_sweep(sweep_dir) -> str:
    """What ``meanfield show SWEEP_DIR`` prints: the sweep record, the summary table and the
    fitted slopes of every numeric key (fit.json is refreshed)."""
    d = Path(sweep_dir)
    record, rows = _load(d)
    fit = sweep_fits(d)
    lines = [f"sweep of {record.get('experiment')} over " + ", ".join(
        f"{k} ({len(v)} values)" for k, v in record["grid"].items())
        + f": {fit['points_ok']} of {fit['points']} points finished"]
    if rows:
        cols = [c for c in rows[0] if c not in ("run",)]
        widths = {c: max(len(c), *(len(_short(r.get(c, ""))) for r in rows)) for c in cols}
        lines.append("  ".join(c.rjust(widths[c]) for c in cols))
        for r in rows:
            lines.append("  ".join(_short(r.get(c, "")).rjust(widths[c]) for c in cols))
    for f in fit["fits"]:
        fixed = ", ".join(f"{k}={v}" for k, v in f["fixed"].items())
        for stat in fit["stats"]:
            s = f[stat]
            what = f"{stat} vs {f['key']}" + (f" ({fixed})" if fixed else "")
            if "slope" in s:
                lines.append(f"{what}: slope {s['slope']:.3f}, 95 % interval "
                             f"[{s['ci95'][0]:.3f}, {s['ci95'][1]:.3f}]")
            else:
                lines.append(f"{what}: {s['error']}")
    return "\n".join(lines)


def _short(v) -> str:
    x = _number(v)
    if x is None or str(v).lstrip("-").isdigit():
        return str(v)[:40]
    return f"{x:.4g}"


def read_fit(sweep_dir) -> dict:
    """The fit.json of a sweep directory."""
    return json.loads((Path(sweep_dir) / FIT).read_text())
