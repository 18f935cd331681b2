"""The runner: one owner for the life of every run (docs/design.md §3).

    config → run directory (created, locked) → prelude → phases × steps (rows, snapshots,
    checkpoints) → results → final checkpoint → figures

An experiment only declares (``meanfield.experiments.plan``); this module runs it.  The
CLI, sweeps (``meanfield.sweep``) and sharded ranks (``meanfield.distributed``) all come here:

* :func:`run` starts a new run, :func:`resume` continues one, :func:`plot` redraws a run's
  figures, :func:`describe` says where a run stands.

**Promises** (each kept by a test in ``tests/test_run_refusals.py``, ``tests/test_runs.py``
and ``tests/test_run_interruptions.py``):

* *Lock.*  A run directory is locked (``io.DirectoryLock``) for the life of a run or resume;
  a second writer gets ``ConfigError`` naming the holder's pid and command.
* *Integrity.*  Checkpoints and npz files carry a checksum; a mismatch on resume, show or
  plot is ``ConfigError("... corrupted ...")`` and nothing is changed.
* *One resume rule.*  The keys that may change on resume are the Config's
  ``resume_mutable`` (for most particle experiments: steps — upwards only —, dt, the
  cadences, backend, shards); any other changed key is refused naming the key, and a refused
  command (for any reason) leaves every file of the run byte-identical: everything is checked
  before anything is written.
* *Sizes.*  The memory a config needs is estimated before anything is allocated or written
  (:func:`memory_needed`); more than the machine has is refused with the estimate.
* *Steps mean one thing.*  A checkpoint's ``progress`` counts phases done and steps done
  in the current phase (``meanfield.experiments.plan``).
* *Snapshots* of every phase go to particles.npz in one layout (:func:`snapshot_arrays`).
* *Figures* are drawn after the final checkpoint: a run killed while drawing is finished,
  and ``meanfield plot DIR`` completes its figures.

Divergence (a non-finite measured value or state) raises ``DivergenceError`` with the run
directory and the last checkpoint's progress attached (``.run_dir``, ``.checkpoint``), the
checkpoint itself untouched.  ``shards = P > 1`` runs every phase over P processes
(``distributed.spawn`` of :func:`_rank_main`, or the ranks of torchrun/srun); rank 0 writes.
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from pathlib import Path

import numpy as np
import torch

from . import io
from .errors import ConfigError, DivergenceError
from .experiments import figures_of, get_experiment
from .experiments import config as _config
from . import store
from .experiments.plan import PhaseRecord, RunContext, Snapshot, default_results

MAX_SNAPSHOT_BYTES_FRACTION = 0.5


@dataclasses.dataclass
class RunResult:
    """What :func:`run` and :func:`resume` return: the run directory, the summary rows the
    experiment's ``results`` returned (metrics rows for most), the wall seconds of this
    call, and the final state of the last phase (None on non-writing ranks)."""

    out: Path
    rows: list
    seconds: float
    state: object = None


# ---- the public entry points ---------------------------------------------------------------
def _experiment(experiment):
    return get_experiment(experiment) if isinstance(experiment, str) else experiment


def build_config(experiment, config_file=None, sets=(), base=None):
    """The experiment's Config from its defaults ← ``base`` ← TOML ← ``--set`` strings."""
    return _experiment(experiment).Config.build(config_file, list(sets), base=base)


def run(experiment, cfg, out, *, progress: bool = True) -> RunResult:
    """Run ``experiment`` (a name or module) with ``cfg`` into the new run directory ``out``.

    Checks, before anything is written: ``out`` (absent or empty, creatable, writable), the
    memory the config needs, sharding.  Then creates and locks ``out``, writes config.json
    and runs (module docstring).  ConfigError on bad input, DivergenceError when the run
    diverges (its last checkpoint kept)."""
    exp = _experiment(experiment)
    if cfg.shards > 1:
        from . import distributed

        comm = distributed.group_comm(cfg.shards, cfg.shard_timeout)
        if comm is not None:                       # a rank of torchrun/srun
            return _run_launched(exp, cfg, out, comm, progress)
    check_memory(cfg)
    out = io.check_new_out_dir(out)
    plan = exp.plan(cfg)
    io.make_dir(out)
    with io.DirectoryLock(out) as lock:
        lock.claim()
        io.write_json(out / io.CONFIG, io.run_record(exp.NAME, cfg.to_dict(), plan.record), strict=True)
        io.make_dir(out / io.FIGURES)
        return _execute_or_spawn(exp, cfg, plan, out, None, progress)


