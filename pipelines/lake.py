"""The raw lake: date-partitioned Parquet, written atomically.

Layout (Hive-style, so DuckDB, Spark and dbt read it as partitioned datasets)::

    <lake>/raw/transactions/date=YYYY-MM-DD/part-<source>.parquet
    <lake>/raw/labels/date=YYYY-MM-DD/part-<source>.parquet   (date = transaction day)

One file per (partition, source): a rerun replaces exactly the file it wrote before, so reruns
never duplicate rows. Files are written under a hidden temporary name and renamed into place:
readers (who glob ``*.parquet``) see the old file or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

TMP_SUFFIX = ".tmp"


def partition_dir(table_dir: Path, day: dt.date) -> Path:
    return table_dir / f"date={day.isoformat()}"


def part_path(table_dir: Path, day: dt.date, source: str) -> Path:
    return partition_dir(table_dir, day) / f"part-{source}.parquet"


def day_files(table_dir: Path, day: dt.date) -> list[Path]:
    """The complete part files of a day's partition (a writer's temporary ones left out)."""
    folder = partition_dir(table_dir, day)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob("*.parquet") if not p.name.startswith("."))


def partition_days(table_dir: Path) -> list[dt.date]:
    """The days that have a partition folder, oldest first."""
    if not table_dir.is_dir():
        return []
    return sorted(
        dt.date.fromisoformat(p.name.removeprefix("date="))
        for p in table_dir.glob("date=*")
        if p.is_dir()
    )


def files_of_days(table_dir: Path, first: dt.date, last: dt.date) -> list[Path]:
    """The complete part files of the days ``first`` .. ``last`` (inclusive), oldest first:
    what a reader of an interval opens instead of every partition of the history."""
    return [
        path
        for day in partition_days(table_dir)
        if first <= day <= last
        for path in day_files(table_dir, day)
    ]


STALE_TMP_SECONDS = 3600.0  # far longer than any write: older ones were left by a killed writer


def remove_stale_tmp(directory: Path, older_than: float = STALE_TMP_SECONDS) -> int:
    """Delete temporary files a killed writer left behind (untouched for ``older_than``
    seconds: a younger one may be another process's write in progress); returns how many."""
    if not directory.is_dir():
        return 0
    cutoff = time.time() - older_than
    stale = []
    for p in directory.iterdir():
        if p.name.startswith(".") and p.name.endswith(TMP_SUFFIX):
            with contextlib.suppress(FileNotFoundError):  # its writer just finished
                if p.stat().st_mtime < cutoff:
                    stale.append(p)
    for p in stale:
        p.unlink(missing_ok=True)
    return len(stale)


def utc_today() -> dt.date:
    """Today's date in UTC: the calendar every day of the lake, the DAGs and the pins uses
    (``dt.date.today()`` is the machine's local date)."""
    return dt.datetime.now(dt.UTC).date()


def days_between(first: dt.date, last: dt.date) -> list[dt.date]:
    """Every day from ``first`` to ``last``, both included (none if ``last`` is before)."""
    return [first + dt.timedelta(days=i) for i in range((last - first).days + 1)]


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary file beside ``path`` to write to: when the block succeeds it replaces
    ``path`` in one rename, so a reader sees the old or the complete new file; when it fails
    it is removed and ``path`` is untouched."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex}{TMP_SUFFIX}"
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` so that a reader sees the old or the complete new
    text."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def copy_atomic(source: Path, path: Path) -> None:
    """Copy ``source`` to ``path`` so that a reader sees the old or the complete new copy."""
    with atomic_path(path) as tmp:
        shutil.copyfile(source, tmp)


def write_parquet_atomic(table: pa.Table, path: Path) -> Path:
    """Write ``table`` to ``path`` so that ``path`` is either the old or the complete new file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # A temporary of this same file is a killed earlier attempt (one writer owns a file: a
    # retry); another file's may be another process's write in progress unless it is stale.
    for leftover in path.parent.glob(f".{path.name}.*{TMP_SUFFIX}"):
        leftover.unlink(missing_ok=True)
    remove_stale_tmp(path.parent)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, coerce_timestamps="us", allow_truncated_timestamps=False)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
    return path


@dataclass(frozen=True)
class TableStatus:
    name: str
    partitions: int
    rows: int
    first: dt.date | None
    last: dt.date | None
    missing_days: list[dt.date]


def table_status(table_dir: Path, name: str) -> TableStatus:
    """Partitions, row count (from Parquet footers, no data read) and gaps of one lake table."""
    days: list[dt.date] = []
    rows = 0
    if table_dir.is_dir():
        for part in sorted(table_dir.glob("date=*")):
            files = list(part.glob("*.parquet"))
            if not files:
                continue
            days.append(dt.date.fromisoformat(part.name.removeprefix("date=")))
            rows += sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    missing: list[dt.date] = []
    if days:
        present = set(days)
        span = (days[-1] - days[0]).days
        missing = [
            d for d in (days[0] + dt.timedelta(days=i) for i in range(span + 1)) if d not in present
        ]
    return TableStatus(
        name=name,
        partitions=len(days),
        rows=rows,
        first=days[0] if days else None,
        last=days[-1] if days else None,
        missing_days=missing,
    )
