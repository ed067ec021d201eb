"""Atomic lake writes: a writer cleans up what a killed writer left, never another's write."""

from __future__ import annotations

import datetime as dt
import os
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.lake import (
    STALE_TMP_SECONDS,
    atomic_path,
    days_between,
    write_parquet_atomic,
    write_text_atomic,
)


def test_a_write_removes_stale_temporaries_but_not_another_writers(tmp_path):
    in_progress = tmp_path / ".part-a.parquet.1234.tmp"  # another worker, writing right now
    left_behind = tmp_path / ".part-b.parquet.5678.tmp"  # a writer killed long ago
    retried = tmp_path / ".part-c.parquet.9abc.tmp"  # this file's attempt killed just now
    for tmp in (in_progress, left_behind, retried):
        tmp.write_bytes(b"half")
    old = time.time() - STALE_TMP_SECONDS - 60
    os.utime(left_behind, (old, old))
    path = write_parquet_atomic(pa.table({"x": [1, 2]}), tmp_path / "part-c.parquet")
    assert pq.read_table(path).column("x").to_pylist() == [1, 2]
    assert in_progress.exists() and not left_behind.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [in_progress.name, "part-c.parquet"]


def test_a_failed_atomic_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "sub" / "report.html"
    write_text_atomic(path, "old")
    with pytest.raises(RuntimeError), atomic_path(path) as tmp:
        tmp.write_text("half of the new")
        raise RuntimeError("killed mid-write")
    assert path.read_text() == "old"
    assert [p.name for p in path.parent.iterdir()] == ["report.html"]
    write_text_atomic(path, "new")
    assert path.read_text() == "new"


def test_days_between_includes_both_ends_and_is_empty_when_reversed():
    first = dt.date(2024, 2, 28)
    assert days_between(first, dt.date(2024, 3, 1)) == [
        first,
        dt.date(2024, 2, 29),
        dt.date(2024, 3, 1),
    ]
    assert days_between(first, first) == [first]
    assert days_between(first, dt.date(2024, 2, 27)) == []


def test_utc_today_is_the_utc_date_whatever_the_machine_timezone():
    import subprocess
    import sys

    code = (
        "import datetime as dt; from pipelines.lake import utc_today; "
        "print(utc_today(), dt.date.today())"
    )
    local_dates = set()
    # At any instant one of these zones (UTC+14, UTC-12) is on another date than UTC.
    for zone in ("Etc/GMT-14", "Etc/GMT+12"):
        out = subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, "TZ": zone},
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        assert out[0] == dt.datetime.now(dt.UTC).date().isoformat(), zone
        local_dates.add(out[1])
    assert local_dates - {dt.datetime.now(dt.UTC).date().isoformat()}, "no zone differed"