def resume(run_dir, sets=(), *, progress: bool = True) -> RunResult:
    """Continue the run in ``run_dir`` from its last checkpoint (from step 0 when it stopped
    before its first), with the ``--set`` overrides ``sets`` allowed by the resume rule.

    Everything is checked before anything is written (lock, config.json, checkpoint and npz
    checksums, the resume rule, the memory estimate); a refused resume changes no file."""
    run_dir = Path(run_dir)
    io.load_run_config(run_dir)                    # a clear error before trying to lock
    with io.DirectoryLock(run_dir) as lock:
        exp, cfg, ck = check_resume(run_dir, sets)
        plan = exp.plan(cfg)
        check_record(run_dir, plan)
        lock.claim()
        rec = io.load_run_config(run_dir)
        if rec["config"] != cfg.to_dict():
            rec["config"] = cfg.to_dict()
            io.write_json(run_dir / io.CONFIG, rec, strict=True)
        io.make_dir(run_dir / io.FIGURES)
        return _execute_or_spawn(exp, cfg, plan, run_dir, ck, progress)


def check_resume(run_dir, sets=()):
    """(experiment module, new config, checkpoint or None) for resuming ``run_dir`` with
    ``sets``, or ConfigError: a corrupted or inconsistent run directory, a key that may not
    change (``Config.resume_mutable``), steps lowered or below the checkpoint, a finished
    run with nothing to extend, a config that cannot fit in memory.  Reads only."""
    run_dir = Path(run_dir)
    exp, saved, ck = load_run(run_dir)
    cfg = exp.Config.build(None, list(sets), base=saved.to_dict())
    old, new = saved.to_dict(), cfg.to_dict()
    changed = [k for k in new if new[k] != old.get(k)]
    mutable = set(cfg.resume_mutable)
    for k in changed:
        if k not in mutable:
            allowed = ", ".join(cfg.resume_mutable) or "none"
            raise ConfigError(f"{k} cannot change on resume (the run has {k}={old.get(k)!r}); "
                              f"keys that may change on resume for {exp.NAME}: {allowed}")
    prog = progress_of(ck)
    if cfg.steps < saved.steps:
        raise ConfigError(f"steps can only grow on resume (the run has steps={saved.steps}"
                          + (f" and is at step {prog['step']} of phase {prog['phase']!r}"
                             if prog and prog.get("phase") is not None else "") + f"), got {cfg.steps}")
    if ck is not None and ck.get("finished") and cfg.steps == saved.steps:
        raise ConfigError(f"{run_dir} is already finished ({describe_progress(prog)}); raise steps "
                          f"with --set steps=... to continue it, or redraw its figures with "
                          f"`meanfield plot {run_dir}`")
    fig_dir = run_dir / io.FIGURES
    if fig_dir.exists() and not fig_dir.is_dir():
        raise ConfigError(f"{fig_dir} is a file, not a directory: move it away to continue the run")
    check_memory(cfg)
    return exp, cfg, ck


def check_record(run_dir, plan) -> None:
    """ConfigError when what the experiment records about its inputs (config.json's entries
    beside "config": the task, the data's checksum, the model …) differs from what the plan
    built now says: the inputs changed since the run started (a data file edited, say)."""
    import json

    rec = io.load_run_config(run_dir)
    now = json.loads(json.dumps(io._finite_json(plan.record), default=io._json_default))
    for key, value in now.items():
        if key in rec and rec[key] != value:
            raise ConfigError(f"{run_dir}: its {key!r} changed since the run started (config.json "
                              f"records another one; an input file edited?); start a new run")


def read_checkpoint(run_dir) -> dict | None:
    """The checkpoint of ``run_dir`` (None without one), its checksum verified and its format
    one this version reads; ConfigError otherwise."""
    ck_path = Path(run_dir) / io.CHECKPOINT
    if not (ck_path.exists() or ck_path.is_symlink()):
        return None
    ck = io.load_checkpoint(ck_path)
    if ck.get("format") not in store.READABLE or "progress" not in ck:
        raise ConfigError(f"checkpoint {ck_path} is corrupted or from another meanfield version "
                          f"(format {ck.get('format')!r}, this version reads "
                          f"{' and '.join(map(str, store.READABLE))})")
    return ck


