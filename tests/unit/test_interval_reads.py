"""Daily loads read the days they load, not the history: materialization's source reader and
the newest-feature lookup open only the day partitions they need.

Every old partition here holds an unreadable file: a reader that opened it would fail.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pyarrow as pa
import pytest
from feast import FileSource
from feast.data_format import ParquetFormat
from feast.infra.offline_stores import duckdb as feast_duckdb

from pipelines.features.job import CUSTOMER_TABLE, TERMINAL_LABEL_TABLE, TERMINAL_TABLE
from pipelines.featurestore.offline import LeanJoinDuckDBOfflineStore, interval_reader
from pipelines.featurestore.store import latest_feature_time
from pipelines.lake import part_path, partition_dir, write_parquet_atomic

DAYS = [dt.date(2024, 1, 1) + dt.timedelta(days=i) for i in range(5)]
OLD = DAYS[:3]


def _at(day: dt.date, hour: int) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(hour), dt.UTC)


def _table(folder: Path, last_hour: int = 20) -> None:
    """One row per entity and day (entity 1 at 10:00, entity 2 at ``last_hour``), day
    partitioned as the Spark job writes; the old days also hold a broken file."""
    for day in DAYS:
        rows = pa.table(
            {
                "customer_id": pa.array([1, 2], pa.int64()),
                "value": pa.array([float(day.day), float(day.day) + 0.5]),
                "event_timestamp": pa.array(
                    [_at(day, 10), _at(day, last_hour)], pa.timestamp("us", "UTC")
                ),
            }
        )
        write_parquet_atomic(rows, part_path(folder, day, "spark"))
        if day in OLD:
            (partition_dir(folder, day) / "part-broken.parquet").write_bytes(b"not parquet")


def _source(folder: Path) -> FileSource:
    return FileSource(
        name="s", path=str(folder), file_format=ParquetFormat(), timestamp_field="event_timestamp"
    )


def test_a_whole_folder_read_meets_the_broken_old_file(tmp_path: Path) -> None:
    _table(tmp_path / "t")
    with pytest.raises(Exception, match=r"(?i)parquet"):
        feast_duckdb._read_data_source(_source(tmp_path / "t"), str(tmp_path)).execute()


def test_the_reader_opens_only_the_days_of_the_interval(tmp_path: Path) -> None:
    _table(tmp_path / "t")
    read = interval_reader(_at(DAYS[3], 12), _at(DAYS[4], 12))
    frame = read(_source(tmp_path / "t"), str(tmp_path)).execute()
    assert sorted(frame["value"]) == [4.0, 4.5, 5.0, 5.5]


def _config(tmp_path: Path) -> SimpleNamespace:
    return SimpleNamespace(
        repo_path=tmp_path,
        offline_store=SimpleNamespace(
            staging_location=None, staging_location_endpoint_override=None
        ),
    )


def _pull(method, tmp_path: Path, start: dt.datetime | None, end: dt.datetime | None):
    """One of the store's pulls of the test table's ``value`` by ``customer_id``."""
    source = _source(tmp_path / "t")
    return method(
        _config(tmp_path), source, ["customer_id"], ["value"], "event_timestamp", None, start, end
    )


def test_materialization_pulls_the_rows_of_the_interval(tmp_path: Path) -> None:
    """``pull_all_from_table_or_query``: what Feast's local compute engine materializes from
    (``pull_latest_features`` is off), before it keeps the newest row per entity."""
    _table(tmp_path / "t")

    def pull(start: dt.datetime | None, end: dt.datetime | None) -> list[float]:
        job = _pull(LeanJoinDuckDBOfflineStore.pull_all_from_table_or_query, tmp_path, start, end)
        return sorted(job.to_df()["value"])

    assert pull(_at(DAYS[3], 11), _at(DAYS[4], 15)) == [4.5, 5.0]
    assert pull(_at(DAYS[4], 21), _at(DAYS[4], 23) + dt.timedelta(days=3)) == []
    assert pull(_at(DAYS[3], 0), None) == [4.0, 4.5, 5.0, 5.5]  # an open end: the newest day


def test_pull_latest_keeps_the_newest_row_per_entity_of_the_interval(tmp_path: Path) -> None:
    _table(tmp_path / "t")

    def pull(start: dt.datetime, end: dt.datetime) -> pd.DataFrame:
        job = _pull(
            LeanJoinDuckDBOfflineStore.pull_latest_from_table_or_query, tmp_path, start, end
        )
        return job.to_df().sort_values("customer_id")

    # From 11:00 on day 4 to 15:00 on day 5: entity 1's row of day 5, entity 2's of day 4.
    picked = pull(_at(DAYS[3], 11), _at(DAYS[4], 15))
    assert list(picked["value"]) == [5.0, 4.5]
    # An interval past the newest day: nothing, and still no old partition opened.
    assert pull(_at(DAYS[4], 21), _at(DAYS[4], 23) + dt.timedelta(days=3)).empty


def test_the_newest_feature_time_is_read_from_the_newest_day(make_settings) -> None:
    settings = make_settings()
    assert latest_feature_time(settings) is None
    for hour, name in zip(
        (20, 21, 19), (CUSTOMER_TABLE, TERMINAL_TABLE, TERMINAL_LABEL_TABLE), strict=True
    ):
        _table(settings.features_dir / name, last_hour=hour)
    latest = latest_feature_time(settings)
    assert pd.Timestamp(latest) == pd.Timestamp(_at(DAYS[-1], 21))
