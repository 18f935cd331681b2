"""The recorded run loop shared by the particle experiments.

``simulate`` advances a :class:`~meanfield.dynamics.ParticleDynamics` from a state, records
metrics rows and particle snapshots, writes checkpoints atomically and, at the end, the
run directory's metrics.csv, particles.npz and figures.  ``resume`` continues a run from
its checkpoint; the result is identical to an uninterrupted run because the checkpoint
holds everything the loop depends on (state and generator, rows, snapshots, the
evaluation generator).

With ``config.shards = P > 1`` the same loop runs on every rank of a process group over a
:class:`~meanfield.dynamics.sharded.ShardedDynamics` (spawning P local ranks first when
not launched, see ``meanfield.distributed``): rows, snapshots and checkpoints are taken
from the gathered whole system, so they have the unsharded format, and only rank 0 writes.
"""
from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .. import io
from ..diagnostics import velocity_sq_norm
from ..dynamics import ParticleDynamics, ParticleState
from ..dynamics.sharded import ShardedDynamics
from ..errors import DivergenceError
from ..interact import evaluate


def _measure_row(dyn: ParticleDynamics, state: ParticleState, pot, eval_gen, n_mc, risk_inf):
    """One metrics row at θ_k: risk (exact when the task allows, else Monte Carlo), the
    squared velocity norm of the population flow, and the empirical PL ratio."""
    task = dyn.task
    if isinstance(dyn, ShardedDynamics):      # this rank's particles, then the whole system
        if pot is None or dyn.drift != "population":
            pot = dyn.evaluate(state, n_mc=n_mc, generator=eval_gen)
        state, pot = dyn.gather(state, pot)
    elif pot is None or dyn.drift != "population":
        if task.has_population:
            pot = evaluate(task, state.theta, state.weights, backend=dyn.backend)
        else:
            pot = evaluate(task, state.theta, state.weights, n_mc=n_mc, generator=eval_gen)
    risk = pot.risk.double()
    row = {"step": state.step, "t": state.t, "risk": float(risk.mean())}
    if pot.risk_se is not None:
        row["risk_se"] = float((pot.risk_se.double() ** 2).mean().sqrt() / math.sqrt(len(risk)))
    if task.has_population:
        v = dyn.velocity(state, pot)
        v2 = velocity_sq_norm(v, state.weights).double()
        row["velocity_sq"] = float(v2.mean())
        if risk_inf is not None:
            row["pl_ratio"] = float((v2 / (risk - risk_inf)).mean())
    if len(risk) > 1:
        row.update({f"risk_r{r}": float(x) for r, x in enumerate(risk)})
    if not all(math.isfinite(v) for k, v in row.items() if isinstance(v, float) and k != "pl_ratio"):
        raise DivergenceError(f"step {state.step}: non-finite risk or velocity "
                              f"(risk={row['risk']:.3g}); the step size is likely too large")
    return row