def load_run(run_dir):
    """(experiment module, saved config, checkpoint or None) of a run directory, every file
    verified: config.json parses into the experiment's Config, the checkpoint's checksum and
    its experiment and config agree with config.json, every npz matches its checksum."""
    run_dir = Path(run_dir)
    rec = io.load_run_config(run_dir)
    exp = get_experiment(rec["experiment"])
    ck = read_checkpoint(run_dir)
    try:
        saved = exp.Config.from_mapping(rec["config"], source=str(run_dir / io.CONFIG))
    except ConfigError as e:
        if ck is not None and ck.get("format") == 2:
            raise ConfigError(f"{e} (this run was made by an older meanfield, whose {exp.NAME} "
                              "config this version no longer reads)") from None
        if ck is None and "config key" not in str(e):      # a value this version refuses
            raise ConfigError(f"{run_dir / io.CONFIG}: {e}; the run never reached a checkpoint: "
                              f"remove {run_dir} and run it again") from None
        raise
    if ck is not None:
        if ck.get("experiment") != rec["experiment"]:
            raise ConfigError(f"{run_dir / io.CONFIG} says {rec['experiment']!r} but its checkpoint "
                              f"holds a {ck.get('experiment')!r} run (config.json edited?)")
        # both read through today's Config: keys added since the run started take their
        # defaults on both sides (a run made before a key existed still reads)
        try:
            held = exp.Config.from_mapping(ck.get("config") or {}, source="its checkpoint").to_dict()
        except ConfigError:
            held = ck.get("config") or {}
        if held != saved.to_dict():
            diff = sorted(k for k in saved.to_dict() if held.get(k) != saved.to_dict()[k])
            raise ConfigError(f"{run_dir / io.CONFIG} does not match its checkpoint ("
                              + (f"{diff[0]}: {saved.to_dict()[diff[0]]!r} vs {held.get(diff[0])!r}"
                                 if diff else "keys differ") + "; config.json edited?)")
    for p in sorted(run_dir.glob("*.npz")):
        io.verify_npz(p)
    store.load(run_dir, ck)                        # every record's checksum
    return exp, saved, ck


def _execute_or_spawn(exp, cfg, plan, out, ck, progress):
    if cfg.shards > 1:
        from . import distributed

        started = time.perf_counter()
        io.remove_stale_temporaries(out)
        rows, state = distributed.spawn(_rank_main, cfg.shards, _reference(exp), cfg.to_dict(), str(out),
                                        ck is not None or (out / io.CHECKPOINT).exists(), progress,
                                        timeout=cfg.shard_timeout)
        return RunResult(out, rows, time.perf_counter() - started, state)
    return execute(exp, cfg, plan, out, ck, progress=progress)


def _reference(exp):
    """What identifies an experiment in another process: a module by its import name, any
    other experiment object (a user's class with NAME, Config, plan) as itself (pickled)."""
    import types

    return ("module", exp.__name__) if isinstance(exp, types.ModuleType) else exp


def _rank_main(comm, ref, cfg_dict, out, resuming, progress):
    """One rank of a spawned sharded run: rebuild the experiment's plan from the config and
    run the phases with ``comm``; rank 0 writes (the spawning process holds the lock) and
    returns (summary rows, final state)."""
    import importlib

    exp = importlib.import_module(ref[1]) if isinstance(ref, tuple) else ref
    cfg = exp.Config.from_mapping(cfg_dict)
    ck = None
    if resuming and (Path(out) / io.CHECKPOINT).exists():
        ck = io.load_checkpoint(Path(out) / io.CHECKPOINT)
    res = execute(exp, cfg, exp.plan(cfg), Path(out), ck, progress=progress and comm.rank == 0, comm=comm)
    return (res.rows, res.state) if comm.rank == 0 else None


