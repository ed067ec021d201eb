"""What the DAG files share: Assets, default task arguments, the start date and the day a run
works on.

Imported at DAG parse time, so it must stay light (no pandas, no Spark, no torch).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Any

from airflow.sdk import Asset

from pipelines.config import get_settings

# Data-aware scheduling: producers list these as outlets, consumers schedule on them.
RAW_TRANSACTIONS = Asset(name="raw_transactions", uri="lake://raw/transactions")
RAW_LABELS = Asset(name="raw_labels", uri="lake://raw/labels")
# Features built, registered and materialized: the online store is fresh.
FEATURES = Asset(name="features", uri="feast://fraud/fraud_model_v1")
# A new registered version passed (or failed) the promotion gate.
MODEL = Asset(name="champion_model", uri="mlflow://models/fraud-detector")

# The raw-lake Asset events' extra: the transaction days an ingest wrote (its day, and the day
# whose labels arrived with it). Informative only: build_features plans from the lake's own
# state, because Airflow merges queued events into one run and events can be lost.
DAYS_EXTRA = "days"

DEFAULT_ARGS = {
    "owner": "fraud-platform",
    "retries": 2,
    "retry_delay": dt.timedelta(seconds=30),
    "retry_exponential_backoff": True,
}


def utc_midnight(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(), dt.UTC)


def history_start() -> dt.datetime:
    """Every DAG's start date: UTC midnight of the first day of the history
    (``Settings.history_start_date``). The scheduled DAGs' catchup starts there; the
    Asset-scheduled ones run on events, all later."""
    return utc_midnight(get_settings().history_start_date)


def run_day(params: Mapping[str, Any] | None, interval_edge: dt.datetime | None) -> dt.date:
    """The day a run works on: its ``day`` param when given (a manual run from the Trigger
    form), else the date of ``interval_edge`` (the start or end of its data interval, as the
    DAG defines its day). A manual run without a logical date must name the day."""
    if params and params.get("day"):
        return dt.date.fromisoformat(params["day"])
    if interval_edge is None:
        raise ValueError("this run has no data interval: give the day to work on (param day)")
    return interval_edge.date()


def days_extra(*days: dt.date | None) -> dict[str, list[str]]:
    """The extra of a raw-lake Asset event for the days an ingest wrote."""
    return {DAYS_EXTRA: sorted({d.isoformat() for d in days if d is not None})}


def event_days(events: Iterable[Any]) -> list[dt.date]:
    """The days the triggering raw-lake events named (their ``extra``), oldest first."""
    named = {day for event in events for day in (event.extra or {}).get(DAYS_EXTRA, [])}
    return [dt.date.fromisoformat(d) for d in sorted(named)]
