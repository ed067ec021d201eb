"""Daily ingest: idempotent reruns, delayed labels, and no partial partition after a kill."""

import datetime as dt
import os
import subprocess
import sys
import textwrap

import pyarrow.parquet as pq
import pytest

from pipelines.ingest.daily import ingest_day, ingest_days
from pipelines.lake import partition_dir, table_status

DAY = dt.date(2018, 4, 20)


def _files(folder):
    return sorted(p.name for p in folder.iterdir())


def test_rerun_of_the_same_day_gives_identical_partitions(settings):
    first = ingest_day(DAY, settings)
    tx_before = pq.read_table(first.transactions_path)
    labels_before = pq.read_table(first.labels_path)
    again = ingest_day(DAY, settings)
    assert pq.read_table(again.transactions_path).equals(tx_before)
    assert pq.read_table(again.labels_path).equals(labels_before)
    part = partition_dir(settings.raw_transactions_dir, DAY)
    assert _files(part) == ["part-simulated.parquet"]  # replaced, not added to
    ids = pq.read_table(part).column("transaction_id").to_pylist()
    assert len(ids) == len(set(ids)) > 0


def test_labels_arrive_after_the_configured_delay(make_settings):
    settings = make_settings(label_delay_days=5)
    result = ingest_day(DAY, settings)
    assert result.labels_day == DAY - dt.timedelta(days=5)
    labels = pq.read_table(result.labels_path).to_pandas()
    # The labels describe exactly the transactions of their day, each arriving 5 days after
    # its transaction: all of them during the ingested day.
    labelled_day = ingest_day(result.labels_day, settings)
    tx = pq.read_table(labelled_day.transactions_path).to_pandas()
    joined = labels.merge(tx, on="transaction_id", validate="one_to_one")
    assert len(joined) == len(labels) == len(tx) > 0
    assert (joined.label_available_at == joined.tx_datetime + dt.timedelta(days=5)).all()
    assert (joined.label_available_at.dt.date == DAY).all()
    # Nobody has labels of the day just ingested yet.
    assert not partition_dir(settings.raw_labels_dir, DAY).exists()


def test_no_labels_before_the_simulated_history(settings):
    result = ingest_day(dt.date(2018, 4, 3), settings)
    assert result.labels_day is None and result.labels_path is None


def test_a_day_before_the_simulation_calendar_is_refused(settings):
    with pytest.raises(ValueError, match="before the simulation calendar starts"):
        ingest_day(dt.date(2018, 3, 31), settings)


def test_a_range_lands_day_by_day_and_equals_single_day_ingests(make_settings, tmp_path):
    days = [DAY + dt.timedelta(days=i) for i in range(3)]
    seen = []
    results = ingest_days(days[0], days[-1], make_settings(), on_day=seen.append)
    assert [r.day for r in results] == days and seen == results
    # The shared simulator gives exactly what three separate daily runs give.
    single = ingest_day(days[1], make_settings(home=tmp_path / "single"))
    assert pq.read_table(results[1].transactions_path).equals(
        pq.read_table(single.transactions_path)
    )


def test_a_backwards_range_is_refused(settings):
    with pytest.raises(ValueError, match="before start"):
        ingest_days(DAY, DAY - dt.timedelta(days=1), settings)


_KILLER = textwrap.dedent(
    """
    import datetime as dt, os, signal
    import pyarrow.parquet as pq
    from pipelines.config import load_settings
    from pipelines.ingest.daily import ingest_day, ingest_days

    real_write = pq.write_table

    def write_then_die(table, where, **kwargs):
        # Write half of the rows to the temporary file, then die like an OOM-killed worker.
        real_write(table.slice(0, table.num_rows // 2), where, **kwargs)
        os.kill(os.getpid(), signal.SIGKILL)

    pq.write_table = write_then_die
    ingest_day(dt.date.fromisoformat(os.environ["DAY"]), load_settings())
    """
)


def _ingest_and_get_killed(day: dt.date) -> int:
    env = dict(os.environ, DAY=day.isoformat())
    return subprocess.run([sys.executable, "-c", _KILLER], env=env, check=False).returncode


def test_a_run_killed_mid_write_leaves_no_partial_partition(settings):
    assert _ingest_and_get_killed(DAY) == -9
    part = partition_dir(settings.raw_transactions_dir, DAY)
    assert not list(part.glob("*.parquet"))  # only a hidden temporary file may remain
    assert table_status(settings.raw_transactions_dir, "tx").rows == 0
    # The retry cleans the leftovers and writes the whole day.
    result = ingest_day(DAY, settings)
    assert _files(part) == ["part-simulated.parquet"]
    assert pq.read_table(result.transactions_path).num_rows == result.transactions


def test_a_rerun_killed_mid_write_keeps_the_previous_complete_partition(settings):
    good = ingest_day(DAY, settings)
    before = pq.read_table(good.transactions_path)
    assert _ingest_and_get_killed(DAY) == -9
    assert pq.read_table(good.transactions_path).equals(before)


def test_lake_status_reports_rows_and_gaps(settings):
    for day in (DAY, DAY + dt.timedelta(days=1), DAY + dt.timedelta(days=3)):
        ingest_day(day, settings)
    status = table_status(settings.raw_transactions_dir, "transactions")
    assert status.partitions == 3
    assert status.missing_days == [DAY + dt.timedelta(days=2)]
    assert status.rows == pq.read_table(settings.raw_transactions_dir).num_rows