def _run_launched(exp, cfg, out, comm, progress):
    """``run`` on a rank of a launched group: rank 0 checks, creates and locks ``out``; the
    others wait for its verdict, then every rank runs."""
    out = Path(out)
    check_memory(cfg)
    plan = exp.plan(cfg)
    err, lock = None, None
    if comm.rank == 0:
        try:
            io.check_new_out_dir(out)
            io.make_dir(out)
            lock = io.DirectoryLock(out).acquire()
            lock.claim()
            io.write_json(out / io.CONFIG, io.run_record(exp.NAME, cfg.to_dict(), plan.record), strict=True)
            io.make_dir(out / io.FIGURES)
        except ConfigError as e:
            err = str(e)
    err = comm.broadcast_object(err, what="the run directory check")
    if err:
        raise ConfigError(err)
    try:
        return execute(exp, cfg, plan, out, None, progress=progress and comm.rank == 0, comm=comm)
    finally:
        if lock is not None:
            lock.release()


def plot(run_dir, coords=None) -> list[Path]:
    """Redraw the figures of ``run_dir`` from its files (the experiment's ``FIGURES``),
    after checking its files (:func:`load_run`); also completes a run
    whose figures were interrupted.  ConfigError when the files are missing or corrupted."""
    run_dir = Path(run_dir)
    exp, _, _ = load_run(run_dir)
    if not (run_dir / io.METRICS).exists():
        raise ConfigError(f"{run_dir} has no {io.METRICS} yet")
    fig_dir = run_dir / io.FIGURES
    if fig_dir.exists() and not fig_dir.is_dir():
        raise ConfigError(f"{fig_dir} is a file, not a directory: move it away to draw figures")
    io.make_dir(fig_dir)
    return draw(exp, run_dir, coords)


def draw(exp, run_dir, coords=None) -> list[Path]:
    """The experiment's figures for ``run_dir`` (its ``FIGURES``); files that do not hold what
    the figures need (edited, from another version) are a ConfigError naming the run
    directory."""
    fn = figures_of(exp)
    try:
        return fn(run_dir, coords)
    except ConfigError:
        raise
    except (KeyError, ValueError, IndexError, TypeError, OSError, EOFError) as e:
        raise ConfigError(f"cannot draw the figures of {run_dir}: its files do not hold what they "
                          f"should ({type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''})") from None


def status(run_dir, steps: int | None = None) -> str:
    """Where the run in ``run_dir`` stands, for sweeps and scripts: "absent" (no run there:
    no directory, or one without config.json), "finished" (its last checkpoint says so and,
    when ``steps`` is given, it ran at least that many steps) or "resumable" (anything else:
    ``resume`` continues it).  Every file is verified first (:func:`load_run`): a corrupted
    run is a ConfigError, not a status."""
    run_dir = Path(run_dir)
    if not (run_dir / io.CONFIG).exists():
        return "absent"
    _, _, ck = load_run(run_dir)
    prog = progress_of(ck)
    if ck is not None and ck.get("finished") and (steps is None or prog["steps"] >= steps):
        return "finished"
    return "resumable"


def load_records(run_dir):
    """(progress, {key: PhaseRecord} of the finished phases, the current phase's PhaseRecord
    or None) of a run directory, every file verified: what its checkpoint and records hold
    (rows and snapshots are absent from a finished run that cannot be extended: they live in
    its result files).  Needs no registered experiment: a user's own experiment object's runs
    read the same."""
    ck = read_checkpoint(run_dir)
    loaded = store.load(Path(run_dir), ck)
    return progress_of(ck), loaded.done, loaded.current


def progress_of(ck) -> dict | None:
    """The ``progress`` record of a checkpoint (None without one)."""
    return None if ck is None else ck.get("progress")


def describe_progress(prog) -> str:
    """One line: "phase 2 of 4 (N=58): step 1000 of 2000", or "finished: 4 phases of 2000
    steps", or "not started"."""
    if not prog:
        return "not started (no checkpoint yet)"
    P, j = prog["phases"], prog["phases_done"]
    if prog.get("finished"):
        return f"finished: {P} phase{'s' if P != 1 else ''} of {prog['steps']} steps"
    if prog.get("phase") is None:
        return f"{j} of {P} phases done" if P else "prelude done"
    return (f"phase {j + 1} of {P} ({prog['phase']}): step {prog['step']} of {prog['steps']}")


