"""What the DAG files share: Assets, default task arguments, the start date and the day a run
works on.

Imported at DAG parse time, so it must stay light (no pandas, no Spark, no torch).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
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
