"""Rendering speed of ``meanfield animate``: seconds for a movie of K frames of N particles.

    python -m benchmarks.movies                      # 100 frames, 2000 particles, every view
    python -m benchmarks.movies --n 200 --frames 10 --quiet --json /tmp/m.json   # a smoke

Runs teacher-student with N particles for K·2 steps with a snapshot every 2 (K + 1
snapshots; population GD, d = 10), then renders each view of ``meanfield.movies`` for
teacher-student (cloud, plane) to a GIF of K frames at the CLI's default 80 dpi, timing each
render (``write_movie``, the file written included) ``--repeat`` times.  The goal:
a 100-frame movie of 2000 particles in < 30 s on 2 cores.
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from .common import machine, print_table, summarise, write_json


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.movies", description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=2000, help="particles (default 2000)")
    p.add_argument("--frames", type=int, default=100, help="movie frames (default 100)")
    p.add_argument("--dpi", type=float, default=80, help="resolution (default 80, the CLI's)")
    p.add_argument("--views", nargs="+", default=["cloud", "plane"], help="views to time")
    p.add_argument("--repeat", type=int, default=2, help="timed renders per view (default 2)")
    p.add_argument("--json", type=Path, default=Path("benchmarks/results/movies.json"),
                   help="where to write the results")
    p.add_argument("--quiet", action="store_true", help="no table")
    args = p.parse_args(argv)

    from meanfield import runner
    from meanfield.movies import write_movie
    from PIL import Image

    tmp = Path(tempfile.mkdtemp(prefix="meanfield-movies-bench-"))
    rows = []
    try:
        run_dir = tmp / "run"
        cfg = runner.build_config("teacher-student", sets=[
            f"N={args.n}", f"steps={2 * args.frames}", "save_every=2", "log_every=2",
            f"checkpoint_every={2 * args.frames}"])
        t0 = time.perf_counter()
        runner.run("teacher-student", cfg, run_dir, progress=False)
        sim_s = time.perf_counter() - t0
        for view in args.views:
            times = []
            for r in range(args.repeat):
                out = tmp / f"{view}{r}.gif"
                t0 = time.perf_counter()
                write_movie(run_dir, out, what=view, frames=args.frames, dpi=args.dpi, progress=False)
                times.append(time.perf_counter() - t0)
            with Image.open(out) as im:
                n_frames = im.n_frames
            rows.append({"view": view, "N": args.n, "frames": n_frames, "dpi": args.dpi,
                         "gif_kb": out.stat().st_size / 1024, **summarise(times),
                         "s_per_frame": summarise(times)["median_s"] / n_frames,
                         "goal_s": 30.0, "meets_goal": summarise(times)["median_s"] < 30.0})
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    payload = {"benchmark": "movies", "machine": machine(), "simulation_s": sim_s, "results": rows}
    write_json(args.json, payload)
    if not args.quiet:
        print_table(rows, [("view", "view", "s"), ("N", "N", "d"), ("frames", "frames", "d"),
                           ("median s", "median_s", ".2f"), ("s/frame", "s_per_frame", ".3f"),
                           ("GIF KiB", "gif_kb", ".0f"), ("< 30 s", "meets_goal", "")])
    return payload


if __name__ == "__main__":
    main()
