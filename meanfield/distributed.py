"""Launching one simulation over P processes (the sharded step is ``dynamics.sharded``).

Three ways to run ``shards = P`` ranks, all giving the run directory of an unsharded run
(rank 0 writes it; every rank computes):

* **Nothing to do** — ``meanfield run EXPERIMENT --set shards=P --out DIR`` (or
  ``meanfield.runner.run(...)`` with ``cfg.shards = P``) in an ordinary process spawns P
  local ranks itself (:func:`spawn` of a callable the runner gives): gloo on CPU, or NCCL
  when there are ≥ P GPUs.  This module never imports experiments.
* **torchrun** — ``torchrun --standalone --nproc-per-node P -m meanfield run EXPERIMENT
  --set shards=P --out DIR`` (multi-node: ``--nnodes``, ``--rdzv-endpoint``); each rank runs
  the CLI, which joins the group from torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK,
  MASTER_ADDR, MASTER_PORT).  From Python, ``meanfield.runner.run`` on every rank (rank 0
  creates the run directory).
* **Slurm** — ``srun --ntasks P --kill-on-bad-exit=1 python -m meanfield run ...`` with
  ``MASTER_ADDR`` (the first node, e.g. ``$(scontrol show hostnames $SLURM_JOB_NODELIST |
  head -n1)``) and ``MASTER_PORT`` exported; rank and size come from SLURM_PROCID,
  SLURM_NTASKS, SLURM_LOCALID.

The process-group backend is NCCL when CUDA is available with at least as many GPUs as
local ranks (rank r then uses ``cuda:LOCAL_RANK``), else gloo on CPU.  Collectives time out
after ``shard_timeout`` seconds (a config key, default 600 — longer than any step), so a
dead or hung rank stops the run with :class:`ShardError`; checkpoints are written
atomically by rank 0, so the last one stays intact and ``meanfield resume DIR`` continues
(with any number of shards: checkpoints hold the whole system).

Threads: each CPU rank uses ``MEANFIELD_THREADS_PER_RANK`` threads if set, else
``SLURM_CPUS_PER_TASK``, else (cores available) // (local ranks), at least 1 — with 2 ranks
on 2 cores, one thread each (the native pair loop uses ``torch.get_num_threads()``).
"""
from __future__ import annotations

import datetime
import os
import pickle
import shutil
import tempfile

import torch

from .dynamics.sharded import Comm
from .errors import ConfigError, DivergenceError, ShardError


# ---------------------------------------------------------------------------------------
# environment
# ---------------------------------------------------------------------------------------

