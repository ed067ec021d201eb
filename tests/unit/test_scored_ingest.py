"""A live day's payments reach the lake from the scored-payment log: each id once, whatever
retried, whichever serving replica logged it, however often the ingest reruns."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pyarrow.parquet as pq

from pipelines.ingest.daily import ingest_day
from pipelines.lake import partition_dir
from pipelines.traffic import day_payments
from serving.prediction_log import PredictionLog

LIVE = dt.date(2018, 4, 20)


def _log(settings, payments: pd.DataFrame, request_time: dt.datetime) -> None:
    """What one serving replica's prediction log writes for ``payments``."""
    log = PredictionLog(settings.predictions_dir, flush_seconds=3600)
    rows = [
        {
            **{k: v.to_pydatetime() if isinstance(v, pd.Timestamp) else v for k, v in p.items()},
            "fraud_probability": 0.1,
            "request_time": request_time,
        }
        for p in payments.to_dict("records")
    ]
    log.append(rows)
    log.close()


def _lake_day(settings, day: dt.date) -> pd.DataFrame:
    return pq.read_table(partition_dir(settings.raw_transactions_dir, day)).to_pandas()


def test_a_live_day_holds_each_scored_payment_once(make_settings):
    settings = make_settings(live_start=LIVE.isoformat(), label_delay_days=2)
    history = ingest_day(LIVE - dt.timedelta(days=1), settings)
    assert history.source == "simulated"
    payments = day_payments(settings, LIVE)
    assert len(payments) > 50
    scored, never = payments.iloc[:-5], payments.iloc[-5:]  # five never reached /score
    half = len(scored) // 2
    t0 = dt.datetime(2018, 4, 20, 23, tzinfo=dt.UTC)
    # Two replicas, each its own parts in the shared log; 10 payments retried on the second
    # replica, one of them with another amount (the first scoring is what happened).
    _log(settings, scored.iloc[:half], t0)
    retried = scored.iloc[half - 10 : half].copy()
    retried.iloc[0, retried.columns.get_loc("tx_amount")] = 999.0
    _log(settings, pd.concat([retried, scored.iloc[half:]]), t0 + dt.timedelta(minutes=1))
    # An id the lake already holds from the simulated history, scored again by a client.
    held = (
        _lake_day(settings, LIVE - dt.timedelta(days=1))
        .iloc[[0]]
        .assign(tx_datetime=pd.Timestamp(LIVE, tz="UTC") + pd.Timedelta(hours=1))
    )
    _log(settings, held, t0)

    first = ingest_day(LIVE, settings)
    assert first.source == "scored"
    assert sorted(p.name for p in first.transactions_path.parent.iterdir()) == [
        "part-scored.parquet"
    ]  # the simulator wrote nothing for the live day
    lake = _lake_day(settings, LIVE)
    assert not lake.transaction_id.duplicated().any()
    assert set(lake.transaction_id) == set(scored.transaction_id)
    want = scored.set_index("transaction_id").sort_index()
    got = lake.set_index("transaction_id").sort_index()[want.columns]
    pd.testing.assert_frame_equal(got, want, check_dtype=False)  # amounts as first scored

    again = ingest_day(LIVE, settings)
    assert pq.read_table(again.transactions_path).equals(pq.read_table(first.transactions_path))

    # The labels of the live day arrive later: those of the payments that reached the lake.
    later = ingest_day(LIVE + dt.timedelta(days=2), settings)
    assert later.labels_day == LIVE
    labels = pq.read_table(later.labels_path).to_pandas()
    assert set(labels.transaction_id) == set(scored.transaction_id)
    assert not set(labels.transaction_id) & set(never.transaction_id)


def test_a_day_before_the_live_start_comes_from_the_simulator(make_settings):
    settings = make_settings(live_start=LIVE.isoformat())
    day = LIVE - dt.timedelta(days=1)
    _log(settings, day_payments(settings, day).head(3), dt.datetime.now(dt.UTC))
    result = ingest_day(day, settings)
    assert result.source == "simulated"
    assert sorted(p.name for p in result.transactions_path.parent.iterdir()) == [
        "part-simulated.parquet"
    ]
    assert len(_lake_day(settings, day)) == len(day_payments(settings, day))


def test_a_live_day_nobody_scored_is_empty_not_simulated(make_settings):
    settings = make_settings(live_start=LIVE.isoformat())
    result = ingest_day(LIVE, settings)
    assert result.source == "scored" and result.transactions == 0
    assert pq.read_table(result.transactions_path).num_rows == 0
