"""Run directories (docs/design.md §3): atomic writes, checksums, locks, checkpoints, loading.

    DIR/config.json      resolved config + experiment + package version
    DIR/metrics.csv      one row per recorded step (step, t, risk, …)
    DIR/particles.npz    snapshots (t [K], step [K], theta [K, (B,) N, D] — see
                         ``meanfield.runner``), param_names [D], weights, task arrays
    DIR/checkpoint.pt    the latest full state; resume continues from it bit for bit
    DIR/figures/*.png
    DIR/.meanfield.lock  held (``filelock``) by the process that writes the run;
    DIR/.meanfield.owner its pid, host and command, for the message a second writer gets

Every file is written to a temporary name in DIR and renamed into place, so a reader (or
a resume after a crash) never sees a half-written file.  Checkpoints and every ``.npz``
carry a SHA-256 checksum of their payload (a header line of the checkpoint; an array
``__checksum__`` inside the npz); :func:`load_checkpoint` and :func:`verify_npz` raise
``ConfigError("... corrupted ...")`` on a mismatch, so a flipped byte is never resumed from.
"""
from __future__ import annotations

import csv
import hashlib
import io as _io
import json
import math
import os
import socket
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from .version import __version__
from .errors import ConfigError

CONFIG, METRICS, PARTICLES, CHECKPOINT, FIGURES = (
    "config.json", "metrics.csv", "particles.npz", "checkpoint.pt", "figures")
LOCK, OWNER = ".meanfield.lock", ".meanfield.owner"
CHECKPOINT_MAGIC = b"MEANFIELD-CHECKPOINT 2 sha256="
CHECKSUM_KEY = "__checksum__"


def with_filename(e: OSError, path) -> OSError:
    """``e`` with ``path`` as its file when the system named none (a full disk fails a write,
    not an open: "No space left on device" alone would not say which file)."""
    if e.filename is None and e.errno is not None:
        return type(e)(e.errno, e.strerror or str(e), str(path))
    return e


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically: a temporary ``.NAME.*.tmp`` in the same
    directory, fsync, then ``os.replace``; the temporary is removed if anything fails.  An
    OSError of the write (a full disk) names ``path``."""
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise with_filename(e, path) from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(e, OSError):
            raise with_filename(e, path) from None
        raise


def remove_stale_temporaries(directory) -> int:
    """Delete temporary files (``.*.tmp``, in the directory and its figures/) left by a writer
    that was killed mid-write; returns the count.  Call it only while holding the
    directory's lock (another writer's temporaries are live)."""
    n = 0
    for pattern in (".*.tmp", f"{FIGURES}/.*.tmp"):
        for p in Path(directory).glob(pattern):
            p.unlink(missing_ok=True)
            n += 1
    return n


def write_json(path: Path, obj, *, strict: bool = False) -> None:
    """``obj`` as indented JSON (numpy scalars and arrays as Python numbers and lists),
    written atomically.  Non-finite floats are written as Python's ``NaN``/``Infinity``
    tokens, or with ``strict=True`` (config.json) as the strings "nan", "inf", "-inf":
    standard JSON has no token for them, and configs are read by other tools (jq, JS);
    the experiments' Configs read those strings back as floats."""
    if strict:
        obj = _finite_json(obj)
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False, default=_json_default,
                                         allow_nan=not strict) + "\n").encode())


