"""What a run directory holds while a run lives: the checkpoint and the phase records.

    DIR/checkpoint.pt          progress, and each phase's state and measurement generators:
                               its size does not grow with the number of steps
    DIR/records/prelude.pt     the prelude's output (a PDE solution …), written once
    DIR/records/<j>.<s>.pt     chunk s of phase j: the rows and snapshots the phase recorded
                               since chunk s − 1 (and its ``finish`` result, once finished)
    DIR/metrics.csv            the rows so far, appended at every commit (a progress view;
                               the experiment's ``results`` write the final one)

A *commit* (:meth:`RunStore.commit`) first writes the chunks of every phase that recorded
something since the last commit, then appends the new rows to metrics.csv, then writes the
checkpoint, which names how many chunks of each phase it covers.  Every file is written
atomically with a SHA-256 of its payload (``io.save_checkpoint``); chunks beyond the count
a checkpoint names (a writer killed between a chunk and its checkpoint) are never read, and
are removed when the run resumes.  So the bytes written over a run grow linearly with the
number of commits, and a killed run resumes bit for bit from its last checkpoint.

A phase resumed from an earlier step than its records reach (a finished phase extended to
more steps drops its final row and snapshot) writes its next chunk with ``truncate`` =
(rows, snapshots) kept: :func:`load` cuts the records there before appending the chunk.

Checkpoints of format 2 (rows and snapshots inside the checkpoint) are read too; resuming
such a run writes format 3 from then on.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

from . import io
from .errors import ConfigError
from .experiments.plan import PhaseRecord, Snapshot, flat_row

FORMAT = 3
READABLE = (2, 3)
RECORDS = "records"
PRELUDE = "prelude.pt"


@dataclass
class Loaded:
    """A run's persistent state: the prelude's output (None before it ran), the finished
    phases {key: PhaseRecord} in order, the current (unfinished) phase's record with its
    state (or None), and the phase indices and chunk counts the checkpoint covers."""

    shared: dict | None = None
    done: dict = field(default_factory=dict)
    current: PhaseRecord | None = None
    index: dict = field(default_factory=dict)
    chunks: dict = field(default_factory=dict)
    format: int = FORMAT


def _chunk_path(out: Path, j: int, s: int) -> Path:
    return Path(out) / RECORDS / f"{j}.{s}.pt"


def load(out, ck: dict | None) -> Loaded:
    """The run's state from its checkpoint ``ck`` (None: nothing yet) and its records, every
    chunk's checksum verified; ConfigError naming a missing or corrupted file."""
    out = Path(out)
    if ck is None:
        return Loaded()
    if ck.get("format") == 2:
        return _load_format2(ck)
    loaded = Loaded()
    dropped = ck.get("records") == "dropped"      # a finished run that cannot be extended
    if ck.get("prelude") and not dropped:
        loaded.shared = _read(out / RECORDS / PRELUDE, "prelude")["shared"]
    elif ck.get("prelude") is not None:
        loaded.shared = {}
    for key, entry in ck["phases"].items():
        j, n = int(entry["index"]), int(entry["chunks"])
        rec = PhaseRecord(key=key, columns=dict(entry.get("columns") or {}), state=entry.get("state"),
                          generators=dict(entry.get("generators") or {}))
        for s in range(0 if dropped else n):
            chunk = _read(_chunk_path(out, j, s), f"records of phase {key!r}")
            if chunk.get("key") != key:
                raise ConfigError(f"{_chunk_path(out, j, s)} holds phase {chunk.get('key')!r}, "
                                  f"not {key!r} (the run directory was edited)")
            if chunk.get("truncate") is not None:
                a, b = chunk["truncate"]
                del rec.rows[a:], rec.snaps[b:]
            rec.rows.extend(chunk["rows"])
            rec.snaps.extend(Snapshot(*s_) for s_ in chunk["snaps"])
            if chunk.get("result") is not None:
                rec.result = chunk["result"]
        loaded.index[key], loaded.chunks[key] = j, n
        if entry.get("done"):
            loaded.done[key] = rec
        else:
            loaded.current = rec
    return loaded


def _read(path: Path, what: str) -> dict:
    if not path.exists():
        raise ConfigError(f"{path.parent.parent}: its {what} ({path.name}) are missing; the run "
                          "directory is incomplete")
    return io.load_checkpoint(path)


def _load_format2(ck: dict) -> Loaded:
    """A checkpoint of format 2, whose rows and snapshots lived inside it."""
    def record(key, e, state):
        return PhaseRecord(key=key, columns=dict(e.get("columns") or {}), rows=list(e["rows"]),
                           snaps=[Snapshot(*s) for s in e["snaps"]], state=state,
                           generators=dict(e.get("generators") or {}), result=dict(e.get("result") or {}))

    loaded = Loaded(shared=ck.get("shared"), format=2)
    for key, e in (ck.get("done") or {}).items():
        loaded.done[key] = record(key, e, e.get("state"))
    cur = ck.get("current")
    if cur is not None:
        loaded.current = record(cur["key"], cur, cur["state"])
    return loaded


