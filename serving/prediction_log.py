"""Durable, off-the-request-path log of every scored transaction.

Requests append rows to an in-memory buffer (a lock and a list append: microseconds); a
background thread writes the buffer every ``flush_seconds`` as one Parquet part per day,
atomically, under ``<lake>/predictions/date=YYYY-MM-DD/``. Parts are never rewritten, so the
log only grows; ``close()`` flushes what is left (BentoML calls it on shutdown).
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import uuid
from pathlib import Path

import pyarrow as pa

from pipelines.lake import part_path, write_parquet_atomic

log = logging.getLogger(__name__)

# Columns that are often all-null in one flush (no shadow running, no feature state): typed
# here so every part has the same schema instead of Arrow's ``null`` type.
NULLABLE_TYPES = {
    "shadow_probability": pa.float64(),
    "shadow_model_version": pa.string(),
    "shadow_latency_ms": pa.float64(),
}


def _table(rows: list[dict]) -> pa.Table:
    table = pa.Table.from_pylist(rows)
    for i, f in enumerate(table.schema):
        if pa.types.is_null(f.type) and f.name in NULLABLE_TYPES:
            column = table.column(i).cast(NULLABLE_TYPES[f.name])
            table = table.set_column(i, pa.field(f.name, NULLABLE_TYPES[f.name]), column)
    return table


class PredictionLog:
    def __init__(self, directory: Path, flush_seconds: float = 2.0) -> None:
        self.directory = directory
        self.flush_seconds = flush_seconds
        self._rows: list[dict] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self._thread.start()

    def append(self, rows: list[dict]) -> None:
        with self._lock:
            self._rows.extend(rows)

    def flush(self) -> int:
        """Write what is buffered; returns the number of rows written."""
        with self._lock:
            rows, self._rows = self._rows, []
        if not rows:
            return 0
        by_day: dict[dt.date, list[dict]] = {}
        for row in rows:
            by_day.setdefault(row["tx_datetime"].date(), []).append(row)
        for day, day_rows in by_day.items():
            table = _table(day_rows)
            path = part_path(
                self.directory, day, f"{dt.datetime.now(dt.UTC):%H%M%S}-{uuid.uuid4().hex[:8]}"
            )
            try:
                write_parquet_atomic(table, path)
            except Exception:
                # Keep the rows for the next attempt rather than lose them.
                log.exception("prediction log write failed; will retry")
                with self._lock:
                    self._rows[:0] = day_rows
        return len(rows)

    def _run(self) -> None:
        while not self._stop.wait(self.flush_seconds):
            self.flush()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self.flush()