def describe(run_dir) -> str:
    """What ``meanfield show`` prints: config.json, the last metrics row, and where the
    checkpoint stands (:func:`describe_progress`), after checking every file."""
    import json

    run_dir = Path(run_dir)
    _, _, ck = load_run(run_dir)
    lines = [json.dumps(io.load_run_config(run_dir), indent=2)]
    mpath = run_dir / io.METRICS
    rows = io.read_metrics(mpath) if mpath.exists() else {}
    if rows:
        last = {k: v[-1] for k, v in rows.items()}
        lines.append("last metrics: " + ", ".join(
            f"{k}={int(v) if k == 'step' and np.isfinite(v) else format(v, '.6g')}" for k, v in last.items()))
    else:
        lines.append("last metrics: none yet")
    lines.append("checkpoint: " + describe_progress(progress_of(ck)))
    return "\n".join(lines)


# ---- memory: the Sizes promise, kept beside the configs it reads (experiments/config.py) ------
machine_memory, memory_needed, check_memory = (_config.machine_memory, _config.memory_needed,
                                               _config.check_memory)


# ---- the loop ------------------------------------------------------------------------------
def execute(exp, cfg, plan, out, ck=None, *, progress: bool = True, comm=None) -> RunResult:
    """Run ``plan``'s phases into the locked run directory ``out`` from checkpoint ``ck``
    (None: from the start): the one loop of the code base (module docstring).  What persists
    between commits, and how, is ``meanfield.store``'s."""
    from .progress import progress_bar

    out = Path(out)
    writer = comm is None or comm.rank == 0
    started = time.perf_counter()
    loaded = store.load(out, ck)
    runstore = store.RunStore(out, {"experiment": exp.NAME, "config": cfg.to_dict()}, loaded) if writer else None
    if writer:
        io.remove_stale_temporaries(out)
        runstore.remove_uncommitted()
    shared, done, current = loaded.shared, dict(loaded.done), loaded.current
    threads = contextlib.nullcontext() if not plan.threads else _threads(plan.threads)
    last = {"progress": progress_of(ck)}

    def save(cur=None, finished=False, phases=None, steps_in_phase=0, key=None, steps=None):
        prog = {"phases_done": len(done), "phases": phases if phases is not None else len(done),
                "phase": key, "step": steps_in_phase, "steps": cfg.steps if steps is None else steps,
                "finished": finished}
        if writer:
            # a finished run that cannot be extended needs no records to resume: its rows and
            # snapshots are in its result files (keeps the run directory at one copy of them)
            runstore.commit(shared=shared, done=done, current=cur, progress=prog, finished=finished,
                            drop_records=finished and "steps" not in cfg.resume_mutable)
        last["progress"] = prog

    try:
        with threads:
            if shared is None:
                shared = plan.prelude() if plan.prelude is not None else {}
                if plan.prelude is not None:
                    save()
            phases = list(plan.phases(shared))
            keys = [ph.key for ph in phases]
            if len(set(keys)) != len(keys):
                raise ValueError(f"{exp.NAME}: phase keys must be unique, got {keys}")  # pragma: no cover
            total = sum(ph.steps or cfg.steps for ph in phases)
            bar = progress_bar(total=total, desc=exp.NAME, disable=None if (progress and writer) else True,
                       dynamic_ncols=True, leave=False)
            state = None
            try:
                for ph in phases:
                    rec = done.get(ph.key)
                    steps = ph.steps or cfg.steps
                    resume_from = None
                    if current is not None and current.key == ph.key:
                        resume_from, current = current, None
                    elif rec is not None:
                        if rec.state is None or rec.state["step"] >= steps or not ph.extendable:
                            bar.update(steps)
                            continue
                        resume_from = rec
                        del done[ph.key]
                    state = _run_phase(ph, cfg, steps, resume_from, bar, comm, done, len(phases),
                                       save, runstore)
            finally:
                bar.close()
            ordered = {ph.key: done[ph.key] for ph in phases}     # extended phases re-inserted
            done.clear()
            done.update(ordered)
            if writer:
                ctx = RunContext(out=out, cfg=cfg, shared=shared, done=done)
                summary = (plan.results or default_results(plan))(ctx)
            else:
                summary = None
            longest = max((ph.steps or cfg.steps for ph in phases), default=cfg.steps)
            save(finished=True, phases=len(phases), steps_in_phase=longest, key=None, steps=longest)
    except DivergenceError as e:
        e.run_dir = out
        e.checkpoint = last["progress"] if (out / io.CHECKPOINT).exists() else None
        raise
    if writer:
        draw(exp, out)
    return RunResult(out, summary or [], time.perf_counter() - started, state)


