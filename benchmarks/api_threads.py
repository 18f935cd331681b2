"""The Python API against the command line on the same ``dataset`` job, under a background load.

    python -m benchmarks.api_threads [--steps 2000] [--default-steps 200] [--load 2] [--json FILE]

The job is the ``dataset`` experiment's default (scikit-learn's breast_cancer, 455 training
points of d = 30, logistic loss, N = 100 ReLU units, population GD with dt = 2, float32).
Every row runs in a fresh Python process (so that meanfield's thread choice on import
applies) with ``OMP_NUM_THREADS``, ``MKL_NUM_THREADS`` and ``MEANFIELD_THREADS`` removed
from its environment, while ``--load`` busy processes (pure Python loops) keep the cores
busy, as other users' jobs do on a shared machine:

* ``cli``: ``meanfield run dataset --set steps=S`` — the run's own seconds (the summary
  line: recording every 20 steps, checkpoints and results included; start-up and figures
  not) and the command's wall time;
* ``api``: ``import meanfield as mf`` and ``mf.gradient_flow(task, dt).run(state, S)`` on the
  same standardised data and initial particles (``meanfield.experiments.dataset``'s
  ``prepare``, ``tasks``, ``initial_theta``), with meanfield's default threads
  (``meanfield.threads``: one);
* ``api-torch-default``: the same after ``mf.set_threads(0)`` — torch's default thread count,
  what the API used before it chose — for ``--default-steps`` steps (it is slow).

ms/step is seconds ÷ steps; "÷ cli" is a row's ms/step over the cli row's.  ``final risk``
(the training risk at step S) is the same number for cli and api: the same flow.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .common import device_info, machine, print_table, write_json

CLEAN = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "MEANFIELD_THREADS")

API = r"""
import json, sys, time
import torch
import meanfield as mf
from meanfield.experiments import dataset
steps, torch_default = int(sys.argv[1]), sys.argv[2] == "1"
if torch_default:
    mf.set_threads(0)
cfg = dataset.Config.build(None, [f"steps={steps}"])
prep = dataset.prepare(cfg)
train, _ = dataset.tasks(cfg, prep)
gen = torch.Generator().manual_seed(cfg.seed)
theta = dataset.initial_theta(cfg, train.unit, gen).to(torch.float32)
flow = mf.gradient_flow(train, dt=cfg.dt)
state = flow.init(theta, generator=gen)
t0 = time.perf_counter()
state = flow.run(state, steps)
seconds = time.perf_counter() - t0
print(json.dumps({"seconds": seconds, "threads": torch.get_num_threads(),
                  "final_risk": float(train.risk(state.theta)[0])}))
"""

COLUMNS = [("row", "row", "s"), ("threads", "threads", "d"), ("steps", "steps", "d"),
           ("ms/step", "ms_per_step", ".3g"), ("÷ cli", "vs_cli", ".2f"),
           ("process wall s", "wall_s", ".3g"), ("final risk", "final_risk", ".6g")]


def _env() -> dict:
    return {k: v for k, v in os.environ.items() if k not in CLEAN}


def busy(n: int) -> list:
    """n background processes, each a pure Python loop on one core."""
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def api_row(steps: int, torch_default: bool) -> dict:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", API, str(steps), "1" if torch_default else "0"],
                          capture_output=True, text=True, env=_env(), timeout=3600)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"the API job failed: {proc.stderr.strip()[-500:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"row": "api-torch-default" if torch_default else "api", "steps": steps,
            "threads": out["threads"], "seconds": out["seconds"],
            "ms_per_step": 1e3 * out["seconds"] / steps, "wall_s": wall,
            "final_risk": out["final_risk"]}


def cli_row(steps: int, work: Path) -> dict:
    from meanfield import io

    out = work / f"cli-{steps}"
    cmd = [sys.executable, "-m", "meanfield", "run", "dataset", "--set", f"steps={steps}",
           "--out", str(out), "--no-progress"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=3600)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"the command failed: {proc.stderr.strip()[-500:]}")
    m = re.search(r"\(([0-9.]+) s\)", proc.stdout)
    seconds = float(m.group(1))
    risk = io.read_metrics(out / io.METRICS)["risk"][-1]
    return {"row": "cli", "steps": steps, "threads": 1, "seconds": seconds,
            "ms_per_step": 1e3 * seconds / steps, "wall_s": wall, "final_risk": float(risk),
            "command": " ".join(["meanfield"] + cmd[3:-3])}


def run(steps: int, default_steps: int, load: int, log=print) -> list[dict]:
    """The three rows (module docstring), under ``load`` busy processes."""
    procs = busy(load)
    try:
        time.sleep(0.5 if load else 0)
        with tempfile.TemporaryDirectory() as tmp:
            rows = []
            for make in (lambda: cli_row(steps, Path(tmp)), lambda: api_row(steps, False),
                         lambda: api_row(default_steps, True)):
                rows.append(make())
                log(f"{rows[-1]['row']}: {rows[-1]['ms_per_step']:.3g} ms/step")
    finally:
        for p in procs:
            p.kill()
            p.wait()
    cli = rows[0]["ms_per_step"]
    for r in rows:
        r["vs_cli"] = r["ms_per_step"] / cli
        r["load"] = load
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.api_threads",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=2000, help="steps of the cli and api rows")
    p.add_argument("--default-steps", type=int, default=200,
                   help="steps of the api-torch-default row (slow under load)")
    p.add_argument("--load", type=int, default=2, help="busy background processes")
    p.add_argument("--json", default=None)
    p.add_argument("--quiet", action="store_true")
    a = p.parse_args(argv)
    info = machine()
    info.update(device_info("cpu"))
    log = (lambda *_: None) if a.quiet else (lambda s: print(s, file=sys.stderr, flush=True))
    rows = run(a.steps, a.default_steps, a.load, log=log)
    info["loadavg_at_end"] = os.getloadavg()
    print_table(rows, COLUMNS)
    api = next(r for r in rows if r["row"] == "api")
    print(f"api / cli = {api['vs_cli']:.2f} with {a.load} busy processes (goal: within 1.5×)")
    payload = {"benchmark": "api_threads", "machine": info, "results": rows}
    if a.json:
        write_json(a.json, payload)
    return payload


if __name__ == "__main__":
    main()
