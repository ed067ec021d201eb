"""Daily ingest into the raw lake: a day's transactions, plus the labels arriving that day.

History days come from the simulator; from the first live day on, a day's transactions are the
payments the scoring API scored that day (the replayed payment network, or any client). Each
run owns its data interval (one day): it overwrites that day's partition atomically, so a
rerun or a retry changes nothing. Catchup from the pinned history start backfills history on a
fresh system by itself. A manual run may name the day to (re)ingest with the ``day`` param.
Its Asset events name the days written (``extra.days``).
"""

from __future__ import annotations

from airflow.sdk import CronDataIntervalTimetable, Param, dag, task

from pipelines.config import get_settings
from pipelines.orchestration import (
    DEFAULT_ARGS,
    RAW_LABELS,
    RAW_TRANSACTIONS,
    days_extra,
    history_start,
    run_day,
)


@dag(
    schedule=CronDataIntervalTimetable("@daily", timezone="UTC"),
    start_date=history_start(),
    catchup=True,
    max_active_runs=2,
    default_args=DEFAULT_ARGS,
    tags=["ingest", "lake"],
    params={
        "day": Param(
            None,
            type=["null", "string"],
            format="date",
            description="Day to ingest (YYYY-MM-DD); empty = the run's data interval.",
        )
    },
    doc_md=__doc__,
)
def ingest_transactions():
    @task(outlets=[RAW_TRANSACTIONS, RAW_LABELS])
    def ingest_day(data_interval_start=None, params=None, outlet_events=None) -> dict:
        from pipelines.ingest.daily import ingest_day

        day = run_day(params, data_interval_start)
        result = ingest_day(day, get_settings())
        if outlet_events is not None:
            written = days_extra(result.day, result.labels_day)
            outlet_events[RAW_TRANSACTIONS].extra = written
            outlet_events[RAW_LABELS].extra = written
        return {
            "day": result.day.isoformat(),
            "source": result.source,
            "transactions": result.transactions,
            "labels_day": result.labels_day.isoformat() if result.labels_day else None,
            "labels": result.labels,
        }

    ingest_day()


ingest_transactions()