class RunStore:
    """The writer of a run's checkpoint, records and interim metrics.csv (module docstring).

    ``out`` the locked run directory; ``header`` the checkpoint's fixed entries
    (experiment, config); ``loaded`` what :func:`load` returned (chunk counts carry on)."""

    def __init__(self, out, header: dict, loaded: Loaded | None = None):
        self.out = Path(out)
        self.header = dict(header)
        loaded = loaded or Loaded()
        self.index = dict(loaded.index)
        self.chunks = dict(loaded.chunks)
        self.prelude_written = loaded.shared is not None and loaded.format == FORMAT
        # (rows, snapshots, result written) of each phase that its chunks already hold
        self.flushed = {}
        for rec in [*loaded.done.values(), *([loaded.current] if loaded.current else [])]:
            if rec.key in self.chunks:
                self.flushed[rec.key] = (len(rec.rows), len(rec.snaps), bool(rec.result))
        self.truncate = {}
        self.csv_columns = None        # metrics.csv's header once written by this store
        self.csv_rows = {}             # rows of each phase appended to metrics.csv
        self.stale = True              # metrics.csv may hold rows of an interrupted writer

    def remove_uncommitted(self) -> None:
        """Delete chunks the checkpoint does not cover (a writer killed before committing)."""
        d = self.out / RECORDS
        if not d.is_dir():
            return
        for p in d.glob("*.*.pt"):
            j, _, s = p.stem.partition(".")
            if not (j.isdigit() and s.isdigit()):
                continue
            key = next((k for k, v in self.index.items() if v == int(j)), None)
            if key is None or int(s) >= self.chunks.get(key, 0):
                p.unlink(missing_ok=True)

    def rebase(self, rec: PhaseRecord) -> None:
        """``rec`` (a phase resumed at an earlier step) was cut to fewer rows or snapshots
        than its chunks hold: the next chunk says so."""
        rows, snaps, res = self.flushed.get(rec.key, (0, 0, False))
        if len(rec.rows) < rows or len(rec.snaps) < snaps:
            self.truncate[rec.key] = (len(rec.rows), len(rec.snaps))
            self.flushed[rec.key] = (min(rows, len(rec.rows)), min(snaps, len(rec.snaps)), False)
            self.stale = True

    def _write_chunk(self, rec: PhaseRecord, finished_phase: bool) -> None:
        rows, snaps, res = self.flushed.get(rec.key, (0, 0, False))
        new_result = finished_phase and bool(rec.result) and not res
        if len(rec.rows) == rows and len(rec.snaps) == snaps and not new_result \
                and rec.key not in self.truncate:
            return
        if rec.key not in self.index:
            self.index[rec.key] = max(self.index.values(), default=-1) + 1
        j, s = self.index[rec.key], self.chunks.get(rec.key, 0)
        io.make_dir(self.out / RECORDS)
        io.save_checkpoint(_chunk_path(self.out, j, s), {
            "key": rec.key, "truncate": self.truncate.pop(rec.key, None),
            "rows": rec.rows[rows:], "snaps": [tuple(x) for x in rec.snaps[snaps:]],
            "result": rec.result if new_result else None})
        self.chunks[rec.key] = s + 1
        self.flushed[rec.key] = (len(rec.rows), len(rec.snaps), res or new_result)

    def commit(self, *, shared, done: dict, current: PhaseRecord | None, progress: dict,
               finished: bool = False, drop_records: bool = False) -> None:
        """Write the chunks of every phase with new records, append the new rows to
        metrics.csv (not when ``finished``: the results wrote it), then the checkpoint.
        ``drop_records`` (a finished run that cannot be extended): the checkpoint keeps
        only states and progress, and the records directory is removed after it."""
        if shared is not None and not self.prelude_written:
            if shared:
                io.make_dir(self.out / RECORDS)
                io.save_checkpoint(self.out / RECORDS / PRELUDE, {"shared": shared})
            self.prelude_written = True
        recs = list(done.values()) + ([current] if current is not None else [])
        if not drop_records:
            for rec in recs:
                self._write_chunk(rec, rec.key in done)
        if not finished:
            self._append_metrics(recs)
        phases = {}
        for rec in recs:
            phases[rec.key] = {"index": self.index.get(rec.key, -1), "chunks": self.chunks.get(rec.key, 0),
                               "columns": rec.columns, "state": rec.state,
                               "generators": rec.generators, "done": rec.key in done}
        io.save_checkpoint(self.out / io.CHECKPOINT, {
            "format": FORMAT, **self.header, "progress": progress, "finished": finished,
            "prelude": None if shared is None else bool(shared), "phases": phases,
            "records": "dropped" if drop_records else "kept"})
        if drop_records:
            shutil.rmtree(self.out / RECORDS, ignore_errors=True)

    def _append_metrics(self, recs) -> None:
        """metrics.csv gets the rows recorded since the last commit (appended), or all rows
        (rewritten) after a resume or when a row brings a new column."""
        new = []
        for rec in recs:
            new.extend(rec.rows[self.csv_rows.get(rec.key, 0):])
        cols = list(self.csv_columns or [])
        grows = any(k not in cols for r in new for k in r)
        if self.stale or grows or self.csv_columns is None:
            rows = [flat_row(r) for rec in recs for r in rec.rows]
            io.write_metrics(self.out / io.METRICS, rows)
            self.csv_columns = [k for r in rows for k in r]
            self.csv_columns = list(dict.fromkeys(self.csv_columns))
            self.stale = False
        elif new:
            io.append_metrics(self.out / io.METRICS, [flat_row(r) for r in new], self.csv_columns)
        for rec in recs:
            self.csv_rows[rec.key] = len(rec.rows)
