"""Sweeps: one experiment over a grid of config values, each point an ordinary run directory.

    meanfield sweep EXPERIMENT --grid N=100,200,400 --grid seed=0:8 [--set key=value ...]
                    [--config FILE.toml] [--scheduler tcp://HOST:PORT] [--workers K]
                    [--replicas-for seed] --out DIR

writes

    DIR/sweep.json           the experiment, grid, fixed overrides (a record, for people)
    DIR/<point>/             one run directory per point (docs/design.md §3), e.g. DIR/N=100_seed=3/
    DIR/summary.csv          one row per point: the grid values, run, status, final_<metric>,
                             best_<metric> (final_risk, best_risk by default), t_final, wall_s
                             (rewritten atomically after every point)

Grid specs (``--grid``, repeatable, one key each): ``KEY=v1,v2,...`` (values separated by
``;`` instead when a value holds commas, e.g. ``xi=power:1,0.25,1;power:1,0.5,1``) or an integer
range ``KEY=a:b[:step]`` (Python's range(a, b, step): ``seed=0:8`` is 0 … 7).  The grid is
the Cartesian product, first key slowest.  Every point's config is built and validated in the
parent before anything runs, ``--metric`` is checked against what the first point measures
(``sweep_report.check_metric``) and ``--workers`` against the machine's memory
(:func:`check_workers`): a bad spec or value is a ConfigError (exit 2, nothing written).

**Execution.**  :func:`run_sweep` takes any ``concurrent.futures``-style executor (an object
with ``submit(fn, *args) -> Future``): :class:`SerialExecutor` (in this process, for tests
and debugging), a ``ProcessPoolExecutor``, or Dask's ``client.get_executor()``.  The CLI
uses Dask distributed (:func:`dask_client`): an in-process ``LocalCluster`` with one
single-threaded worker process per core by default (``--workers K`` to choose), or an
existing scheduler (``--scheduler tcp://HOST:PORT``, or ``DASK_SCHEDULER_ADDRESS``).  Dask's
nannies start workers with ``OMP_NUM_THREADS=1`` (right for many small runs; one big run
wants all threads: use ``meanfield run``), and :func:`run_point` also calls
``torch.set_num_threads`` from it.  A worker that dies mid-point (killed, out of memory) is
replaced by Dask and its point is re-run elsewhere; the re-run resumes from the point's last
checkpoint, so nothing is lost.

**Restarts.**  Re-running the same command on DIR skips points whose run is finished
(reusing their summary rows), resumes unfinished ones from their checkpoints (or from step 0
when they stopped before the first) and starts the rest.  A point whose run directory holds
a different config (other than a larger ``steps``, which extends the run) is recorded as
failed rather than overwritten.

**Failures.**  An exception in a point (divergence, a bad value found late, a worker killed
too often: Dask's ``KilledWorker``) is recorded in its row as ``failed: Type: message``; the
other points go on.

**Replicas.**  ``replicas_for="seed"`` (``--replicas-for seed``) runs all seeds of a grid
point as the replicas of one run (θ of shape [R, N, D], one tensor, one generator seeded
with the first seed): R systems advance in one batched step, so per-step overheads are paid
once.  Replica r stands for the r-th seed value: an independent draw with the same law as a
separate run with that seed, but not the same draw.  The summary keeps one row per seed
(column ``replica``).  Measured on this 2-core machine (README, "Sweeps"): for small N the
batched run is several times faster than separate tasks; for large N the work per step
dominates and separate tasks on separate cores win.

**Compile caches.**  Before fanning out, the parent runs each distinct (experiment, d,
dtype, backend) once for one step at a tiny N in a temporary directory, so that KeOps
formulas and native loops are compiled into the shared caches (docs/design.md §4) before
workers start; workers on other machines need those caches on a shared file system.
"""
from __future__ import annotations

import concurrent.futures as cf
import contextlib
import itertools
import math
import os
import re
import time
from pathlib import Path

from . import io
from .errors import ConfigError
from .sweep_report import MetricError, check_metric, metric_values, read_summary, stat_columns

