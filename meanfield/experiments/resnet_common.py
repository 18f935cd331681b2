"""Shared pieces of the ResNet experiments: the phase of one training job, their result
files, initial particle laws and fitted rates with bootstrap intervals.

A ResNet experiment is a sequence of named training jobs (phases run by
``meanfield.runner`` into one run directory, DESIGN.md §3).  Each job trains a
:class:`~meanfield.dynamics.ConditionalOTFlow` (or any object with ``step`` and a state
with ``step``/``t``/``theta``/``state_dict``) for the config's ``steps`` and keeps a small
picklable result; the runner checkpoints finished jobs and the job in progress, so
``meanfield resume DIR`` continues bit for bit: finished jobs are not rerun, the
interrupted one continues from its last checkpoint, and every job is a deterministic
function of its seeds.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch

from .. import io
from ..errors import ConfigError
from .config import parse_floats, parse_ints  # noqa: F401 (the ResNet experiments import them from here)
from .plan import Phase, snapshot_arrays

RESULTS = "results.json"


def unit_init(B: int, M: int, D: int, *, generator: torch.Generator, u_std: float, w_std: float,
              b_std: float, bias: bool = True, layers: int | None = None) -> torch.Tensor:
    """M i.i.d. residual units per replica: u ~ N(0, u_std² I_D), w ~ N(0, w_std²/D I_D),
    b ~ N(0, b_std²); [B, M, P], or [B, layers, M, P] (independent per layer) when ``layers``."""
    shape = (B, M) if layers is None else (B, layers, M)
    u = torch.randn(*shape, D, generator=generator, dtype=torch.float64) * u_std
    w = torch.randn(*shape, D, generator=generator, dtype=torch.float64) * (w_std / math.sqrt(D))
    cols = [u, w]
    if bias:
        cols.append(torch.randn(*shape, 1, generator=generator, dtype=torch.float64) * b_std)
    return torch.cat(cols, -1)


def fit_slope(x, errors, *, n_resamples: int = 2000, seed: int = 0) -> dict:
    """Fitted rate of errors [R, K] (R seeds, K sizes x [K]): the slope of log(mean over seeds)
    against log x (``scipy.stats.linregress``), a 95 % percentile bootstrap interval over the
    seeds (``scipy.stats.bootstrap``) and the regression's own 95 % t-interval."""
    from scipy import stats

    x = np.asarray(x, dtype=float)
    E = np.asarray(errors, dtype=float)
    lx = np.log(x)

    xc = lx - lx.mean()

    def slope(idx, axis=-1):
        # least-squares slope of log(mean over the resampled seeds) on log x, vectorised
        ly = np.log(E[np.asarray(idx, dtype=int)].mean(-2))                  # (..., K)
        return (ly * xc).sum(-1) / (xc * xc).sum()

    reg = stats.linregress(lx, np.log(E.mean(0)))
    tq = stats.t.ppf(0.975, len(x) - 2) if len(x) > 2 else float("nan")
    out = {"slope": float(reg.slope), "intercept": float(reg.intercept),
           "t_low": float(reg.slope - tq * reg.stderr), "t_high": float(reg.slope + tq * reg.stderr),
           "boot_low": float("nan"), "boot_high": float("nan"), "seeds": int(E.shape[0]),
           "x": x.tolist(), "mean_error": E.mean(0).tolist()}
    if E.shape[0] >= 2:
        res = stats.bootstrap((np.arange(E.shape[0]),), slope, vectorized=True, n_resamples=n_resamples,
                              method="percentile", confidence_level=0.95,
                              random_state=np.random.default_rng(seed))
        out["boot_low"] = float(res.confidence_interval.low)
        out["boot_high"] = float(res.confidence_interval.high)
    return out


def job_phase(key: str, columns: dict, build, *, log_every: int, measure, finish=None,
              save_every: int | None = None, snap_all: bool = False) -> Phase:
    """The phase of one training job of a ResNet experiment: ``build() -> (flow, state)``;
    rows ``{**columns, step, t, **measure(flow, state)}`` every ``log_every`` steps (every
    value must stay finite); snapshots (θ of replica 0, or of all replicas with
    ``snap_all``) every ``save_every`` steps and at the end when ``save_every``;
    ``finish(flow, state, rows, snaps) -> dict`` kept for the results.  Jobs run to the
    config's ``steps`` and are not extended."""
    def snapshot(state):
        return (state.theta if snap_all else state.theta[0]).detach().cpu().clone()

    return Phase(key=key, build=build, columns=columns, log_every=log_every,
                 measure=lambda flow, st, pot: measure(flow, st),
                 save_every=save_every or 0, snapshots=bool(save_every), snapshot=snapshot,
                 finish=(lambda flow, st, rec: finish(flow, st, rec.rows, rec.snaps)) if finish else None,
                 nonfinite_ok=(), extendable=False)


def write_outputs(ctx, arrays: dict, results: dict) -> list[dict]:
    """particles.npz (the runner's snapshot layout, then ``arrays``), results.json and
    metrics.csv (every job's rows); returns the rows."""
    io.write_npz(ctx.out / io.PARTICLES, {**snapshot_arrays(ctx.done), **arrays})
    io.atomic_write_bytes(ctx.out / RESULTS, (json.dumps(results, indent=2, default=_jsonable) + "\n").encode())
    rows = ctx.rows
    io.write_metrics(ctx.out / io.METRICS, rows)
    return rows


def _jsonable(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def read_results(run_dir) -> dict:
    """The ``results.json`` of a finished ResNet run directory, as a dict; ``ConfigError``
    when it is missing (the run has not finished)."""
    p = Path(run_dir) / RESULTS
    if not p.exists():
        raise ConfigError(f"{run_dir} has no {RESULTS} yet (the run has not finished)")
    return json.loads(p.read_text())


def snapshots_arrays(snaps, layer, param_names, extra: dict) -> dict:
    """particles.npz arrays from snapshots [(k, t, θ [N, P])]: t [K], theta [K, N, P],
    layer [N], param_names [P], plus ``extra``."""
    return {"t": np.array([t for _, t, _ in snaps]),
            "theta": torch.stack([th for _, _, th in snaps]).numpy(),
            "layer": np.asarray(layer, dtype=np.float64), "param_names": np.array(param_names), **extra}


def plt():
    """``matplotlib.pyplot``, imported on first use with a non-interactive backend (Agg)
    unless one is already set (``plotting.pyplot``)."""
    from ..plotting import pyplot

    return pyplot()
