"""The ``meanfield`` command.

    meanfield run EXPERIMENT [--config FILE.toml] [--set key=value ...] --out DIR
    meanfield resume DIR [--set key=value ...]
    meanfield plot DIR
    meanfield show DIR
    meanfield list
    meanfield config EXPERIMENT
    meanfield sweep EXPERIMENT --grid KEY=V1,V2 --grid seed=0:8 [--set ...] [--scheduler ADDR] --out DIR

Bad input prints one line on stderr and exits with status 2, writing nothing; a diverging
run prints one line and exits with status 3, its last checkpoint intact.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .errors import ConfigError, DivergenceError

EXIT_USAGE, EXIT_DIVERGED = 2, 3
EXIT_SHARD_LOST = 4  # a sharded run lost a rank (meanfield.distributed)


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, status 2
        raise ConfigError(message)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="meanfield", description="Mean-field particle simulations of neural networks.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    r = sub.add_parser("run", help="run an experiment into a new run directory",
                       epilog="`meanfield list` names the experiments; `meanfield config EXPERIMENT` "
                              "prints every config key with its type and default (most experiments "
                              "take --set scale=small for a quick run).")
    r.add_argument("experiment", help="an experiment name (see `meanfield list`)")
    r.add_argument("--config", type=Path, help="TOML file of config keys")
    r.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key (repeatable)")
    r.add_argument("--out", type=Path, required=True, help="run directory (must be new)")
    r.add_argument("--no-progress", action="store_true", help="do not draw the progress bar")
    s = sub.add_parser("resume", help="continue a run from its last checkpoint")
    s.add_argument("run_dir", type=Path, help="the run directory to continue")
    s.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. a smaller dt or more steps")
    s.add_argument("--no-progress", action="store_true", help="do not draw the progress bar")
    pl = sub.add_parser("plot", help="redraw the figures of a run directory")
    pl.add_argument("run_dir", type=Path, help="the run directory whose figures are redrawn")
    pl.add_argument("--coords", help="comma-separated coordinates for histograms, e.g. '|w|,a,w0'")
    sh = sub.add_parser("show", help="print a run's config and its last metrics")
    sh.add_argument("run_dir", type=Path, help="the run directory to describe")
    sub.add_parser("list", help="list the experiments")
    cf = sub.add_parser("config", help="print an experiment's config keys, types and defaults")
    cf.add_argument("experiment", help="an experiment name (see `meanfield list`)")
    # ---- sweeps (issue 5; meanfield.sweep) ----
    sw = sub.add_parser("sweep", help="run an experiment over a grid of config values (Dask)")
    sw.add_argument("experiment", help="an experiment name (see `meanfield list`)")
    sw.add_argument("--grid", dest="grids", action="append", default=[], metavar="KEY=V1,V2|A:B",
                    help="a grid axis: values 'N=100,200,400' or an integer range 'seed=0:8' (repeatable)")
    sw.add_argument("--config", type=Path, help="TOML file of config keys")
    sw.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                    help="override a config key for every point (repeatable)")
    sw.add_argument("--out", type=Path, required=True, help="sweep directory (re-use it to restart)")
    sw.add_argument("--scheduler", help="address of a running Dask scheduler, e.g. tcp://HOST:8786")
    sw.add_argument("--workers", type=int, help="LocalCluster worker processes (default: one per "
                    "core; 0 runs the points one after another in this process)")
    sw.add_argument("--replicas-for", dest="replicas_for", metavar="seed",
                    help="run the seeds of each grid point as replicas of one run (one tensor)")
    sw.add_argument("--metric", default="risk", help="metrics.csv column summarised (default: risk)")
    sw.add_argument("--no-progress", action="store_true",
                    help="do not draw the progress bar over grid points")
    return p


def _cmd_run(args):
    from .experiments import get_experiment

    exp = get_experiment(args.experiment)
    cfg = exp.Config.build(args.config, args.sets)
    # shards > 1: every rank of torchrun/srun runs this; without a launcher it spawns them
    from . import distributed

    _, rows, secs = distributed.run(exp, cfg, args.out, progress=not args.no_progress)
    if distributed.is_writer():
        print(_summary(exp.NAME, rows, secs, args.out))


def _summary(name, rows, secs, out) -> str:
    """One line after a run: the last recorded risk and time when the experiment has them."""
    last = rows[-1] if rows else {}
    if "risk" in last and "t" in last:
        return (f"{name}: final risk {last['risk']:.6g} at t = {last['t']:.6g} "
                f"({secs:.1f} s) -> {out}")
    return f"{name}: done ({secs:.1f} s) -> {out}"


def _cmd_resume(args):
    from . import io
    from .experiments import get_experiment

    rec = io.load_run_config(args.run_dir)
    exp = get_experiment(rec["experiment"])
    ck_path = Path(args.run_dir) / io.CHECKPOINT
    # no checkpoint yet: the run was stopped before its first one and restarts from step 0
    ck = io.load_checkpoint(ck_path) if ck_path.exists() else None
    cfg = exp.Config.build(None, args.sets, base=ck["config"] if ck else rec["config"])
    if ck and ck.get("finished") and ck["state"]["step"] >= cfg.steps:
        raise ConfigError(f"{args.run_dir} is already finished at step {ck['state']['step']} "
                          f"(raise steps with --set steps=...)")
    from . import distributed

    if args.sets and distributed.is_writer():
        rec["config"] = cfg.to_dict()
        io.write_json(Path(args.run_dir) / io.CONFIG, rec)
    _, rows, secs = distributed.run(exp, cfg, args.run_dir, progress=not args.no_progress,
                                    checkpoint=ck, resume=True)
    if distributed.is_writer():
        print(_summary(exp.NAME, rows, secs, args.run_dir))


def _cmd_plot(args):
    from . import io
    from .experiments import get_experiment
    from .plotting import plot_run

    rec = io.load_run_config(args.run_dir)
    if not (Path(args.run_dir) / io.METRICS).exists():
        raise ConfigError(f"{args.run_dir} has no {io.METRICS} yet")
    coords = [c.strip() for c in args.coords.split(",")] if args.coords else None
    # an experiment with figures of its own defines plot(run_dir, coords=None) -> [Path]
    plot = getattr(get_experiment(rec["experiment"]), "plot", plot_run)
    for p in plot(args.run_dir, coords):
        print(p)


def _cmd_show(args):
    import json

    from . import io

    rec = io.load_run_config(args.run_dir)
    print(json.dumps(rec, indent=2))
    mpath = Path(args.run_dir) / io.METRICS
    rows = io.read_metrics(mpath) if mpath.exists() else {}
    if rows:
        last = {k: v[-1] for k, v in rows.items()}
        print("last metrics: " + ", ".join(
            f"{k}={int(v) if k == 'step' else format(v, '.6g')}" for k, v in last.items()))
    else:
        print("last metrics: none yet")
    ck = Path(args.run_dir) / io.CHECKPOINT
    if ck.exists():
        c = io.load_checkpoint(ck)
        state = "finished" if c.get("finished") else "in progress"
        print(f"checkpoint: step {c['state']['step']} of {c['config']['steps']} ({state})")


def _cmd_list(args):
    from .experiments import EXPERIMENTS, get_experiment

    for name in EXPERIMENTS:
        doc = (get_experiment(name).__doc__ or "").strip().splitlines()[0]
        print(f"{name:20s} {doc}")


def _cmd_config(args):
    """Every key of the experiment's Config: type, default, and the presets that change it."""
    import dataclasses

    from .experiments import get_experiment

    exp = get_experiment(args.experiment)
    types = exp.Config.field_types()
    presets = {f"{k}={v}": vals for k, table in exp.Config._presets.items()
               for v, vals in table.items()}
    print((exp.__doc__ or exp.NAME).strip().splitlines()[0])
    for f in dataclasses.fields(exp.Config):
        extra = "; ".join(f"{name}: {vals[f.name]!r}" for name, vals in presets.items()
                          if f.name in vals)
        print(f"  {f.name:18s} {types[f.name].__name__:6s} {f.default!r}"
              + (f"   ({extra})" if extra else ""))


