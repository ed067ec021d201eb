"""Durable log of every scored transaction, off the hot path but never behind the answer.

A request's rows are written to this worker's journal (one ``write`` of a length-prefixed
pickle under ``<predictions>/_journal/``) before the response is sent: once a client has its
answer, the rows are in the kernel, so a ``kill -9`` of the worker loses nothing it answered
(a machine crash can lose the page cache; the journal is not fsynced per request). A background
thread turns the journal into Parquet every ``flush_seconds``: one part per day named after the
journal, ``<lake>/predictions/date=YYYY-MM-DD/part-<journal>.parquet``, written atomically, then
the journal is deleted. A worker holds an exclusive ``flock`` on its journal; at start a worker
recovers every journal no live worker holds (its writer died) the same way. Writing a journal's
parts is idempotent (same names, same rows), so a crash between the parts and the delete
duplicates nothing. ``close()`` flushes what is left (BentoML calls it on shutdown).
"""

from __future__ import annotations

import datetime as dt
import fcntl
import logging
import os
import pickle
import struct
import threading
import uuid
from pathlib import Path

import pyarrow as pa

from pipelines.contracts import PREDICTION_LOG_EXPERIMENT_COLUMNS
from pipelines.lake import part_path, write_parquet_atomic

log = logging.getLogger(__name__)

JOURNAL_DIR = "_journal"
_FRAME = struct.Struct("<I")  # byte length of the pickled rows that follow

# Columns that are often all-null in one flush (no shadow running): typed so every part has
# the same schema instead of Arrow's ``null`` type.
NULLABLE_TYPES = {
    name: pa.type_for_alias(arrow_type)
    for name, (arrow_type, _) in PREDICTION_LOG_EXPERIMENT_COLUMNS.items()
}


def _table(rows: list[dict]) -> pa.Table:
    table = pa.Table.from_pylist(rows)
    for i, f in enumerate(table.schema):
        if pa.types.is_null(f.type) and f.name in NULLABLE_TYPES:
            column = table.column(i).cast(NULLABLE_TYPES[f.name])
            table = table.set_column(i, pa.field(f.name, NULLABLE_TYPES[f.name]), column)
    return table


def write_parts(directory: Path, name: str, rows: list[dict]) -> None:
    """The rows as one Parquet part per day, ``part-<name>``, each written atomically."""
    by_day: dict[dt.date, list[dict]] = {}
    for row in rows:
        by_day.setdefault(row["tx_datetime"].date(), []).append(row)
    for day, day_rows in by_day.items():
        write_parquet_atomic(_table(day_rows), part_path(directory, day, name))


def read_journal(path: Path) -> list[dict]:
    """The rows of a journal; a frame cut short by a crash was never answered: dropped."""
    data = path.read_bytes()
    rows: list[dict] = []
    offset = 0
    while offset + _FRAME.size <= len(data):
        (size,) = _FRAME.unpack_from(data, offset)
        frame = data[offset + _FRAME.size : offset + _FRAME.size + size]
        if len(frame) < size:
            break
        rows.extend(pickle.loads(frame))
        offset += _FRAME.size + size
    return rows


def recover_journals(directory: Path) -> int:
    """Write the parts of every journal whose writer is gone, then delete it; rows recovered."""
    folder = directory / JOURNAL_DIR
    recovered = 0
    for path in sorted(folder.glob("*.journal")) if folder.exists() else []:
        with open(path, "rb") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # a live worker's journal
            rows = read_journal(path)
            if rows:
                write_parts(directory, path.stem, rows)
            path.unlink()
            recovered += len(rows)
    if recovered:
        log.warning("prediction log: recovered %d rows from a stopped worker's journal", recovered)
    return recovered


class PredictionLog:
    def __init__(self, directory: Path, flush_seconds: float = 2.0) -> None:
        self.directory = directory
        self.flush_seconds = flush_seconds
        self._rows: list[dict] = []
        # Rotated journals whose parts are not written yet: (journal, its fd, its rows).
        self._pending: list[tuple[Path, int, list[dict]]] = []
        self._lock = threading.Lock()
        (directory / JOURNAL_DIR).mkdir(parents=True, exist_ok=True)
        recover_journals(directory)
        self._journal: Path | None = None
        self._fd = -1
        self._open_journal()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self._thread.start()

    def _open_journal(self) -> None:
        name = f"{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._journal = self.directory / JOURNAL_DIR / f"{name}.journal"
        self._fd = os.open(self._journal, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        fcntl.flock(self._fd, fcntl.LOCK_EX)

    def append(self, rows: list[dict]) -> None:
        """Journal the rows (one write, done when this returns) and buffer them for Parquet."""
        payload = pickle.dumps(rows, protocol=pickle.HIGHEST_PROTOCOL)
        with self._lock:
            os.write(self._fd, _FRAME.pack(len(payload)) + payload)
            self._rows.extend(rows)

    def flush(self) -> int:
        """Write what is buffered as the current journal's parts; returns the rows written."""
        with self._lock:
            if self._rows:
                self._pending.append((self._journal, self._fd, self._rows))
                self._rows = []
                self._open_journal()
            pending, self._pending = self._pending, []
        written = 0
        for i, (journal, fd, rows) in enumerate(pending):
            try:
                write_parts(self.directory, journal.stem, rows)
            except Exception:
                # The journal stays, locked: the next flush writes the same parts again (or a
                # later start recovers them), never under another name.
                log.exception("prediction log write failed; will retry")
                with self._lock:
                    self._pending[:0] = pending[i:]
                break
            journal.unlink()
            os.close(fd)
            written += len(rows)
        return written

    def _run(self) -> None:
        while not self._stop.wait(self.flush_seconds):
            self.flush()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self.flush()
        with self._lock:
            os.close(self._fd)
            self._journal.unlink(missing_ok=True)
