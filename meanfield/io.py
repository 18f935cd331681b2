"""Run directories (DESIGN.md §3): atomic writes, checkpoints, loading.

    DIR/config.json      resolved config + experiment + package version
    DIR/metrics.csv      one row per recorded step (step, t, risk, …)
    DIR/particles.npz    t [K], theta [K, N, D] (or [K, B, N, D] with replicas), param_names [D],
                         weights [N] when not uniform, task arrays (teacher_theta, …)
    DIR/checkpoint.pt    the latest full state; resume continues from it bit for bit
    DIR/figures/*.png

Every file is written to a temporary name in DIR and renamed into place, so a reader (or
a resume after a crash) never sees a half-written file.
"""
from __future__ import annotations

import csv
import io as _io
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from . import __version__
from .errors import ConfigError

CONFIG, METRICS, PARTICLES, CHECKPOINT, FIGURES = (
    "config.json", "metrics.csv", "particles.npz", "checkpoint.pt", "figures")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically: a temporary ``.NAME.*.tmp`` in the same
    directory, fsync, then ``os.replace``; the temporary is removed if anything fails."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def remove_stale_temporaries(directory) -> int:
    """Delete temporary files left by a writer that was killed mid-write; returns the count."""
    n = 0
    for p in Path(directory).glob(".*.tmp"):
        p.unlink(missing_ok=True)
        n += 1
    return n


def write_json(path: Path, obj) -> None:
    """``obj`` as indented JSON (numpy scalars as Python numbers), written atomically."""
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False, default=_json_default)
                              + "\n").encode())


def _json_default(o):
    if isinstance(o, float):
        return str(o)
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def write_metrics(path: Path, rows: list[dict]) -> None:
    """A CSV (metrics.csv, a sweep's summary.csv) from a list of row dicts, columns in
    first-seen order, floats by ``repr`` (round-trip exact), written atomically."""
    cols: list[str] = []
    for r in rows:
        cols.extend(k for k in r if k not in cols)
    buf = _io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: (repr(v) if isinstance(v, float) else v) for k, v in r.items()})
    atomic_write_bytes(path, buf.getvalue().encode())


def read_metrics(path: Path) -> dict[str, np.ndarray]:
    """metrics.csv as a dict of float arrays, one per column."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return {}
    return {k: np.array([float(r[k]) if r[k] not in ("", None) else np.nan for r in rows])
            for k in rows[0]}


def write_npz(path: Path, arrays: dict) -> None:
    """{name: array} as a compressed ``.npz`` (``np.savez_compressed``), written atomically."""
    buf = _io.BytesIO()
    np.savez_compressed(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())


def save_checkpoint(path: Path, payload: dict) -> None:
    """``payload`` (tensors, generator states, plain data) by ``torch.save``, written atomically."""
    buf = _io.BytesIO()
    torch.save(payload, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(path: Path) -> dict:
    """The payload of :func:`save_checkpoint`, loaded onto the CPU (``weights_only=False``:
    load only checkpoints you trust); ``ConfigError`` when the file cannot be read."""
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:
        raise ConfigError(f"checkpoint {path} is unreadable or corrupted ({type(e).__name__})") from None


def prepare_out_dir(out) -> Path:
    """Check that ``out`` can hold a new run: absent, or an empty directory.

    Raises ConfigError (nothing is created) if it holds another run or other files."""
    out = Path(out)
    if out.exists():
        if not out.is_dir():
            raise ConfigError(f"--out {out} exists and is not a directory")
        if (out / CONFIG).exists():
            raise ConfigError(f"--out {out} already holds a run (use `meanfield resume {out}` "
                              "or choose another directory)")
        if any(out.iterdir()):
            raise ConfigError(f"--out {out} is not empty")
    return out


def start_run_dir(out, record: dict) -> Path:
    """Create a new run directory: config.json first (so that a run killed at any later
    moment is resumable), then figures/."""
    out = prepare_out_dir(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / CONFIG, record)
    (out / FIGURES).mkdir(exist_ok=True)
    return out


def load_run_config(run_dir) -> dict:
    """config.json of a run directory, or ConfigError naming what is missing/corrupted."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ConfigError(f"run directory {run_dir} does not exist")
    p = run_dir / CONFIG
    if not p.exists():
        raise ConfigError(f"{run_dir} is not a run directory (no {CONFIG})")
    try:
        cfg = json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ConfigError(f"{p} is corrupted (not valid JSON)") from None
    if not isinstance(cfg, dict) or "experiment" not in cfg or "config" not in cfg:
        raise ConfigError(f"{p} is not a meanfield run config")
    return cfg


def run_record(experiment: str, config: dict, extra: dict | None = None) -> dict:
    """The content of config.json: {"experiment", "meanfield_version", "torch_version",
    "config": the resolved config dict, **extra}."""
    return {"experiment": experiment, "meanfield_version": __version__,
            "torch_version": torch.__version__, "config": config, **(extra or {})}
