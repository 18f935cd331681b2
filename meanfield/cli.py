"""The ``meanfield`` command.

    meanfield run EXPERIMENT [--config FILE.toml] [--set key=value ...] --out DIR
    meanfield resume DIR [--set key=value ...]
    meanfield plot DIR
    meanfield show DIR
    meanfield animate DIR [--what VIEW] [--out FILE.gif|.mp4] [--fps F] [--frames K] [--dpi D]
    meanfield list
    meanfield config EXPERIMENT
    meanfield sweep EXPERIMENT --grid KEY=V1,V2 --grid seed=0:8 [--set ...] [--scheduler ADDR] --out DIR
    meanfield export DIR --out FILE.pt [--snapshot K] [--replica R]

Bad input prints one line on stderr and exits with status 2, writing nothing; a diverging
run prints one line and exits with status 3, its last checkpoint intact.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from pathlib import Path

from .errors import ConfigError, DivergenceError

EXIT_USAGE, EXIT_DIVERGED = 2, 3
EXIT_SHARD_LOST = 4  # a sharded run lost a rank (meanfield.distributed)
EXIT_POINTS_FAILED = 5  # a sweep finished with failed points (their rows say why)


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, status 2
        raise ConfigError(message)


def _path(text: str) -> Path:
    """A path argument; an empty one (which ``Path`` would read as the current directory)
    is refused."""
    if not text.strip():
        raise argparse.ArgumentTypeError("must name a directory (got an empty path)")
    return Path(text)


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
    r.add_argument("--out", type=_path, required=True, help="run directory (must be new)")
    r.add_argument("--no-progress", action="store_true", help="do not draw the progress bar")
    s = sub.add_parser("resume", help="continue a run from its last checkpoint")
    s.add_argument("run_dir", type=_path, help="the run directory to continue")
    s.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. a smaller dt or more steps")
    s.add_argument("--no-progress", action="store_true", help="do not draw the progress bar")
    pl = sub.add_parser("plot", help="redraw the figures of a run directory, or draw a sweep's "
                                      "(metric against each numeric grid key, fitted slopes)")
    pl.add_argument("run_dir", type=_path, help="the run or sweep directory whose figures are drawn")
    pl.add_argument("--coords", help="comma-separated coordinates for histograms, e.g. '|w|,a,w0'")
    sh = sub.add_parser("show", help="print a run's config, last metrics and progress, or a "
                                      "sweep's table and fitted slopes")
    sh.add_argument("run_dir", type=_path, help="the run or sweep directory to describe")
    an = sub.add_parser("animate", help="a movie of a run's flow from its snapshots (GIF, or MP4 "
                                         "with an ffmpeg writer)")
    an.add_argument("run_dir", type=_path, help="the run directory to animate")
    an.add_argument("--what", help="the view: cloud, plane, radial, torus, density, depth or params "
                    "(default: the experiment's first; `meanfield list` shows each experiment's views)")
    an.add_argument("--out", type=_path, help="the movie file, .gif or .mp4 (default DIR/figures/VIEW.gif)")
    an.add_argument("--fps", type=float, default=10, help="frames per second (default 10)")
    an.add_argument("--frames", type=int, help="show this many snapshots, spread evenly (default all)")
    an.add_argument("--dpi", type=float, default=80, help="resolution in dots per inch (default 80)")
    an.add_argument("--no-progress", action="store_true", help="do not draw the progress bar")
    sub.add_parser("list", help="list the experiments")
    cf = sub.add_parser("config", help="print an experiment's config keys, types and defaults")
    cf.add_argument("experiment", help="an experiment name (see `meanfield list`)")
    ex = sub.add_parser("export", help="save a two-layer run's network as a plain torch file "
                                        "(nn.Sequential in the data's own units; loads without meanfield)")
    ex.add_argument("run_dir", type=_path, help="the run directory whose network is exported")
    ex.add_argument("--out", type=_path, required=True, help="the torch file to write, e.g. model.pt")
    ex.add_argument("--snapshot", type=int, default=-1,
                    help="which snapshot, Python indexing (default -1: the last)")
    ex.add_argument("--replica", type=int, default=0, help="which replica of the run (default 0)")
    # ---- sweeps (meanfield.sweep) ----
    sw = sub.add_parser("sweep", help="run an experiment over a grid of config values (Dask)")
    sw.add_argument("experiment", help="an experiment name (see `meanfield list`)")
    sw.add_argument("--grid", dest="grids", action="append", default=[], metavar="KEY=V1,V2|A:B[:STEP]",
                    help="a grid axis (repeatable): values 'N=100,200,400' (';' between values that hold "
                         "commas), or an integer range 'seed=0:8' or 'N=100:1000:100' (A:B:STEP, B excluded, "
                         "as Python's range)")
    sw.add_argument("--config", type=Path, help="TOML file of config keys")
    sw.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                    help="override a config key for every point (repeatable)")
    sw.add_argument("--out", type=_path, required=True, help="sweep directory (re-use it to restart)")
    sw.add_argument("--scheduler", help="address of a running Dask scheduler, e.g. tcp://HOST:8786")
    sw.add_argument("--workers", type=int, help="LocalCluster worker processes (default: one per "
                    "core; 0 runs the points one after another in this process; refused beyond what the "
                    "machine's memory holds)")
    sw.add_argument("--replicas-for", dest="replicas_for", metavar="seed",
                    help="run the seeds of each grid point as replicas of one run (one tensor)")
    sw.add_argument("--metric", default="risk", help="metrics.csv column summarised, checked before the "
                    "sweep starts; summary.csv calls its columns final_METRIC, best_METRIC (default: risk)")
    sw.add_argument("--max-points", dest="max_points", type=int, default=None,
                    help="refuse grids of more points than this (default: 100000)")
    sw.add_argument("--no-progress", action="store_true",
                    help="do not draw the progress bar over grid points")
    return p


def _cmd_run(args):
    from . import distributed, runner

    cfg = runner.build_config(args.experiment, args.config, args.sets)
    # shards > 1: every rank of torchrun/srun runs this; without a launcher it spawns them
    res = runner.run(args.experiment, cfg, args.out, progress=not args.no_progress)
    if distributed.is_writer():
        print(_summary(args.experiment, res.rows, res.seconds, args.out))


def _summary(name, rows, secs, out) -> str:
    """One line after a run: the last recorded risk and time when the experiment has them."""
    last = rows[-1] if rows else {}
    if "risk" in last and "t" in last:
        return (f"{name}: final risk {last['risk']:.6g} at t = {last['t']:.6g} "
                f"({secs:.1f} s) -> {out}")
    return f"{name}: done ({secs:.1f} s) -> {out}"


def _cmd_resume(args):
    from . import distributed, io, runner

    res = runner.resume(args.run_dir, args.sets, progress=not args.no_progress)
    if distributed.is_writer():
        print(_summary(io.load_run_config(args.run_dir)["experiment"], res.rows, res.seconds,
                       args.run_dir))


def _cmd_plot(args):
    from . import runner, sweep_report

    if sweep_report.is_sweep_dir(args.run_dir):
        paths = sweep_report.plot_sweep(args.run_dir)
    else:
        coords = [c.strip() for c in args.coords.split(",")] if args.coords else None
        paths = runner.plot(args.run_dir, coords)
    for p in paths:
        print(p)


def _cmd_show(args):
    from . import runner, sweep_report

    if sweep_report.is_sweep_dir(args.run_dir):
        print(sweep_report.describe_sweep(args.run_dir))
    else:
        print(runner.describe(args.run_dir))


def _cmd_animate(args):
    from .movies import write_movie

    print(write_movie(args.run_dir, args.out, what=args.what, fps=args.fps, frames=args.frames,
                      dpi=args.dpi, progress=not args.no_progress))


def _cmd_list(args):
    from .experiments import get_experiment, names, summary_line, views_of

    for name in names():
        exp = get_experiment(name)
        views = views_of(exp)
        print(f"{name:20s} {summary_line(exp)}" + (f"  [movies: {', '.join(views)}]" if views else ""))


def _cmd_export(args):
    from .runs import load_run

    run = load_run(args.run_dir)
    i = run.snapshot_index(args.snapshot, None)
    out = run.export(args.out, i, replica=args.replica)
    print(f"{run.experiment}: step {int(run.steps[i])} (t = {run.times[i]:.6g}) of {args.run_dir} "
          f"-> {out} (torch.load(path, weights_only=True); README: Your network, your data)")


def _cmd_config(args):
    """Every key of the experiment's Config: type, default, its meaning (``Config.key_help``)
    and the presets that change it."""
    import dataclasses

    from .experiments import get_experiment

    exp = get_experiment(args.experiment)
    types = exp.Config.field_types()
    meaning = exp.Config.key_help() if hasattr(exp.Config, "key_help") else {}
    presets = {f"{k}={v}": vals for k, table in exp.Config._presets.items()
               for v, vals in table.items()}
    print((exp.__doc__ or exp.NAME).strip().splitlines()[0])
    for f in dataclasses.fields(exp.Config):
        extra = "; ".join(f"{name}: {vals[f.name]!r}" for name, vals in presets.items()
                          if f.name in vals)
        print(f"  {f.name:18s} {types[f.name].__name__:5s} {f.default!r:12s} {meaning.get(f.name, '')}"
              + (f"  ({extra})" if extra else ""))
    print("keys that may change on resume: " + (", ".join(exp.Config.resume_mutable) or "none")
          + ("" if "steps" not in exp.Config.resume_mutable else " (steps only upwards)"))


def _cmd_sweep(args):
    from . import sweep

    max_points = sweep.MAX_POINTS if args.max_points is None else args.max_points
    if max_points < 1:
        raise ConfigError(f"--max-points must be >= 1, got {max_points}")
    grid = sweep.parse_grid(args.grids, max_points=max_points)
    if not grid:
        raise ConfigError("sweep needs at least one --grid KEY=VALUES")
    # validate everything before a cluster starts: the points, --workers, --metric
    jobs = sweep.plan(args.experiment, grid, sets=args.sets, config_file=args.config,
                      replicas_for=args.replicas_for, max_points=max_points)
    if args.workers is not None and args.workers < 0:
        raise ConfigError(f"--workers must be >= 0, got {args.workers}")
    if args.workers != 0 and not args.scheduler:
        sweep.check_workers(args.workers, jobs)
    sweep.check_metric(args.experiment, jobs[0].config, args.metric)
    kw = dict(sets=args.sets, config_file=args.config, replicas_for=args.replicas_for,
              metric=args.metric, progress=not args.no_progress, max_points=max_points, check=False)
    if args.workers == 0 and not args.scheduler:
        rows = sweep.run_sweep(args.experiment, grid, args.out, **kw)
    else:
        try:
            client = sweep.dask_client(args.scheduler, args.workers)
        except sweep.ClusterError as e:
            print(f"meanfield: error: {_one_line(e)}", file=sys.stderr)
            return EXIT_POINTS_FAILED
        try:
            rows = sweep.run_sweep(args.experiment, grid, args.out, executor=client.get_executor(), **kw)
        finally:
            sweep.close_client(client)
    failed = [r for r in rows if r["status"] != "ok"]
    print(f"{args.experiment} sweep: {len(rows) - len(failed)} of {len(rows)} runs ok"
          + (f", {len(failed)} failed" if failed else "") + f" -> {Path(args.out) / sweep.SUMMARY}")
    return EXIT_POINTS_FAILED if failed else 0


def main(argv=None) -> int:
    """Run the ``meanfield`` command on ``argv`` (default ``sys.argv[1:]``); return the exit status.

    0 on success; 2 (``EXIT_USAGE``) on a ``ConfigError`` (a bad argument or config, a
    corrupted or locked run directory, a config that cannot fit) or a refused file operation,
    printed as one ``meanfield: error: ...`` line on stderr; 3 (``EXIT_DIVERGED``) on a
    ``DivergenceError``; 4 (``EXIT_SHARD_LOST``) when a sharded run loses a rank; 5
    (``EXIT_POINTS_FAILED``) when a sweep ends with failed points or its local Dask cluster
    cannot start its workers (one line, nothing written); 130 on Ctrl-C (also in the first
    seconds, while imports run: :func:`guard_startup`) and 143 on
    SIGTERM (both release the run directory's lock and stop a sweep's Dask cluster first).  ``--help`` exits through ``SystemExit(0)`` (argparse).  Sets
    ``MPLBACKEND=Agg`` unless already set.
    """
    if signal.getsignal(signal.SIGINT) is _interrupted_while_starting:
        signal.signal(signal.SIGINT, signal.default_int_handler)     # Ctrl-C raises from here on
    os.environ.setdefault("MPLBACKEND", "Agg")
    from .errors import ShardError

    args, previous_term = None, None
    if threading.current_thread() is threading.main_thread():
        previous_term = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        args = _parser().parse_args(argv)
        command = {"run": _cmd_run, "resume": _cmd_resume, "plot": _cmd_plot, "show": _cmd_show,
                "animate": _cmd_animate, "list": _cmd_list, "config": _cmd_config,
                   "sweep": _cmd_sweep, "export": _cmd_export}[args.command]
        from .threads import for_command

        with for_command():     # torch's threads: each experiment's Plan.threads chooses
            code = command(args)
    except ConfigError as e:
        print(f"meanfield: error: {_one_line(e)}", file=sys.stderr)
        return EXIT_USAGE
    except DivergenceError as e:
        print(f"meanfield: diverged: {_one_line(e)} ({_divergence_hint(e)})", file=sys.stderr)
        return EXIT_DIVERGED
    except ShardError as e:
        where = getattr(args, "out", None) if getattr(args, "command", None) == "run" else getattr(args, "run_dir", None)
        print(f"meanfield: {_one_line(e)} (last checkpoint kept; continue with "
              f"`meanfield resume {where or 'DIR'}`)", file=sys.stderr)
        return EXIT_SHARD_LOST
    except OSError as e:      # the system refused a file operation (disk full, permissions …)
        where = f" ({e.filename})" if getattr(e, "filename", None) else ""
        print(f"meanfield: error: {e.strerror or type(e).__name__}{where}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt as e:
        print(f"meanfield: {'terminated' if isinstance(e, _Terminated) else 'interrupted'} "
              f"({_continue_hint(args)})", file=sys.stderr)
        return 143 if isinstance(e, _Terminated) else 130
    finally:
        if previous_term is not None:
            signal.signal(signal.SIGTERM, previous_term)
    return code or 0


def guard_startup() -> None:
    """Ctrl-C in the first seconds of a ``meanfield`` command, while it imports torch and the
    experiments (before :func:`main` runs), prints one line and exits with status 130 instead
    of a traceback.  ``meanfield/__init__`` calls this first; it acts only in a process
    launched as the command (the console script or ``python -m meanfield``), in the main
    thread, over Python's own SIGINT handler, and :func:`main` puts that handler back."""
    argv = list(getattr(sys, "orig_argv", None) or [])[1:]
    while argv and argv[0].startswith("-") and argv[0] not in ("-m", "-c"):
        argv.pop(0)                                  # interpreter options (-u, -B, -X …)
    launched = (argv[:2] == ["-m", "meanfield"]
                or (bool(argv) and Path(argv[0]).name in ("meanfield", "meanfield.exe", "meanfield-script.py")))
    if (launched and threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGINT) is signal.default_int_handler):
        signal.signal(signal.SIGINT, _interrupted_while_starting)


