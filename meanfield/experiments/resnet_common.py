"""Shared pieces of the ResNet experiments: a resumable sweep of training jobs, initial
particle laws, fitted rates with bootstrap intervals, and a thread-count guard.

A sweep runs named jobs one after another into one run directory (DESIGN.md §3).  Each job
trains a :class:`~meanfield.dynamics.ConditionalOTFlow` (or any object with ``step`` and a
state with ``step``/``t``/``theta``/``state_dict``) for a fixed number of steps and returns
a small picklable result.  The checkpoint holds the results of finished jobs, the metrics
rows so far and the full state of the job in progress (generator included), written
atomically every ``checkpoint_every`` steps and after each job, so ``meanfield resume DIR``
continues bit for bit: finished jobs are not rerun, the interrupted one continues from its
last checkpoint, and every job is a deterministic function of its seeds.
"""
from __future__ import annotations

import contextlib
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .. import io
from ..errors import ConfigError

RESULTS = "results.json"
# keys a resumed sweep may change (they do not change any recorded number)
RESUME_MUTABLE = ("checkpoint_every", "threads")


@contextlib.contextmanager
def torch_threads(n: int):
    """Run with ``n`` torch intra-op threads (0: leave torch's setting), restored afterwards.

    The per-layer tensors of these experiments are small; on the shared 2-core machine one
    thread measured 50× faster per step than two (0.55 s against 28 s for L = 128, M = 512,
    B = 4, n = 64, float32) because the second thread waits on busy cores."""
    old = torch.get_num_threads()
    if n > 0:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def parse_ints(name: str, spec: str) -> list[int]:
    """"2,4,8" → [2, 4, 8] (each ≥ 1, increasing); ConfigError naming ``name`` otherwise."""
    try:
        vals = [int(x) for x in str(spec).split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"{name} must be a comma-separated list of integers, got {spec!r}") from None
    if not vals or any(v < 1 for v in vals) or sorted(set(vals)) != vals:
        raise ConfigError(f"{name} must list increasing integers >= 1, got {spec!r}")
    return vals


def parse_floats(name: str, spec: str, *, allow_inf: bool = False) -> list[float]:
    """"0.5,1.5,inf" → [0.5, 1.5, inf] (each > 0); ConfigError naming ``name`` otherwise."""
    try:
        vals = [float(x) for x in str(spec).split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"{name} must be a comma-separated list of numbers, got {spec!r}") from None
    if not vals or any(not (v > 0) or (math.isinf(v) and not allow_inf) or math.isnan(v) for v in vals):
        raise ConfigError(f"{name} must list numbers > 0{' (or inf)' if allow_inf else ''}, got {spec!r}")
    return vals


def unit_init(B: int, M: int, D: int, *, generator: torch.Generator, u_std: float, w_std: float,
              b_std: float, bias: bool = True, layers: int | None = None) -> torch.Tensor:
    """M i.i.d. residual units per replica: u ~ N(0, u_std² I_D), w ~ N(0, w_std²/D I_D),
    b ~ N(0, b_std²); [B, M, P], or [B, layers, M, P] (independent per layer) when ``layers``."""
    shape = (B, M) if layers is None else (B, layers, M)
    u = torch.randn(*shape, D, generator=generator, dtype=torch.float64) * u_std
    w = torch.randn(*shape, D, generator=generator, dtype=torch.float64) * (w_std / math.sqrt(D))
    cols = [u, w]
    if bias:
        cols.append(torch.randn(*shape, 1, generator=generator, dtype=torch.float64) * b_std)
    return torch.cat(cols, -1)


def fit_slope(x, errors, *, n_resamples: int = 2000, seed: int = 0) -> dict:
    """Fitted rate of errors [R, K] (R seeds, K sizes x [K]): the slope of log(mean over seeds)
    against log x (``scipy.stats.linregress``), a 95 % percentile bootstrap interval over the
    seeds (``scipy.stats.bootstrap``) and the regression's own 95 % t-interval."""
    from scipy import stats

    x = np.asarray(x, dtype=float)
    E = np.asarray(errors, dtype=float)
    lx = np.log(x)

    xc = lx - lx.mean()

    def slope(idx, axis=-1):
        # least-squares slope of log(mean over the resampled seeds) on log x, vectorised
        ly = np.log(E[np.asarray(idx, dtype=int)].mean(-2))                  # (..., K)
        return (ly * xc).sum(-1) / (xc * xc).sum()

    reg = stats.linregress(lx, np.log(E.mean(0)))
    tq = stats.t.ppf(0.975, len(x) - 2) if len(x) > 2 else float("nan")
    out = {"slope": float(reg.slope), "intercept": float(reg.intercept),
           "t_low": float(reg.slope - tq * reg.stderr), "t_high": float(reg.slope + tq * reg.stderr),
           "boot_low": float("nan"), "boot_high": float("nan"), "seeds": int(E.shape[0]),
           "x": x.tolist(), "mean_error": E.mean(0).tolist()}
    if E.shape[0] >= 2:
        res = stats.bootstrap((np.arange(E.shape[0]),), slope, vectorized=True, n_resamples=n_resamples,
                              method="percentile", confidence_level=0.95,
                              random_state=np.random.default_rng(seed))
        out["boot_low"] = float(res.confidence_interval.low)
        out["boot_high"] = float(res.confidence_interval.high)
    return out