SUMMARY, RECORD = "summary.csv", "sweep.json"
MAX_POINTS = 100_000          # default limit on a grid's size (--max-points)
_RANGE = re.compile(r"^\s*(-?\d+)\s*:\s*(-?\d+)\s*(?::\s*(-?\d+)\s*)?$")
_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
RESULT_COLUMNS = ("run", "status", "final_risk", "best_risk", "t_final", "wall_s")   # metric risk
# resident memory of one Dask worker process after a point (torch and meanfield imported):
# 332 MB measured on this machine after a teacher-student point, rounded up with its nanny's share
WORKER_BYTES = 350_000_000


# ---- grid ------------------------------------------------------------------------------
def parse_grid(specs, *, max_points: int = MAX_POINTS) -> dict[str, list[str]]:
    """``["N=100,200", "seed=0:3"]`` → ``{"N": ["100", "200"], "seed": ["0", "1", "2"]}``.

    Values stay strings (parsed later by the experiment's Config like ``--set`` values).
    Raises ConfigError (naming the spec) for a missing ``=``, a bad key, an empty value
    list, an empty or malformed range, a key given twice, or a grid of more than
    ``max_points`` points — counted before any value list is built, so ``seed=0:10**9`` is
    refused at once instead of filling the memory."""
    grid: dict[str, list[str]] = {}
    total = 1
    for spec in specs:
        key, sep, raw = str(spec).partition("=")
        key = key.strip()
        if not sep:
            raise ConfigError(f"--grid expects KEY=v1,v2,... or KEY=a:b, got {spec!r}")
        if not _KEY.match(key):
            raise ConfigError(f"--grid {spec!r}: {key!r} is not a config key name")
        if key in grid:
            raise ConfigError(f"--grid: key {key!r} given twice")
        m = _RANGE.match(raw)
        if m:
            a, b = int(m.group(1)), int(m.group(2))
            step = int(m.group(3)) if m.group(3) is not None else 1
            if step == 0:
                raise ConfigError(f"--grid {spec!r}: range step must not be 0")
            n = max(0, -((a - b) // step))          # len(range(a, b, step)), for any integers
            if not n:
                raise ConfigError(f"--grid {spec!r}: range {a}:{b} is empty (b is excluded, as in Python)")
            _check_size(total * n, max_points)
            values = [str(v) for v in range(a, b, step)]
        else:
            parts = raw.split(";") if ";" in raw else raw.split(",")
            values = [p.strip() for p in parts]
            if not raw.strip() or any(v == "" for v in values):
                raise ConfigError(f"--grid {spec!r}: empty value (expected KEY=v1,v2,...)")
            if len(set(values)) != len(values):
                raise ConfigError(f"--grid {spec!r}: repeated value")
        total *= len(values)
        _check_size(total, max_points)
        grid[key] = values
    return grid


def _check_size(n: int, max_points: int) -> None:
    if n > max_points:
        raise ConfigError(f"the grid has {n} points, more than --max-points {max_points} "
                          "(raise --max-points to run it)")


def grid_size(grid: dict) -> int:
    """The number of points of a grid (the product of its axes' lengths)."""
    n = 1
    for values in grid.values():
        n *= len(values)
    return n


def iter_points(grid: dict[str, list[str]]):
    """The Cartesian product of the grid, first key slowest, one {key: value} at a time."""
    keys = list(grid)
    for vals in itertools.product(*(grid[k] for k in keys)):
        yield dict(zip(keys, vals))


def expand(grid: dict[str, list[str]]) -> list[dict[str, str]]:
    """The Cartesian product of the grid, first key slowest: a list of {key: value}."""
    return list(iter_points(grid))


def point_name(point: dict) -> str:
    """A directory name for a point: ``N=100_seed=3`` (unsafe characters become ``-``)."""
    parts = [f"{k}={v}" for k, v in point.items()]
    return re.sub(r"[^A-Za-z0-9=._+-]", "-", "_".join(parts)) or "point"


class Job:
    """One unit of work: a run directory for one config (``seeds`` > 1 when the grid's
    seeds run as replicas).  ``points`` are the grid points it covers (one per replica);
    ``bytes`` the memory its run needs (``runner.memory_needed``)."""

    def __init__(self, name: str, config: dict, points: list[dict], replica_key: str | None,
                 bytes: int = 0):
        self.name, self.config, self.points, self.replica_key = name, config, points, replica_key
        self.bytes = bytes


def plan(experiment: str, grid: dict[str, list[str]], *, sets=(), config_file=None,
         replicas_for: str | None = None, max_points: int = MAX_POINTS) -> list[Job]:
    """Validate every point's config (ConfigError before anything runs: values, memory
    needed) and group points into jobs (one per point, or one per group of seeds with
    ``replicas_for="seed"``); grids of more than ``max_points`` points are refused before
    they are expanded."""
    from .experiments import get_experiment
    from .runner import check_memory

    exp = get_experiment(experiment)
    fields = exp.Config.field_types()
    for key in grid:
        if key not in fields:
            import difflib

            close = difflib.get_close_matches(key, list(fields), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"--grid: unknown config key {key!r} for {experiment}{hint}")
    set_keys = {s.partition("=")[0].strip() for s in sets}
    both = set_keys & set(grid)
    if both:
        raise ConfigError(f"key {sorted(both)[0]!r} is in both --grid and --set")
    if replicas_for is not None:
        if replicas_for != "seed":
            raise ConfigError(f"--replicas-for supports only 'seed', got {replicas_for!r}")
        if "seed" not in grid:
            raise ConfigError("--replicas-for seed needs a --grid seed=... entry")
    _check_size(grid_size(grid), max_points)
    points = list(iter_points(grid))
    if not points:
        raise ConfigError("the grid is empty")

    def build(point):
        cfg = exp.Config.build(config_file, list(sets) + [f"{k}={v}" for k, v in point.items()])
        need[0] = check_memory(cfg)
        return cfg

    jobs: list[Job] = []
    need = [0]
    if replicas_for is None:
        for p in points:
            jobs.append(Job(point_name(p), build(p).to_dict(), [p], None, need[0]))
    else:
        groups: dict[tuple, list[dict]] = {}
        for p in points:
            groups.setdefault(tuple((k, v) for k, v in p.items() if k != "seed"), []).append(p)
        for rest, pts in groups.items():
            if "replicas" in grid:
                raise ConfigError("--replicas-for seed sets replicas itself; remove replicas from --grid")
            cfg = build(pts[0])
            if cfg.replicas != 1:
                raise ConfigError(f"--replicas-for seed needs replicas = 1 in the config, got {cfg.replicas}")
            seeds = [int(p["seed"]) for p in pts]
            cfg = build({**pts[0], "replicas": str(len(pts))})
            label = dict(rest)
            label["seed"] = f"{seeds[0]}..{seeds[-1]}" if len(seeds) > 1 else str(seeds[0])
            jobs.append(Job(point_name(label), cfg.to_dict(), pts, "seed", need[0]))
    names = [j.name for j in jobs]
    for i, j in enumerate(jobs):          # make names unique (sanitising can collide)
        if names.count(j.name) > 1:
            j.name = f"{j.name}_{i}"
    return jobs


# ---- executing one point ------------------------------------------------------------------
def _threads_from_env():
    n = os.environ.get("OMP_NUM_THREADS")
    if n and n.isdigit() and int(n) > 0:
        import torch

        if torch.get_num_threads() != int(n):
            torch.set_num_threads(int(n))


def run_point(experiment: str, config: dict, run_dir: str, metric: str = "risk") -> dict:
    """Run (or finish) one point into ``run_dir`` through ``meanfield.runner``; returns
    {status, wall_s, values, resumed, skipped}.

    * no run there (absent or empty directory): a new run (``runner.run``);
    * a run with the same config (``steps`` may have grown), unfinished or shorter: resumed
      from its checkpoint (``runner.resume``, with its resume rule and lock);
    * a finished run with the same config: nothing to do (``status = "ok"``, ``skipped``);
    * anything else raises ConfigError (the caller records the point as failed); a metrics
      table without the ``metric`` column raises :class:`MetricError`.

    Executes in a worker process; sets torch's thread count from ``OMP_NUM_THREADS``.
    """
    from . import runner
    from .experiments import get_experiment

    _threads_from_env()
    exp = get_experiment(experiment)
    cfg = exp.Config.from_mapping(config, source=f"sweep point {run_dir}")
    out = Path(run_dir)
    started = time.perf_counter()
    resumed = skipped = False
    if (out / io.CONFIG).exists():
        rec = io.load_run_config(out)
        saved = dict(rec["config"])
        if rec["experiment"] != experiment:
            raise ConfigError(f"{out} holds a {rec['experiment']!r} run, not {experiment!r}")
        diff = sorted(k for k in set(saved) | set(config) if k != "steps" and saved.get(k) != config.get(k))
        if diff:
            raise ConfigError(f"{out} holds a run with another config ({diff[0]}={saved.get(diff[0])!r}, "
                              f"sweep wants {config.get(diff[0])!r}); move it away to re-run")
        if runner.status(out, cfg.steps) == "finished":
            skipped = True
        else:
            sets = [f"steps={cfg.steps}"] if saved.get("steps") != cfg.steps else []
            runner.resume(out, sets, progress=False)
            resumed = True
    else:
        runner.run(exp, cfg, out, progress=False)
    values = metric_values(out, metric, cfg.replicas)
    return {"status": "ok", "wall_s": time.perf_counter() - started, "resumed": resumed,
            "skipped": skipped, "values": values}


class SerialExecutor:
    """A ``concurrent.futures``-style executor that runs each call at ``submit`` time in
    this process (tests, debugging, ``--workers 0``)."""

    def submit(self, fn, *args, **kwargs) -> cf.Future:
        """Run ``fn(*args, **kwargs)`` now; return a done Future holding its result or its
        exception (KeyboardInterrupt propagates instead)."""
        f: cf.Future = cf.Future()
        try:
            f.set_result(fn(*args, **kwargs))
        except BaseException as e:  # noqa: BLE001 — recorded by the caller
            if isinstance(e, KeyboardInterrupt):
                raise
            f.set_exception(e)
        return f

    def shutdown(self, wait=True):
        """Nothing to release (every call has already run); ``wait`` is ignored."""
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.shutdown()


# ---- the sweep ----------------------------------------------------------------------------
def _read_summary(path: Path) -> dict[str, dict]:
    """Previous summary rows keyed by (run, replica); {} when there is none."""
    if not path.exists():
        return {}
    return {(r.get("run", ""), r.get("replica", "")): r for r in read_summary(path)}


def _error_text(e: BaseException) -> str:
    msg = " ".join(str(e).split())
    return f"failed: {type(e).__name__}" + (f": {msg}" if msg else "")


def warm_up(experiment: str, jobs: list[Job]) -> None:
    """Compile KeOps formulas / native loops in this process before workers start, once for
    each distinct (d, dtype, backend): through the experiment's ``warmup(cfg)`` when it
    declares one, else by one step of its first phase at N ≤ 8 (experiments whose plan has a
    prelude, a PDE solve, declare their own or are not warmed).  Failures are ignored here
    (the points report their own errors)."""
    from .experiments import get_experiment

    exp = get_experiment(experiment)
    seen = set()
    for job in jobs:
        c = job.config
        key = (c.get("d"), c.get("dtype"), c.get("backend"))
        if key in seen:
            continue
        seen.add(key)
        try:
            cfg = exp.Config.from_mapping(c)
            if hasattr(exp, "warmup"):
                exp.warmup(cfg)
                continue
            small = {"replicas": 1, "steps": 1, "log_every": 1, "save_every": 1, "checkpoint_every": 1}
            if "N" in c:
                small["N"] = min(int(c["N"]), 8)
            plan = exp.plan(exp.Config.from_mapping({**c, **small}))
            if plan.prelude is None:
                dyn, state = next(iter(plan.phases({}))).build()
                dyn.step(state)
        except Exception:  # noqa: BLE001
            pass


def run_sweep(experiment: str, grid, out, *, sets=(), config_file=None, executor=None,
              replicas_for: str | None = None, metric: str = "risk", progress: bool = True,
              point_fn=None, warmup: bool = True, max_points: int = MAX_POINTS,
              check: bool = True) -> list[dict]:
    """Run every point of ``grid`` (a dict {key: [values]} or a list of ``--grid`` specs)
    into ``out``; returns the summary rows (also written to ``out/summary.csv``).  With
    ``check``, ``metric`` is checked first (``sweep_report.check_metric``; the CLI checks it
    before starting a cluster).

    ``executor``: any object with ``submit(fn, *args) -> concurrent.futures.Future``
    (default :class:`SerialExecutor`).  ``point_fn(experiment, config, run_dir, metric)``
    replaces :func:`run_point` (a hook for tests).  The sweep directory is locked for the
    sweep's life (a second sweep on it is a ConfigError naming the holder); every point's
    run directory is locked by its own run.  See the module docstring for restarts,
    failures and replicas.
    """
    with _locked_sweep_dir(experiment, grid, out, sets, config_file, replicas_for, max_points,
                           metric if check else None) as (grid, out, jobs):
        return _run_sweep(experiment, grid, out, jobs, sets=sets, config_file=config_file,
                          executor=executor, replicas_for=replicas_for, metric=metric,
                          progress=progress, point_fn=point_fn, warmup=warmup)


@contextlib.contextmanager
def _locked_sweep_dir(experiment, grid, out, sets, config_file, replicas_for, max_points, metric):
    """Check everything (the metric too, unless None), then create and lock the sweep
    directory: (grid, out, jobs)."""
    if not isinstance(grid, dict):
        grid = parse_grid(grid, max_points=max_points)
    if out is None or str(out).strip() == "":
        raise ConfigError("--out must name a directory (got an empty path)")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} exists and is not a directory")
    if out.exists() and (out / io.CONFIG).exists():
        raise ConfigError(f"--out {out} holds a single run, not a sweep")
    jobs = plan(experiment, grid, sets=sets, config_file=config_file, replicas_for=replicas_for,
                max_points=max_points)
    if metric is not None:
        check_metric(experiment, jobs[0].config, metric)
    if (out / RECORD).exists():
        old = io.read_json(out / RECORD)
        if not isinstance(old, dict):
            raise ConfigError(f"{out / RECORD} is not a sweep record")
        if old.get("experiment") not in (None, experiment):
            raise ConfigError(f"--out {out} holds a sweep of {old['experiment']!r}, not {experiment!r}")
    if not out.exists():
        io.check_new_out_dir(out)
    io.make_dir(out)
    with io.DirectoryLock(out) as lock:
        lock.claim()
        yield grid, out, jobs


def _run_sweep(experiment, grid, out, jobs, *, sets, config_file, executor, replicas_for, metric,
               progress, point_fn, warmup):
    from tqdm.auto import tqdm

    record = {"experiment": experiment, "grid": grid, "sets": list(sets),
              "config_file": str(config_file) if config_file else None, "replicas_for": replicas_for,
              "metric": metric}
    io.remove_stale_temporaries(out)
    io.write_json(out / RECORD, {**record, "meanfield_version": _version()})
    previous = _read_summary(out / SUMMARY)
    point_fn = point_fn or run_point
    executor = executor or SerialExecutor()

    results: dict[str, list[dict]] = {}

    def rows_for(job: Job, res: dict | None, status: str) -> list[dict]:
        rows = []
        for r, p in enumerate(job.points):
            row = dict(p)
            if job.replica_key:
                row["replica"] = r
            row["run"] = job.name
            row["status"] = status
            fin, best, tf = res["values"][r] if res else (math.nan, math.nan, math.nan)
            row.update(zip(stat_columns(metric), (fin, best)), t_final=tf)
            wall = res["wall_s"] if res else math.nan
            if res and res.get("skipped"):
                prev = previous.get((job.name, str(r) if job.replica_key else ""))
                try:
                    wall = float(prev["wall_s"]) if prev else math.nan
                except (TypeError, ValueError, KeyError):
                    wall = math.nan
            row["wall_s"] = wall
            rows.append(row)
        return rows

    def flush():
        rows = []
        for job in jobs:
            rows.extend(results.get(job.name) or rows_for(job, None, "pending"))
        io.write_metrics(out / SUMMARY, rows)           # the same CSV writer, atomic
        return rows

    if warmup and not all(_finished(out / j.name, j.config) for j in jobs):
        warm_up(experiment, jobs)
    flush()
    bar = tqdm(total=sum(len(j.points) for j in jobs), desc=f"sweep {experiment}", unit="run",
               disable=None if progress else True, dynamic_ncols=True)
    futures = {}
    try:
        for job in jobs:
            fut = executor.submit(point_fn, experiment, job.config, str(out / job.name), metric)
            futures[fut] = job
        for fut in cf.as_completed(list(futures)):
            job = futures[fut]
            try:
                res = fut.result()
                results[job.name] = rows_for(job, res, res.get("status", "ok"))
            except MetricError:
                raise                      # a wrong --metric is wrong for every point
            except Exception as e:  # noqa: BLE001 — one failing point never stops the others
                results[job.name] = rows_for(job, None, _error_text(e))
            flush()
            bar.update(len(job.points))
            n_fail = sum(1 for rs in results.values() for r in rs if r["status"].startswith("failed"))
            bar.set_postfix(failed=n_fail, refresh=False)
    except BaseException:
        for fut in futures:
            fut.cancel()
        flush()
        raise
    finally:
        bar.close()
    return flush()


def _finished(run_dir: Path, config: dict) -> bool:
    """Whether ``run_dir`` holds a finished run of at least ``config``'s steps (False for a
    corrupted one: its point reports the error)."""
    from . import runner

    try:
        return runner.status(run_dir, int(config.get("steps", 0))) == "finished"
    except (ConfigError, KeyError, TypeError, ValueError):
        return False


def _version():
    from .version import __version__

    return __version__


# ---- Dask ---------------------------------------------------------------------------------
def default_workers() -> int:
    """One worker per core available to this process."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover
        return max(1, os.cpu_count() or 1)


def check_workers(workers: int | None, jobs: list[Job] = ()) -> int:
    """The number of LocalCluster workers (default: one per core), or ConfigError (before
    anything starts) when ``workers`` processes — ``WORKER_BYTES`` each plus the largest
    point's run (``Job.bytes``) — need more memory than the machine has."""
    from .runner import machine_memory

    n = default_workers() if workers is None else workers
    if n < 1:
        raise ConfigError(f"--workers must be >= 1 for a Dask cluster, got {n}")
    per = WORKER_BYTES + max((j.bytes for j in jobs), default=0)
    if n * per > machine_memory():
        raise ConfigError(f"--workers {n} needs about {n * per / 1e9:.3g} GB ({per / 1e6:.0f} MB per worker "
                          f"process and its point); this machine has {machine_memory() / 1e9:.3g} GB: "
                          f"at most {max(1, machine_memory() // per)} workers")
    return n


class ClusterError(RuntimeError):
    """The local Dask cluster could not start its workers (a worker killed while starting,
    out of memory …); nothing has run: the same command may be run again."""


def dask_client(scheduler: str | None = None, workers: int | None = None):
    """A ``distributed.Client``: to ``scheduler`` (or ``DASK_SCHEDULER_ADDRESS``) when given,
    else to a new in-process LocalCluster of ``workers`` single-threaded worker processes
    (default: one per core; :func:`check_workers`) whose environment has
    ``OMP_NUM_THREADS=1``.  Close it (it is a context manager) to stop the cluster.
    ConfigError for a scheduler that is unreachable or not an address; :class:`ClusterError`
    when the LocalCluster does not start."""
    import logging

    import dask
    from distributed import Client, LocalCluster

    from .distributed import quiet_resource_tracker

    address = scheduler or dask.config.get("scheduler-address", None)
    if address:
        try:
            return Client(address, timeout="20s")
        except (OSError, TimeoutError, ValueError, TypeError) as e:
            raise ConfigError(f"cannot reach the Dask scheduler at {address} ({type(e).__name__}: "
                              f"{' '.join(str(e).split())})") from None
    n = check_workers(workers)
    env = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    quiet_resource_tracker()
    cluster = None
    try:
        with dask.config.set({f"distributed.nanny.pre-spawn-environ.{k}": v for k, v in env.items()}):
            # the scheduler serves HTTP even without a dashboard, on 8787 unless told otherwise:
            # ":0" takes a free port (two sweeps at once used to print "Port 8787 is already in use")
            cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                                   dashboard_address=":0", silence_logs=logging.CRITICAL)
        client = Client(cluster)
    except Exception as e:  # noqa: BLE001 — "Nanny failed to start", a timeout …
        if cluster is not None:
            cluster.close()
        raise ClusterError(f"the local Dask cluster could not start its {n} workers ({type(e).__name__}: "
                           f"{' '.join(str(e).split())[:200]}); nothing ran: run the same command again") from None
    client._meanfield_cluster = cluster            # closed with the client (see close_client)
    return client


def close_client(client) -> None:
    """Close a client from :func:`dask_client` and the LocalCluster it started, if any."""
    cluster = getattr(client, "_meanfield_cluster", None)
    client.close()
    if cluster is not None:
        cluster.close()


__all__ = ["parse_grid", "expand", "point_name", "plan", "run_point", "run_sweep", "warm_up",
           "SerialExecutor", "check_workers", "ClusterError", "dask_client", "close_client",
           "read_summary", "MetricError"]