def _run_phase(ph, cfg, steps, resume_from, bar, comm, done, n_phases, save, runstore):
    log_every = ph.log_every or cfg.log_every
    ckpt_every = ph.checkpoint_every or cfg.checkpoint_every
    save_every = cfg.save_every if ph.save_every is None else ph.save_every
    if not ph.snapshots:
        snap_set, save_every = frozenset(), 0
    elif ph.snapshot_steps is not None:
        snap_set, save_every = frozenset(int(k) for k in ph.snapshot_steps), 0
    else:
        snap_set = None

    def snap_at(k):
        return (k in snap_set) if snap_set is not None else (save_every > 0 and k % save_every == 0)

    dyn, state = ph.build()
    rec = PhaseRecord(key=ph.key, columns=dict(ph.columns))
    if resume_from is not None:
        state = type(state).from_state_dict(resume_from.state)
        k0 = state.step
        rec.rows = [r for r in resume_from.rows if r["step"] < k0]
        rec.snaps = [s for s in resume_from.snaps if s.step < k0]
        for name, g in ph.generators.items():
            if name in resume_from.generators:
                g.set_state(resume_from.generators[name])
        if runstore is not None:
            runstore.rebase(rec)
    if comm is not None:
        from .dynamics.sharded import ShardedDynamics

        dyn = ShardedDynamics(dyn, comm)
        state = dyn.scatter(state)

        def whole(s):
            return dyn.gather(s)[0]
    else:
        def whole(s):
            return s
    take = ph.snapshot or (lambda s: s.theta.detach().cpu().clone())
    bar.update(state.step)
    bar.set_postfix_str(ph.key, refresh=False)

    def record(st, pot, last=False):
        if last and ph.measure_last is not None:
            measured = ph.measure_last(dyn, st)
        else:
            measured = ph.measure(dyn, st, pot)
        _check_finite(measured, ph, st.step)
        rec.rows.append({**ph.columns, "step": st.step, "t": st.t, **measured})

    def current():
        rec.state = whole(state).state_dict()
        rec.generators = {n: g.get_state() for n, g in ph.generators.items()}
        return rec

    while state.step < steps:
        k = state.step
        if snap_at(k):
            rec.snaps.append(Snapshot(k, state.t, take(whole(state))))
        if ph.chunked:
            if k % log_every == 0:
                record(state, None)
            stops = [steps, k - k % log_every + log_every, k - k % ckpt_every + ckpt_every]
            if snap_set is not None:
                stops.append(min((s for s in snap_set if s > k), default=steps))
            elif save_every > 0:
                stops.append(k - k % save_every + save_every)
            n = min(stops) - k
            state = dyn.run(state, n)
            bar.update(n)
        else:
            prev = state
            state, info = dyn.step(state)
            if k % log_every == 0:
                record(prev, getattr(info, "potential", None))
            bar.update(1)
        if state.step % ckpt_every == 0 and state.step < steps:
            save(current(), phases=n_phases, steps_in_phase=state.step, key=ph.key, steps=steps)
    if not rec.rows or rec.rows[-1]["step"] != state.step:
        record(state, None, last=True)
    final = whole(state)
    if ph.snapshots and (not rec.snaps or rec.snaps[-1].step != state.step):
        rec.snaps.append(Snapshot(state.step, state.t, take(final)))
    rec.result = ph.finish(dyn, final, rec) if ph.finish else {}
    rec.state = final.state_dict() if ph.extendable else None
    rec.generators = {n: g.get_state() for n, g in ph.generators.items()}
    done[ph.key] = rec
    save(phases=n_phases, steps_in_phase=state.step, key=None, steps=steps)
    return final


def _check_finite(row, ph, step):
    for k, v in row.items():
        if any(k.startswith(p) for p in ph.nonfinite_ok):
            continue
        if isinstance(v, (float, np.floating)):
            bad = not math.isfinite(v)
        elif isinstance(v, np.ndarray) and v.dtype.kind == "f":
            bad = not np.isfinite(v).all()
        elif isinstance(v, torch.Tensor) and v.is_floating_point():
            bad = not bool(torch.isfinite(v).all())
        else:
            continue
        if bad:
            where = f"{ph.key}, step {step}" if ph.key != "main" else f"step {step}"
            raise DivergenceError(f"{where}: non-finite {k}; the step size is likely too large")


@contextlib.contextmanager
def _threads(n: int):
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)
