"""The incremental feature build against the full rebuild of the same lake (the oracle).

One lake grows as in production: a first build, then a build after a day re-delivered with
other contents and labels corrected for another old day, and one after a newly ingested day;
each build rebuilds only the days from the earliest changed one on
(``featurestore/changes.py``). A second home gets a copy of the final raw lake and builds
everything at once. Every feature table and the dbt mart must be row-equal, every column,
between the two.
"""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.features.job import (
    CUSTOMER_TABLE,
    CUSTOMER_TERMINAL_TABLE,
    TERMINAL_LABEL_TABLE,
    TERMINAL_TABLE,
)
from pipelines.featurestore.build import FeatureBuild, build_features
from pipelines.ingest import schema
from pipelines.ingest.daily import ingest_days
from pipelines.lake import day_files, part_path, write_parquet_atomic
from pipelines.transform.mart import read_export
from tests.worlds import FIRST_DAY, LABEL_DELAY_DAYS, world_settings

# Later than the longest lookback after the first day: each incremental build below reads
# only part of the history, so a lookback too short shows as a difference.
FIRST_BUILD = dt.date(2018, 5, 18)
REDELIVERED = dt.date(2018, 5, 11)
CORRECTED = dt.date(2018, 5, 10)
LABELS_CORRECTED_AT = dt.datetime(2018, 5, 18, 12, tzinfo=dt.UTC)
NEW_DAYS = (dt.date(2018, 5, 19),)
KEYS = {
    CUSTOMER_TABLE: ["customer_id", "event_timestamp", "transaction_id"],
    TERMINAL_TABLE: ["terminal_id", "event_timestamp", "transaction_id"],
    TERMINAL_LABEL_TABLE: ["terminal_id", "event_timestamp"],
    CUSTOMER_TERMINAL_TABLE: ["customer_id", "terminal_id", "event_timestamp", "transaction_id"],
}


def _table(features_dir: Path, name: str) -> pd.DataFrame:
    frame = pq.read_table(features_dir / name).to_pandas()
    frame["date"] = frame["date"].astype(str)
    return frame.sort_values(KEYS[name]).reset_index(drop=True)


def _redeliver(settings, day: dt.date) -> set[int]:
    """The day's transactions delivered again with other amounts; returns the changed ids."""
    (path,) = day_files(settings.raw_transactions_dir, day)
    frame = pq.read_table(path).to_pandas()
    changed = frame.index[::5]
    frame.loc[changed, "tx_amount"] = frame.loc[changed, "tx_amount"] * 3 + 1
    write_parquet_atomic(pa.Table.from_pandas(frame, preserve_index=False), path)
    return set(frame.loc[changed, "transaction_id"])


def _correct_labels(settings, day: dt.date, arrived: dt.datetime) -> int:
    """A second label file for an old day: some chargebacks reversed, some new ones, arriving
    later than the first labels (the latest label of a transaction wins)."""
    (path,) = day_files(settings.raw_labels_dir, day)
    labels = pq.read_table(path).to_pandas().iloc[::4].copy()
    labels["tx_fraud"] = 1 - labels["tx_fraud"]
    labels["tx_fraud_scenario"] = labels["tx_fraud"]
    labels["label_available_at"] = pd.Timestamp(arrived)
    table = pa.Table.from_pandas(labels, schema=schema.LABELS, preserve_index=False)
    write_parquet_atomic(table, part_path(settings.raw_labels_dir, day, "correction"))
    return len(labels)


@pytest.fixture(scope="module")
def grown(tmp_path_factory) -> tuple[Path, dict[str, FeatureBuild]]:
    home = tmp_path_factory.mktemp("incremental")
    builds: dict[str, FeatureBuild] = {}
    with world_settings(home) as settings:
        ingest_days(FIRST_DAY, FIRST_BUILD, settings)
        builds["first"] = build_features(settings)
        builds["unchanged"] = build_features(settings)
        # One build for both (a Spark run less in the suite): a day re-delivered, labels
        # corrected for another.
        builds["redelivered ids"] = _redeliver(settings, REDELIVERED)
        builds["corrected labels"] = _correct_labels(settings, CORRECTED, LABELS_CORRECTED_AT)
        builds["late"] = build_features(settings)
        for day in NEW_DAYS:
            ingest_days(day, day, settings)
            builds[str(day)] = build_features(settings)
    return home, builds


@pytest.fixture(scope="module")
def rebuilt(grown, tmp_path_factory) -> Path:
    home, _ = grown
    target = tmp_path_factory.mktemp("full-rebuild")
    with world_settings(home) as source, world_settings(target) as settings:
        shutil.copytree(source.lake_dir / "raw", settings.lake_dir / "raw")
        assert build_features(settings).plan.full
    return target


def test_each_build_rebuilds_from_the_earliest_changed_day(grown):
    _, builds = grown
    assert builds["first"].plan.full
    assert builds["unchanged"].plan.up_to_date and builds["unchanged"].spark is None
    for day in NEW_DAYS:
        plan = builds[str(day)].plan
        # The day ingested, and the labels that arrived with it (of day - delay).
        label_day = day - dt.timedelta(days=LABEL_DELAY_DAYS)
        assert not plan.full and plan.changed_days == [label_day, day], plan
        assert builds[str(day)].spark.since == label_day
    assert builds["late"].plan.changed_days == [CORRECTED, REDELIVERED]
    assert builds["late"].spark.since == CORRECTED
    # A daily build writes the days it rebuilt, not the history.
    daily, first = builds[str(NEW_DAYS[-1])].spark, builds["first"].spark
    for name, table in daily.tables.items():
        assert table.rows_written < first.tables[name].rows / 3, name


@pytest.mark.parametrize("name", list(KEYS))
def test_incremental_tables_equal_the_full_rebuild(grown, rebuilt, name):
    home, _ = grown
    with world_settings(home) as inc, world_settings(rebuilt) as full:
        incremental, expected = _table(inc.features_dir, name), _table(full.features_dir, name)
    assert len(incremental) == len(expected) > 0
    pd.testing.assert_frame_equal(incremental, expected, check_exact=True)


def test_the_incremental_mart_equals_the_full_rebuild(grown, rebuilt):
    home, _ = grown
    with world_settings(home) as inc, world_settings(rebuilt) as full:
        incremental, expected = read_export(inc), read_export(full)
    assert len(incremental) == len(expected) > 0
    pd.testing.assert_frame_equal(incremental, expected, check_exact=True)


def test_the_changes_reached_the_features(grown):
    home, builds = grown
    with world_settings(home) as settings:
        customers = _table(settings.features_dir, CUSTOMER_TABLE)
        mart = read_export(settings).set_index("transaction_id")
    redelivered = builds["redelivered ids"]
    own = customers[customers.transaction_id.isin(redelivered)]
    for row in own.itertuples():
        position = list(row.customer_recent_tx_id).index(row.transaction_id)
        assert row.customer_recent_tx_amount[position] == mart.at[row.transaction_id, "tx_amount"]
    corrected = mart[mart.label_available_at == pd.Timestamp(LABELS_CORRECTED_AT)]
    assert (corrected.tx_datetime.dt.date == CORRECTED).sum() == builds["corrected labels"] > 0