def launcher_env() -> dict | None:
    """{rank, world_size, local_rank, local_world_size} from torchrun (RANK, WORLD_SIZE …) or
    srun (SLURM_PROCID, SLURM_NTASKS …); None in an ordinary process."""
    e = os.environ
    if "RANK" in e and "WORLD_SIZE" in e:
        ws = int(e["WORLD_SIZE"])
        return {"rank": int(e["RANK"]), "world_size": ws, "local_rank": int(e.get("LOCAL_RANK", 0)),
                "local_world_size": int(e.get("LOCAL_WORLD_SIZE", ws))}
    if "SLURM_PROCID" in e and "SLURM_STEP_ID" in e:      # a task of an srun step (not the batch script)
        ws = int(e.get("SLURM_STEP_NUM_TASKS", e.get("SLURM_NTASKS", 1)))
        nodes = int(e.get("SLURM_STEP_NUM_NODES", e.get("SLURM_NNODES", 1)))
        return {"rank": int(e["SLURM_PROCID"]), "world_size": ws,
                "local_rank": int(e.get("SLURM_LOCALID", 0)),
                "local_world_size": max(1, -(-ws // nodes))}
    return None


def is_writer() -> bool:
    """Whether this process may write the run directory: rank 0, or not launched."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    env = launcher_env()
    return env is None or env["rank"] == 0


def threads_per_rank(local_world_size: int) -> int:
    """CPU threads for one rank (see the module docstring)."""
    for var in ("MEANFIELD_THREADS_PER_RANK", "SLURM_CPUS_PER_TASK"):
        if os.environ.get(var, "").strip():
            try:
                return max(1, int(os.environ[var]))
            except ValueError:
                raise ConfigError(f"{var} must be an integer, got {os.environ[var]!r}") from None
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover (not Linux)
        cores = os.cpu_count() or 1
    return max(1, cores // max(1, local_world_size))


def _backend(local_rank: int, local_world_size: int) -> tuple[str, torch.device]:
    if torch.cuda.is_available() and torch.cuda.device_count() >= local_world_size:
        dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
        return "nccl", dev
    return "gloo", torch.device("cpu")


RENDEZVOUS_TIMEOUT = 300.0   # seconds for all ranks to start (imports, a queue on a cluster)


def init_group(rank: int, world_size: int, local_rank: int, local_world_size: int, *,
               timeout: float, store=None) -> Comm:
    """Initialise the default process group (NCCL with enough GPUs, else gloo; the ranks
    get max(timeout, RENDEZVOUS_TIMEOUT) to meet) and set this rank's threads; returns a
    :class:`Comm` whose collectives time out after ``timeout`` seconds."""
    import torch.distributed as dist

    backend, dev = _backend(local_rank, local_world_size)
    if dev.type == "cpu":
        torch.set_num_threads(threads_per_rank(local_world_size))
    kw = {"store": store} if store is not None else {"init_method": "env://"}
    try:
        dist.init_process_group(backend, rank=rank, world_size=world_size,
                                timeout=datetime.timedelta(seconds=max(timeout, RENDEZVOUS_TIMEOUT)),
                                **kw)
    except (RuntimeError, ValueError) as e:
        raise ShardError(f"rank {rank}: could not join the process group of {world_size} "
                         f"({str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__})") from e
    return _comm(timeout)


def _comm(timeout: float) -> Comm:
    """A Comm over all ranks of the default group whose collectives time out after
    ``timeout`` seconds (a new group: every rank must call this, in the same order)."""
    import torch.distributed as dist

    try:
        group = dist.new_group(timeout=datetime.timedelta(seconds=timeout))
    except RuntimeError as e:
        raise ShardError(f"rank {dist.get_rank()}: could not form a process group ({e})") from e
    return Comm(group)


def group_comm(shards: int, timeout: float = 600.0) -> Comm | None:
    """A :class:`Comm` over the running process group (joining it from torchrun/srun's
    environment if needed), or None in an ordinary process.  Its size must be ``shards``."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        comm = _comm(timeout)
    else:
        env = launcher_env()
        if env is None:
            return None
        if env["world_size"] != shards:
            raise ConfigError(f"shards={shards} but the launcher started {env['world_size']} "
                              f"processes (use --nproc-per-node/--ntasks {shards})")
        comm = init_group(env["rank"], env["world_size"], env["local_rank"], env["local_world_size"],
                          timeout=timeout)
    if comm.size != shards:
        raise ConfigError(f"shards={shards} but the process group has {comm.size} ranks")
    return comm


# ---------------------------------------------------------------------------------------
# spawning local ranks
# ---------------------------------------------------------------------------------------

def _child(rank, nprocs, store_path, timeout, payload, queue):
    import torch.distributed as dist

    try:
        fn, args = pickle.loads(payload)
        comm = init_group(rank, nprocs, rank, nprocs, timeout=timeout,
                          store=dist.FileStore(store_path, nprocs))
        out = fn(comm, *args)
        if rank == 0:   # standard pickle: no shared memory that dies with this process
            queue.put(("result", 0, pickle.dumps(out)))
    except BaseException as e:
        try:
            queue.put(("error", rank, pickle.dumps(e)))
        except Exception:  # an unpicklable exception: its text
            queue.put(("error", rank, pickle.dumps(ShardError(f"rank {rank}: {type(e).__name__}: {e}"))))
        raise
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


# Local ranks start from a fork server that has imported torch and meanfield once (Linux):
# after the first spawn a group of ranks starts in ≈ 0.1 s instead of ≈ 3 s of imports per
# rank (measured on 2 cores: 0.07 s against 8.7 s under load).  The server holds no threads,
# CUDA context or process group, so forking from it is safe; elsewhere: "spawn".  Ranks
# forked from it see the environment variables of the moment the server started (the first
# spawn of this process).
_PRELOAD = ["torch", "meanfield.distributed", "meanfield.runner"]


def _start_method() -> str:
    import multiprocessing
    import multiprocessing.forkserver as fs

    if "forkserver" not in multiprocessing.get_all_start_methods():
        return "spawn"
    if getattr(fs._forkserver, "_forkserver_pid", None) is None:   # not started yet
        multiprocessing.get_context("forkserver").set_forkserver_preload(_PRELOAD)
    return "forkserver"


def quiet_resource_tracker() -> None:
    """Silence multiprocessing's resource tracker in the processes started from now on.  The
    tracker (a process of its own, started with the first semaphore) warns at exit about the
    semaphores of processes stopped by a signal — a killed rank, Dask workers stopped by
    Ctrl-C — and then cleans them up itself: noise for users, filtered in its environment."""
    quiet = "ignore:resource_tracker:UserWarning"
    if quiet not in os.environ.get("PYTHONWARNINGS", ""):
        os.environ["PYTHONWARNINGS"] = ",".join(filter(None, [os.environ.get("PYTHONWARNINGS"), quiet]))


def spawn(fn, nprocs: int, *args, timeout: float = 600.0):
    """Run ``fn(comm, *args)`` on ``nprocs`` new local processes joined in one process group
    (each rank gets its :class:`Comm`); returns rank 0's result.

    ``fn`` and ``args`` must be picklable (a module-level function); they are pickled here
    with the standard pickler, a copy (torch.multiprocessing's own pickler would move every
    tensor's storage to shared memory in place, freeing the memory under numpy views of
    those tensors in this process).  If any rank fails, the
    others are terminated and the failure is raised here: a ``ConfigError`` or
    ``DivergenceError`` of a rank as such (the lowest rank's), anything else as
    :class:`ShardError` naming the rank and how it ended — also when the ranks cannot be
    started (the fork server killed: ``EOFError``), after stopping those that had started.
    torch's "Terminating process" warning and the resource tracker's leaked-semaphore warning
    that follow a killed rank are silenced (the ShardError says what happened)."""
    import logging
    import multiprocessing

    import torch.multiprocessing as mp

    try:
        payload = pickle.dumps((fn, args))
    except Exception as e:
        raise ConfigError(f"cannot send {getattr(fn, '__name__', fn)!r} and its arguments to "
                          f"{nprocs} spawned ranks ({type(e).__name__}: {e}); launch the ranks "
                          "with torchrun or srun instead (see meanfield.distributed)") from None
    tmp = tempfile.mkdtemp(prefix="meanfield-shards-")
    quiet_resource_tracker()
    method = _start_method()
    queue = mp.get_context(method).SimpleQueue()
    messages = []
    torch_log = logging.getLogger("torch.multiprocessing.spawn")
    level = torch_log.level

    def drain():
        while not queue.empty():
            messages.append(queue.get())

    try:
        torch_log.setLevel(logging.ERROR)             # "Terminating process … via signal SIGTERM"
        before = set(multiprocessing.active_children())
        try:
            ctx = mp.start_processes(_child, args=(nprocs, os.path.join(tmp, "store"), timeout,
                                                   payload, queue),
                                     nprocs=nprocs, join=False, start_method=method)
        except (EOFError, ConnectionError) as e:      # the fork server died (killed) mid-start
            for p in set(multiprocessing.active_children()) - before:
                p.kill()
            raise ShardError(f"sharded run stopped: its {nprocs} ranks could not be started ({method} "
                             f"server lost: {type(e).__name__})") from None
        failed = False
        try:
            while not ctx.join(timeout=0.1):
                drain()
        except (mp.ProcessExitedException, mp.ProcessRaisedException) as e:
            failed = e
        drain()
        if failed:
            errors = {m[1]: pickle.loads(m[2]) for m in messages if m[0] == "error"}
            raise _failure(errors, [p.exitcode for p in ctx.processes], failed) from None
        results = [pickle.loads(m[2]) for m in messages if m[0] == "result"]
        return results[0] if results else None
    finally:
        torch_log.setLevel(level)
        shutil.rmtree(tmp, ignore_errors=True)


def _failure(errors: dict, exitcodes: list, exc) -> Exception:
    """The exception that explains a failed spawn: a rank's ConfigError or DivergenceError;
    else a rank that died without a Python error (exit status or signal; the ranks that
    torch.multiprocessing terminated afterwards got SIGTERM); else a rank's crash; else the
    lowest rank's ShardError (a consequence: its collective failed)."""
    import signal

    for kind in (DivergenceError, ConfigError):
        for r in sorted(errors):
            if isinstance(errors[r], kind):
                return errors[r]
    for r, code in enumerate(exitcodes):
        if r not in errors and code not in (0, None, -signal.SIGTERM):
            how = (f"was killed by signal {signal.Signals(-code).name}" if code < 0
                   else f"exited with status {code}")
            return ShardError(f"sharded run stopped: rank {r} {how}")
    for r in sorted(errors):
        if not isinstance(errors[r], ShardError):
            e = errors[r]
            return ShardError(f"sharded run stopped: rank {r} failed ({type(e).__name__}: {e})")
    if errors:
        return ShardError(f"sharded run stopped: {errors[min(errors)]}")
    return ShardError(f"sharded run stopped: {str(exc).strip().splitlines()[0][:300]}")


__all__ = ["ShardError", "group_comm", "init_group", "is_writer", "launcher_env", "quiet_resource_tracker",
           "spawn", "threads_per_rank"]