class Sweep:
    """Named training jobs run in order into one run directory, resumable (module docstring)."""

    def __init__(self, out, name: str, cfg, *, checkpoint: dict | None, progress: bool, total_steps: int):
        self.out = Path(out)
        self.name = name
        self.cfg = cfg
        io.remove_stale_temporaries(self.out)
        if checkpoint is None:
            self.done: dict = {}
            self.rows: list[dict] = []
            self.current = None
        else:
            old, new = checkpoint["config"], cfg.to_dict()
            changed = sorted(k for k in set(old) | set(new)
                             if old.get(k) != new.get(k) and k not in RESUME_MUTABLE)
            if checkpoint.get("finished"):
                raise ConfigError(f"{self.out} holds a finished {name} sweep; its jobs cannot be "
                                  "extended (start a new run)")
            if changed:
                # the CLI has already written the rejected keys into config.json: restore it
                rec = io.load_run_config(self.out)
                rec["config"] = old
                io.write_json(self.out / io.CONFIG, rec)
                raise ConfigError(f"a resumed {name} sweep keeps its config; changed keys: {', '.join(changed)}")
            self.done = dict(checkpoint["done"])
            self.rows = list(checkpoint["rows"])
            self.current = checkpoint.get("current")
        self.started = time.perf_counter()
        self.bar = tqdm(total=total_steps, desc=name, disable=None if progress else True,
                        dynamic_ncols=True, leave=False)

    def _save(self, current=None, finished=False):
        step = self.cfg.steps if finished else (current["state"]["step"] if current else 0)
        io.save_checkpoint(self.out / io.CHECKPOINT, {
            "experiment": self.name, "config": self.cfg.to_dict(), "state": {"step": step},
            "done": self.done, "rows": self.rows, "current": current, "finished": finished})
        io.write_metrics(self.out / io.METRICS, self.rows + (current["rows"] if current else []))

    def job(self, key: str, columns: dict, build, *, steps: int, log_every: int, measure, finish,
            save_every: int | None = None, checkpoint_every: int | None = None, snap_all: bool = False):
        """Run (or recall) job ``key``.

        build() → (flow, state); measure(flow, state) → dict of metrics (risk first);
        finish(flow, state, rows, snaps) → the job's result (picklable, small).
        Rows get ``columns``, ``step``, ``t`` and the measures; snapshots (k, t, θ of replica 0,
        or of all replicas with ``snap_all``) every ``save_every`` steps and at the end."""
        if key in self.done:
            self.bar.update(steps)
            return self.done[key]
        flow, state = build()
        rows, snaps = [], []
        if self.current is not None and self.current["key"] == key:
            state = type(state).from_state_dict(self.current["state"])
            rows, snaps = list(self.current["rows"]), list(self.current["snaps"])
            self.bar.update(state.step)
        every = checkpoint_every or self.cfg.checkpoint_every

        def record(st):
            measured = measure(flow, st)
            rows.append({**columns, "step": st.step, "t": st.t, **measured})
            for k_, v in measured.items():
                if isinstance(v, float) and not math.isfinite(v):
                    from ..errors import DivergenceError

                    raise DivergenceError(f"{key}: step {st.step}: non-finite {k_}; the step size is "
                                          "likely too large")

        while state.step < steps:
            if state.step % log_every == 0:
                record(state)
            if save_every and state.step % save_every == 0:
                snaps.append((state.step, state.t, (state.theta if snap_all else state.theta[0]).detach().cpu().clone()))
            state, _ = flow.step(state)
            self.bar.update(1)
            if state.step % every == 0 and state.step < steps:
                self._save({"key": key, "state": state.state_dict(), "rows": rows, "snaps": snaps})
        if not rows or rows[-1]["step"] != state.step:
            record(state)
        if save_every and (not snaps or snaps[-1][0] != state.step):
            snaps.append((state.step, state.t, (state.theta if snap_all else state.theta[0]).detach().cpu().clone()))
        result = finish(flow, state, rows, snaps)
        self.done[key] = result
        self.rows.extend(rows)
        self.current = None
        self._save()
        return result

    def finish(self, arrays: dict, results: dict):
        """particles.npz, results.json, metrics.csv and the finished checkpoint."""
        self.bar.close()
        io.write_npz(self.out / io.PARTICLES, arrays)
        io.atomic_write_bytes(self.out / RESULTS, (json.dumps(results, indent=2, default=_jsonable) + "\n").encode())
        self._save(finished=True)
        return time.perf_counter() - self.started


def _jsonable(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def read_results(run_dir) -> dict:
    """The ``results.json`` of a finished ResNet run directory, as a dict; ``ConfigError``
    when it is missing (the run has not finished)."""
    p = Path(run_dir) / RESULTS
    if not p.exists():
        raise ConfigError(f"{run_dir} has no {RESULTS} yet (the run has not finished)")
    return json.loads(p.read_text())


def snapshots_arrays(snaps, layer, param_names, extra: dict) -> dict:
    """particles.npz arrays from snapshots [(k, t, θ [N, P])]: t [K], theta [K, N, P],
    layer [N], param_names [P], plus ``extra``."""
    return {"t": np.array([t for _, t, _ in snaps]),
            "theta": torch.stack([th for _, _, th in snaps]).numpy(),
            "layer": np.asarray(layer, dtype=np.float64), "param_names": np.array(param_names), **extra}


def plt():
    """``matplotlib.pyplot``, imported on first use with a non-interactive backend (Agg)
    unless one is already set (``plotting._plt``)."""
    from ..plotting import _plt

    return _plt()