def _interrupted_while_starting(signum, frame):
    sys.stderr.write("meanfield: interrupted (nothing was started)\n")
    sys.stderr.flush()
    os._exit(130)


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that locks, clusters and progress bars are released."""


def _on_sigterm(signum, frame):
    raise _Terminated()


def _continue_hint(args) -> str:
    """How to continue the interrupted command."""
    if args is None:
        return "nothing was started"
    if args.command == "sweep":
        return (f"run the same `meanfield sweep ... --out {args.out}` again to continue: finished "
                "points are kept, unfinished ones resume from their checkpoints")
    if args.command in ("run", "resume"):
        where = args.out if args.command == "run" else args.run_dir
        return f"continue from the last checkpoint with `meanfield resume {where}`"
    return "nothing was changed"


def _one_line(e) -> str:
    return " ".join(str(e).split())


def _divergence_hint(e) -> str:
    """The command that recovers from a divergence, with half the run's dt: where the
    experiment's resume rule allows dt, ``meanfield resume DIR --set dt=…`` (from the last
    checkpoint, or from step 0 when none was written); else a new run in a new directory."""
    run_dir = getattr(e, "run_dir", None)
    if run_dir is None:
        return "lower dt"
    prog = getattr(e, "checkpoint", None)
    from . import io, runner

    try:
        rec = io.load_run_config(run_dir)
        from .experiments import get_experiment

        dt_ok = "dt" in get_experiment(rec["experiment"]).Config.resume_mutable
        half = f"{float(rec['config']['dt']) / 2:.3g}"
    except (ConfigError, KeyError, TypeError, ValueError):
        dt_ok, half = False, "..."
    kept = (f"last checkpoint kept: {runner.describe_progress(prog)}" if prog is not None
            else "no checkpoint was written")
    if dt_ok:
        again = "continue" if prog is not None else "start it again from step 0"
        return f"{kept}; {again} with a smaller step: meanfield resume {run_dir} --set dt={half}"
    return (f"{kept}; dt cannot change on resume here: start again in a new directory with a "
            f"smaller step (--set dt={half})")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