def _finite_json(o):
    if isinstance(o, float) and not math.isfinite(o):
        return "nan" if math.isnan(o) else ("inf" if o > 0 else "-inf")
    if isinstance(o, dict):
        return {k: _finite_json(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_finite_json(v) for v in o]
    if isinstance(o, np.ndarray):
        return _finite_json(o.tolist())
    if isinstance(o, np.generic):
        return _finite_json(o.item())
    return o


def _json_default(o):
    if isinstance(o, (np.floating, np.integer, np.bool_)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def read_json(path: Path, what: str | None = None):
    """The JSON document at ``path`` (the strings "inf", "-inf", "nan" of :func:`write_json`
    stay strings: config values are typed by the experiment's Config); ``ConfigError`` when
    the file is missing, not a file, or not valid JSON."""
    path = Path(path)
    what = what or str(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"{what} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"{what} is a directory, not a file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{what} is unreadable ({type(e).__name__})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        raise ConfigError(f"{what} is corrupted (not valid JSON)") from None


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


def append_metrics(path: Path, rows: list[dict], columns: list[str]) -> None:
    """Append ``rows`` to the CSV at ``path`` whose header is ``columns`` (every key of every
    row among them), in one write, then fsync.  A writer killed mid-write can leave a partial
    last line, which :func:`read_metrics` ignores."""
    buf = _io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    for r in rows:
        w.writerow({k: (repr(v) if isinstance(v, float) else v) for k, v in r.items()})
    try:
        with open(path, "ab") as f:
            f.write(buf.getvalue().encode())
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        raise with_filename(e, path) from None


def read_metrics(path: Path) -> dict[str, np.ndarray]:
    """metrics.csv as a dict of float arrays, one per column; ``ConfigError`` naming the
    file when it is missing, unreadable or not a table of numbers."""
    path = Path(path)
    try:
        text = path.read_text()
        if text and not text.endswith("\n"):      # a partial last line: an interrupted append
            text = text[:text.rfind("\n") + 1]
        rows = list(csv.DictReader(_io.StringIO(text, newline="")))
    except FileNotFoundError:
        raise ConfigError(f"{path} does not exist") from None
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise ConfigError(f"{path} is unreadable or corrupted ({type(e).__name__})") from None
    if not rows:
        return {}
    try:
        return {k: np.array([float(r[k]) if r[k] not in ("", None) else np.nan for r in rows])
                for k in rows[0]}
    except (TypeError, ValueError, KeyError):
        raise ConfigError(f"{path} is corrupted (a value is not a number)") from None


def _digest(arrays: dict) -> str:
    """SHA-256 over the arrays' names, dtypes, shapes and bytes, in name order."""
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        if a.dtype.hasobject:
            raise TypeError(f"array {name!r} has dtype object; npz files here hold plain arrays")
        h.update(f"{name}\0{a.dtype.str}\0{a.shape}\0".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def write_npz(path: Path, arrays: dict) -> None:
    """{name: array} as a compressed ``.npz`` (``np.savez_compressed``) with the checksum
    of its arrays in ``__checksum__`` (:func:`verify_npz`), written atomically."""
    arrays = {k: np.asarray(v) for k, v in arrays.items()}
    buf = _io.BytesIO()
    np.savez_compressed(buf, **arrays, **{CHECKSUM_KEY: np.array(_digest(arrays))})
    atomic_write_bytes(path, buf.getvalue())


def read_npz(path: Path) -> dict[str, np.ndarray]:
    """The arrays of an npz written by :func:`write_npz`, checked against its checksum;
    ``ConfigError("... corrupted ...")`` when the file is truncated, altered or not ours."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise ConfigError(f"{path} does not exist") from None
    except Exception as e:  # zipfile.BadZipFile, zlib.error, ValueError, EOFError, OSError …
        raise ConfigError(f"{path} is corrupted (unreadable: {type(e).__name__})") from None
    stored = arrays.pop(CHECKSUM_KEY, None)
    if stored is None:
        raise ConfigError(f"{path} is corrupted or not written by meanfield (no checksum)")
    if str(stored) != _digest(arrays):
        raise ConfigError(f"{path} is corrupted (checksum mismatch)")
    return arrays


def verify_npz(path: Path) -> None:
    """``ConfigError`` unless the npz at ``path`` matches its checksum (:func:`read_npz`)."""
    read_npz(path)


def read_snapshots(run_dir) -> list[dict]:
    """The particle snapshots of every phase of a run, from particles.npz (checked against
    its checksum), in the one layout the runner writes (``experiments.plan.snapshot_arrays``):
    [{"phase": key, "t": [K], "step": [K], "theta": [K, …]}] in phase order (θ [K, N, D],
    or [K, B, N, D] with replicas; ResNets' θ [K, L·M, P]).  A single-phase run gives one
    entry, "main"; phases that took no snapshot are left out."""
    z = read_npz(Path(run_dir) / PARTICLES)

    def entry(key, t, step, theta):
        steps = z[step] if step in z else np.full(len(z[t]), -1, dtype=np.int64)
        return {"phase": key, "t": z[t], "step": steps, "theta": z[theta]}

    if "phase_keys" not in z:
        return [entry("main", "t", "step", "theta")] if "theta" in z and "t" in z else []
    primary = str(z["primary_phase"]) if "primary_phase" in z else None
    out = []
    for j, key in enumerate(str(k) for k in z["phase_keys"]):
        if key == primary:
            out.append(entry(key, "t", "step", "theta"))
        elif f"phase{j}_theta" in z:
            out.append(entry(key, f"phase{j}_t", f"phase{j}_step", f"phase{j}_theta"))
    return out


def save_checkpoint(path: Path, payload: dict) -> None:
    """``payload`` (tensors, generator states, plain data) by ``torch.save``, behind one
    header line ``MEANFIELD-CHECKPOINT 2 sha256=<hex>`` holding the checksum of those
    bytes, written atomically."""
    buf = _io.BytesIO()
    torch.save(payload, buf)
    data = buf.getvalue()
    atomic_write_bytes(path, CHECKPOINT_MAGIC + hashlib.sha256(data).hexdigest().encode() + b"\n" + data)


def load_checkpoint(path: Path) -> dict:
    """The payload of :func:`save_checkpoint`, loaded onto the CPU after its checksum is
    verified (``weights_only=False``: load only checkpoints you trust).  ``ConfigError``
    ("checkpoint … corrupted …") when the file is unreadable, altered, truncated or not a
    meanfield checkpoint."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"checkpoint {path} does not exist") from None
    except OSError as e:
        raise ConfigError(f"checkpoint {path} is unreadable ({e.strerror or type(e).__name__})") from None
    nl = raw.find(b"\n", 0, len(CHECKPOINT_MAGIC) + 80)
    if not raw.startswith(CHECKPOINT_MAGIC) or nl < 0:
        raise ConfigError(f"checkpoint {path} is corrupted or not a meanfield checkpoint "
                          "(no checksum header)")
    data = raw[nl + 1:]
    if hashlib.sha256(data).hexdigest().encode() != raw[len(CHECKPOINT_MAGIC):nl]:
        raise ConfigError(f"checkpoint {path} is corrupted (checksum mismatch)")
    try:
        payload = torch.load(_io.BytesIO(data), map_location="cpu", weights_only=False)
    except Exception as e:
        raise ConfigError(f"checkpoint {path} is corrupted ({type(e).__name__})") from None
    if not isinstance(payload, dict):
        raise ConfigError(f"checkpoint {path} does not hold a meanfield checkpoint")
    return payload


# ---- directories ----------------------------------------------------------------------------
def check_new_out_dir(out) -> Path:
    """Check that ``out`` can hold a new run, without creating anything: a non-empty path,
    absent (with a parent that is or can become a directory) or an empty writable directory.

    Raises ConfigError naming the problem (holds a run, not empty, a file on the path, not
    writable)."""
    if out is None or str(out).strip() == "":
        raise ConfigError("--out must name a directory (got an empty path)")
    out = Path(out)
    if out.exists() or out.is_symlink():
        if not out.is_dir():
            raise ConfigError(f"--out {out} exists and is not a directory")
        if (out / CONFIG).exists():
            raise ConfigError(f"--out {out} already holds a run (use `meanfield resume {out}` "
                              "or choose another directory)")
        try:
            entries = [p.name for p in out.iterdir()]
        except OSError as e:
            raise ConfigError(f"--out {out} is not readable ({e.strerror})") from None
        if entries:
            raise ConfigError(f"--out {out} is not empty")
        if not os.access(out, os.W_OK | os.X_OK):
            raise ConfigError(f"--out {out} is not writable")
        return out
    parent = out.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise ConfigError(f"--out {out}: {parent} is a file, not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"--out {out}: cannot create it in {parent} (not writable)")
    return out


def make_dir(path) -> Path:
    """``mkdir -p path``; ConfigError (one line) when the system refuses."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"cannot create directory {path} ({e.strerror or type(e).__name__})") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise ConfigError(f"directory {path} is not writable")
    return path


class DirectoryLock:
    """An exclusive lock on a run (or sweep) directory for the life of a writer.

    ``filelock.FileLock`` on ``DIR/.meanfield.lock`` (an OS lock: released when the process
    dies, even by SIGKILL); the holder's pid, host and command go to ``DIR/.meanfield.owner``
    so that a second writer's ``ConfigError`` names it.  Use as a context manager, or
    :meth:`acquire` / :meth:`release`; :meth:`claim` writes the owner file once the holder
    has checked that it will write (a refused command leaves every file as it was)."""

    def __init__(self, directory):
        self.directory = Path(directory)
        self._lock = None

    def acquire(self) -> "DirectoryLock":
        """Take the lock without waiting; ``ConfigError`` naming the holder when it is taken."""
        from filelock import FileLock, Timeout

        lock = FileLock(str(self.directory / LOCK), timeout=0, thread_local=False)
        try:
            lock.acquire()
        except Timeout:
            raise ConfigError(f"{self.directory} is in use by another meanfield process "
                              f"({self.holder()}); wait for it to finish or stop it") from None
        except OSError as e:
            raise ConfigError(f"cannot lock {self.directory} ({e.strerror or type(e).__name__})") from None
        self._lock = lock
        return self

    def claim(self) -> None:
        """Record this process (pid, host, command) as the holder in ``.meanfield.owner``."""
        owner = f"pid {os.getpid()} on {socket.gethostname()}: {' '.join(sys.argv)[:300]}\n"
        atomic_write_bytes(self.directory / OWNER, owner.encode())

    def holder(self) -> str:
        """What ``.meanfield.owner`` says (pid, host, command), or "unknown process"."""
        try:
            return (self.directory / OWNER).read_text().strip() or "unknown process"
        except OSError:
            return "unknown process"

    def release(self) -> None:
        """Release the lock (the owner file stays: it names the last writer)."""
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


def load_run_config(run_dir) -> dict:
    """config.json of a run directory: {"experiment", "config": {...}, …}; ConfigError
    naming what is missing or corrupted (not a directory, no config.json, not JSON, not a
    meanfield run config)."""
    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise ConfigError(f"run directory {run_dir} does not exist")
    if not run_dir.is_dir():
        raise ConfigError(f"{run_dir} is a file, not a run directory")
    p = run_dir / CONFIG
    if not p.exists():
        raise ConfigError(f"{run_dir} is not a run directory (no {CONFIG})")
    cfg = read_json(p)
    if not (isinstance(cfg, dict) and isinstance(cfg.get("experiment"), str)
            and isinstance(cfg.get("config"), dict)):
        raise ConfigError(f"{p} is not a meanfield run config (needs \"experiment\" and a "
                          "\"config\" table)")
    return cfg


def run_record(experiment: str, config: dict, extra: dict | None = None) -> dict:
    """The content of config.json: {"experiment", "meanfield_version", "torch_version",
    "config": the resolved config dict, **extra}."""
    return {"experiment": experiment, "meanfield_version": __version__,
            "torch_version": torch.__version__, "config": config, **(extra or {})}
