"""What an experiment's plan declares, and what ``meanfield.runner`` does with it (docs/design.md §3).

An experiment (``meanfield.experiments``) holds ``NAME``, its ``Config``, ``plan(cfg) ->``
:class:`Plan` (*what* the run consists of, never *how* it is run; cheap: heavy work goes in
the phases' ``build`` or the prelude, after the runner's checks) and its declared facts
(``FIGURES``, ``VIEWS``, ``TINY``).  The runner owns everything else — the run directory and
its lock, the loop over phases and steps, logging cadence, snapshots, checkpoints, resume,
divergence, sharding, figures.

**Phases.**  A run is a sequence of phases (one for a single simulation; one per N value,
per training job, per temperature …), each a :class:`Phase`: how to build its dynamics and
initial state, what to measure on a recorded step, what to keep when it ends.  Phases run
one after another in the order given; every phase advances ``steps`` steps of its dynamics
(``dynamics.step(state) -> (state, info)``; ``dynamics.run(state, n)`` in ``chunked`` mode).

**Steps, rows, snapshots.**  At step k (before moving), the runner records a metrics row
when k is a multiple of ``log_every`` and a snapshot when k is in the phase's snapshot set
(multiples of ``save_every``, or ``snapshot_steps``); the final state of a phase is always
recorded and, when the phase takes snapshots at all, snapshotted.  A row is
``{**columns, "step": k, "t": t_k, **measure(dynamics, state_k, potential)}`` where
``potential`` is what the step from θ_k computed (``info.potential``; None in chunked mode
and on the final row: measure it afresh).

**Checkpoints.**  Every ``checkpoint_every`` steps inside a phase, after each phase, after
the prelude and at the end, the runner commits: the rows and snapshots recorded since the
last commit are appended to the phase's records, then one checkpoint of constant size is
written (the phases' states, measurement generators and progress; ``meanfield.store``).
Its ``progress`` says where the run stands in one vocabulary for every experiment:
``{"phases_done": j, "phases": P, "phase": key, "step": k, "steps": S, "finished": bool}``
with k the steps done *in the current phase* (a phase = one N, one job, one run …).

**The end.**  ``results(ctx)`` writes the experiment's result files from the finished
phases (metrics.csv and particles.npz have defaults, :class:`RunContext`), then the runner
writes the final checkpoint and only then draws the experiment's figures: figures
are never needed to resume, and ``meanfield plot`` redraws them from the files alone.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Collection, Iterable, NamedTuple

import numpy as np
import torch

from .. import io


@dataclass
class Phase:
    """One phase of a run (module docstring).

    key : unique name within the run ("main", "N=100", "neg/L=2/M=32"), as in checkpoints.
    build : () -> (dynamics, initial state); deterministic (seeded from the config).
    measure : (dynamics, state, potential or None) -> {column: value} of a metrics row at
        θ_k; values are floats, or numpy arrays of per-replica values.
    columns : entries put first in each of the phase's rows (e.g. {"N": 100}).
    steps, log_every, save_every, checkpoint_every : default to the config's; ``save_every``
        0 (or None) takes no periodic snapshot.
    snapshot_steps : explicit snapshot steps (replace the multiples of ``save_every``).
    snapshots : whether the phase takes snapshots at all (the final one included).
    snapshot : state -> what a snapshot keeps (default: a CPU copy of θ [B, N, D]).
    measure_last : (dynamics, state) -> row entries of the final row (default ``measure``
        with potential None), e.g. a float64 re-evaluation.
    chunked : advance with ``dynamics.run(state, n)`` between recording points (compiled
        multi-step paths) instead of step by step.
    generators : named torch.Generators used by ``measure`` (e.g. Monte Carlo risks); their
        states are checkpointed with the phase so that a resumed run draws the same samples.
    finish : (dynamics, final state, record) -> dict kept for ``results`` (picklable);
        ``record`` is the phase's :class:`PhaseRecord` (rows and snapshots so far).
    nonfinite_ok : prefixes of row columns that may be NaN or ±inf (any other non-finite
        value stops the run with a DivergenceError naming the column and the step).
    extendable : the final state is kept so that a larger ``steps`` continues this phase.
    """

    key: str
    build: Callable[[], tuple[Any, Any]]
    measure: Callable[[Any, Any, Any], dict]
    columns: dict = field(default_factory=dict)
    steps: int | None = None
    log_every: int | None = None
    save_every: int | None = None
    checkpoint_every: int | None = None
    snapshot_steps: Collection[int] | None = None
    snapshots: bool = True
    snapshot: Callable[[Any], Any] | None = None
    measure_last: Callable[[Any, Any], dict] | None = None
    chunked: bool = False
    generators: dict = field(default_factory=dict)
    finish: Callable[[Any, Any, dict], dict] | None = None
    nonfinite_ok: tuple = ("pl_ratio",)
    extendable: bool = True


class Snapshot(NamedTuple):
    """One snapshot of a phase: the step k, the time t_k and what the phase's ``snapshot``
    kept (by default a CPU copy of θ [B, N, D])."""

    step: int
    t: float
    value: Any


@dataclass
class PhaseRecord:
    """What one phase has recorded (the typed contract between the runner and an
    experiment's ``finish`` and ``results``).

    key : the phase's key; columns : its :attr:`Phase.columns`.
    rows : the metrics rows, in step order (dicts: ``{**columns, "step", "t", **measured}``).
    snaps : the snapshots, in step order (:class:`Snapshot`).
    state : the final state dict (``state.state_dict()``) of a finished extendable phase,
        else None.
    generators : {name: generator state} of the phase's measurement generators.
    result : what the phase's ``finish`` returned ({} before it finished).
    """

    key: str
    columns: dict = field(default_factory=dict)
    rows: list = field(default_factory=list)
    snaps: list = field(default_factory=list)
    state: dict | None = None
    generators: dict = field(default_factory=dict)
    result: dict = field(default_factory=dict)

    def snapshot_map(self) -> dict:
        """{step: snapshot value} of :attr:`snaps`."""
        return {s.step: s.value for s in self.snaps}


@dataclass
class RunContext:
    """What ``Plan.results`` receives: the run directory ``out``, the config, the prelude's
    output ``shared``, and ``done``: {phase key: :class:`PhaseRecord`} in phase order."""

    out: Path
    cfg: Any
    shared: dict
    done: dict

    @property
    def rows(self) -> list[dict]:
        """Every phase's metrics rows, in phase order."""
        return [r for rec in self.done.values() for r in rec.rows]


@dataclass
class Plan:
    """Everything the runner needs from an experiment for one config.

    record : extra entries of config.json (the task, the N grid …).
    phases : (shared) -> iterable of :class:`Phase` (``shared`` is the prelude's output).
    prelude : () -> dict computed once before the phases (a PDE solution …), checkpointed.
    results : (RunContext) -> summary rows; writes the result files.  Default
        (:func:`meanfield.runner.default_results`): metrics.csv of every row and
        particles.npz of the snapshots with ``arrays``.
    arrays : extra particles.npz arrays for the default results (param_names, task arrays).
    primary : the phase whose snapshots are particles.npz's ``t``/``step``/``theta``
        (default: the only phase; others get ``phase<j>_t`` …, see ``meanfield.runner``).
    threads : torch intra-op threads during the run (0: leave torch's setting).  Small systems
        run faster on one thread on a shared machine: the OpenMP team's synchronisation
        costs more than the work (measured on 2 cores: cb-relu2d's step 3.7 ms on 1 thread
        against 53 ms on 2 at load 8; a ResNet step with L = 128, M = 512 0.55 s against 28 s).
    """

    phases: Callable[[dict], Iterable[Phase]]
    record: dict = field(default_factory=dict)
    prelude: Callable[[], dict] | None = None
    results: Callable[[RunContext], list] | None = None
    arrays: dict = field(default_factory=dict)
    primary: str | None = None
    threads: int = 0


# ---- the standard result files: metrics.csv and the snapshot layout ------------------------
def snapshot_arrays(done: dict, primary: str | None = None) -> dict:
    """particles.npz's snapshot arrays, one layout for every experiment.  The primary phase
    (``primary``, or the only phase that took snapshots) gives ``t`` [K], ``step`` [K] and
    ``theta`` [K, …] (the snapshot arrays as taken: θ [N, D], or [B, N, D] with replicas —
    a leading replica axis of size 1 is dropped); every other phase j with snapshots gives
    ``phase<j>_t``, ``phase<j>_step``, ``phase<j>_theta``; ``phase_keys`` [P] names the
    phases (j indexes it) and ``primary_phase`` the primary one.  A single-phase run keeps
    only ``t``, ``step``, ``theta`` (docs/design.md §3).  :func:`meanfield.io.read_snapshots`
    reads them back."""
    keys = list(done)
    with_snaps = [k for k in keys if done[k].snaps]
    if primary is None and len(with_snaps) == 1:
        primary = with_snaps[0]
    arrays = {"phase_keys": np.array(keys)}
    if primary is not None:
        arrays["primary_phase"] = np.array(primary)
    for j, k in enumerate(keys):
        snaps = done[k].snaps
        if not snaps:
            continue
        th = np.stack([_np(s.value) for s in snaps])
        if th.ndim == 4 and th.shape[1] == 1:
            th = th[:, 0]
        names = ("t", "step", "theta") if k == primary else (f"phase{j}_t", f"phase{j}_step", f"phase{j}_theta")
        arrays[names[0]] = np.array([s.t for s in snaps], dtype=np.float64)
        arrays[names[1]] = np.array([s.step for s in snaps], dtype=np.int64)
        arrays[names[2]] = th
    return arrays


def _np(x):
    return x.numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def default_results(plan):
    """The results of an experiment that declares none: metrics.csv of every row (arrays
    as their means) and particles.npz of the snapshot layout plus ``plan.arrays`` and the
    final weights of the primary phase when they are not uniform."""
    def results(ctx: RunContext):
        rows = [flat_row(r) for r in ctx.rows]
        io.write_metrics(ctx.out / io.METRICS, rows)
        arrays = snapshot_arrays(ctx.done, plan.primary)
        keys = list(ctx.done)
        primary = plan.primary or (keys[0] if len(keys) == 1 else None)
        if primary is not None:
            st = ctx.done[primary].state
            if st is not None and st.get("weights") is not None:
                w = st["weights"].cpu().numpy()
                arrays["weights"] = w[0] if w.shape[0] == 1 else w
        arrays.update(plan.arrays)
        if len(keys) == 1:
            arrays.pop("phase_keys")
            arrays.pop("primary_phase", None)
        io.write_npz(ctx.out / io.PARTICLES, arrays)
        return rows
    return results


def flat_row(row: dict) -> dict:
    """A metrics row with arrays replaced by their means (the interim metrics.csv)."""
    out = {}
    for k, v in row.items():
        if isinstance(v, np.ndarray):
            out[k] = float(v.mean()) if v.size else math.nan
        elif isinstance(v, torch.Tensor):
            out[k] = float(v.double().mean())
        else:
            out[k] = v
    return out