def _cmd_sweep(args):
    from . import sweep

    grid = sweep.parse_grid(args.grids)
    if not grid:
        raise ConfigError("sweep needs at least one --grid KEY=VALUES")
    # validate everything before a cluster starts
    sweep.plan(args.experiment, grid, sets=args.sets, config_file=args.config,
               replicas_for=args.replicas_for)
    if args.workers is not None and args.workers < 0:
        raise ConfigError(f"--workers must be >= 0, got {args.workers}")
    kw = dict(sets=args.sets, config_file=args.config, replicas_for=args.replicas_for,
              metric=args.metric, progress=not args.no_progress)
    if args.workers == 0 and not args.scheduler:
        rows = sweep.run_sweep(args.experiment, grid, args.out, **kw)
    else:
        client = sweep.dask_client(args.scheduler, args.workers)
        try:
            rows = sweep.run_sweep(args.experiment, grid, args.out, executor=client.get_executor(), **kw)
        finally:
            sweep.close_client(client)
    failed = [r for r in rows if r["status"] != "ok"]
    print(f"{args.experiment} sweep: {len(rows) - len(failed)} of {len(rows)} runs ok"
          + (f", {len(failed)} failed" if failed else "") + f" -> {Path(args.out) / sweep.SUMMARY}")


def main(argv=None) -> int:
    """Run the ``meanfield`` command on ``argv`` (default ``sys.argv[1:]``); return the exit status.

    0 on success; 2 (``EXIT_USAGE``) on a ``ConfigError``, i.e. a bad argument or config,
    printed as one ``meanfield: error: ...`` line on stderr; 3 (``EXIT_DIVERGED``) on a
    ``DivergenceError``; 4 (``EXIT_SHARD_LOST``) when a sharded run loses a rank; 130 on
    Ctrl-C.  ``--help`` exits through ``SystemExit(0)`` (argparse).  Sets
    ``MPLBACKEND=Agg`` unless already set.
    """
    os.environ.setdefault("MPLBACKEND", "Agg")
    from .dynamics.sharded import ShardError

    try:
        args = _parser().parse_args(argv)
        {"run": _cmd_run, "resume": _cmd_resume, "plot": _cmd_plot, "show": _cmd_show,
         "list": _cmd_list, "config": _cmd_config, "sweep": _cmd_sweep}[args.command](args)
    except ConfigError as e:
        print(f"meanfield: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except DivergenceError as e:
        print(f"meanfield: diverged: {e} (last checkpoint kept; resume with a smaller dt: "
              f"meanfield resume DIR --set dt=...)", file=sys.stderr)
        return EXIT_DIVERGED
    except ShardError as e:
        print(f"meanfield: {e} (last checkpoint kept; continue with `meanfield resume DIR`)",
              file=sys.stderr)
        return EXIT_SHARD_LOST
    except KeyboardInterrupt:
        print("meanfield: interrupted (resume from the last checkpoint with `meanfield resume DIR`)",
              file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
