"""Shared pieces of the ResNet experiments: the phase of one training job and their result files.

A ResNet experiment is a sequence of named training jobs (phases run by
``meanfield.runner`` into one run directory, docs/design.md §3).  Each job trains a
:class:`~meanfield.dynamics.ConditionalOTFlow` (or any object with ``step`` and a state
with ``step``/``t``/``theta``/``state_dict``) for the config's ``steps`` and keeps a small
picklable result; the runner checkpoints finished jobs and the job in progress, so
``meanfield resume DIR`` continues bit for bit: finished jobs are not rerun, the
interrupted one continues from its last checkpoint, and every job is a deterministic
function of its seeds.  :func:`write_outputs` writes particles.npz, results.json
(``analysis.results.RESULTS``, read back by ``analysis.results.read_results``) and
metrics.csv; :func:`snapshots_arrays` lays out the snapshots of one job.
"""
from __future__ import annotations

import json

import numpy as np
import torch

from .. import io
from ..analysis.results import RESULTS
from .plan import Phase, snapshot_arrays


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


def snapshots_arrays(snaps, layer, param_names, extra: dict) -> dict:
    """particles.npz arrays from snapshots [(k, t, θ [N, P])]: t [K], theta [K, N, P],
    layer [N], param_names [P], plus ``extra``."""
    return {"t": np.array([t for _, t, _ in snaps]),
            "theta": torch.stack([th for _, _, th in snaps]).numpy(),
            "layer": np.asarray(layer, dtype=np.float64), "param_names": np.array(param_names), **extra}