def simulate(out_dir, *, experiment: str, config, dyn: ParticleDynamics, state: ParticleState,
             param_names, task_arrays: dict, progress: bool = True, checkpoint: dict | None = None,
             n_mc: int = 10_000, risk_inf: float | None = None, plot=None, extra_record=None,
             chunked: bool = False):
    """Run ``config.steps`` steps from ``state`` into the run directory ``out_dir``.

    ``checkpoint`` (a loaded checkpoint payload) continues an interrupted run.
    ``extra_record(state) -> dict`` adds columns to every metrics row (e.g. a PDE reference at
    the row's time).  ``chunked=True`` advances with ``dyn.run(state, n)`` between recording
    points (rows, snapshots, checkpoints) instead of step by step, so online SGD takes the
    compiled multi-step path; rows are then measured at θ_k afresh rather than from the step's
    own potential.  Returns the final state, the metrics rows and the seconds taken.
    """
    out = Path(out_dir)
    cfg = config
    # --- sharded runs (issue 9): join (or spawn) the ranks; rank 0 writes ----------------
    shards = getattr(cfg, "shards", 1)
    if shards > 1 and not isinstance(dyn, ShardedDynamics):
        from .. import distributed

        comm = distributed.group_comm(shards, cfg.shard_timeout)
        if comm is None:
            return distributed.spawn_simulate(simulate, shards, cfg.shard_timeout, dict(
                out_dir=out_dir, experiment=experiment, config=config, dyn=dyn, state=state,
                param_names=param_names, task_arrays=task_arrays, progress=progress,
                checkpoint=checkpoint, n_mc=n_mc, risk_inf=risk_inf, plot=plot,
                extra_record=extra_record, chunked=chunked))
        dyn = ShardedDynamics(dyn, comm)
    sharded = isinstance(dyn, ShardedDynamics)
    writer = not sharded or dyn.comm.rank == 0

    def full(s):
        return dyn.gather(s)[0] if sharded else s
    # --- end of the sharding hook -------------------------------------------------------
    if writer:
        io.remove_stale_temporaries(out)
    if checkpoint is None:
        rows: list[dict] = []
        snaps_t: list[float] = []
        snaps_k: list[int] = []
        snaps: list[torch.Tensor] = []
        eval_gen = torch.Generator().manual_seed(cfg.seed + 7919)
    else:
        state = ParticleState.from_state_dict(checkpoint["state"])
        # rows/snapshots at or after the checkpoint's step are the extras a finished run adds
        # for its final state; an extended run records that step again as a regular one.
        keep = [i for i, k in enumerate(checkpoint["snap_k"]) if k < state.step]
        rows = [r for r in checkpoint["rows"] if r["step"] < state.step]
        snaps_k = [checkpoint["snap_k"][i] for i in keep]
        snaps_t = [checkpoint["snap_t"][i] for i in keep]
        snaps = [checkpoint["snaps"][i] for i in keep]
        eval_gen = torch.Generator()
        eval_gen.set_state(checkpoint["eval_gen"])
    if sharded:
        state = dyn.scatter(state)

    def save_ckpt(finished=False):
        whole = full(state)                     # a collective: every rank takes part
        if not writer:
            return
        io.save_checkpoint(out / io.CHECKPOINT, {
            "experiment": experiment, "config": cfg.to_dict(), "state": whole.state_dict(),
            "rows": rows, "snap_t": snaps_t, "snap_k": snaps_k, "snaps": snaps, "eval_gen": eval_gen.get_state(),
            "finished": finished})
        io.write_metrics(out / io.METRICS, rows)

    bar = tqdm(total=cfg.steps, initial=state.step, desc=experiment,
               disable=None if progress and writer else True, dynamic_ncols=True, leave=False)
    started = time.perf_counter()
    try:
        def record(st, pot):
            row = _measure_row(dyn, st, pot, eval_gen, n_mc, risk_inf)
            if extra_record is not None:
                row.update(extra_record(full(st)))
            rows.append(row)
            bar.set_postfix(risk=f"{row['risk']:.4g}", refresh=False)

        while state.step < cfg.steps:
            k = state.step
            log = k % cfg.log_every == 0
            if k % cfg.save_every == 0:
                snaps_k.append(k)
                snaps_t.append(state.t)
                snaps.append(full(state).theta.detach().cpu().clone())
            if chunked:
                if log:
                    record(state, None)
                # up to the next row, snapshot, checkpoint or the end
                n = min(cfg.steps, *(k - k % e + e for e in
                                     (cfg.log_every, cfg.save_every, cfg.checkpoint_every))) - k
                state = dyn.run(state, n)
                bar.update(n)
            else:
                prev = state
                state, info = dyn.step(state)
                if log:
                    record(prev, info.potential)
                bar.update(1)
            if state.step % cfg.checkpoint_every == 0 and state.step < cfg.steps:
                save_ckpt()
        # the final state is always recorded and snapshotted
        if not rows or rows[-1]["step"] != state.step:
            record(state, None)
        if not snaps_k or snaps_k[-1] != state.step:
            snaps_k.append(state.step)
            snaps_t.append(state.t)
            snaps.append(full(state).theta.detach().cpu().clone())
    finally:
        bar.close()
    state = full(state)
    arrays = {"t": np.array(snaps_t), "theta": _stack(snaps), "param_names": np.array(param_names)}
    if state.weights is not None:
        w = state.weights.cpu().numpy()
        arrays["weights"] = w[0] if w.shape[0] == 1 else w     # [N], or [B, N] per replica
    arrays.update(task_arrays)
    if writer:
        io.write_npz(out / io.PARTICLES, arrays)
    save_ckpt(finished=True)
    if plot is not None and writer:
        plot(out)
    return state, rows, time.perf_counter() - started


def _stack(snaps):
    th = torch.stack(snaps).numpy()          # (K, B, N, D)
    return th[:, 0] if th.shape[1] == 1 else th
