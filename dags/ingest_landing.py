"""Ingest of Parquet/CSV files dropped in the landing folder (the second source mode).

Every file is validated whole; a bad one goes to the quarantine folder with a reason file and
nothing of it reaches the lake. Runs every 15 minutes; an empty landing folder is a no-op.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import dag, task

from pipelines.config import get_settings
from pipelines.orchestration import DEFAULT_ARGS, RAW_TRANSACTIONS, history_start


@dag(
    schedule=dt.timedelta(minutes=15),
    start_date=history_start(),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["ingest", "lake", "landing"],
    doc_md=__doc__,
)
def ingest_landing():
    @task(outlets=[RAW_TRANSACTIONS])
    def ingest_landing_files() -> dict:
        from airflow.sdk.exceptions import AirflowSkipException

        from pipelines.ingest.landing import ingest_landing

        report = ingest_landing(get_settings())
        if not report.ingested:
            # Skipped: no asset event, so downstream DAGs are not woken for nothing.
            raise AirflowSkipException(f"nothing ingested; quarantined: {report.quarantined}")
        return {"ingested": report.ingested, "quarantined": report.quarantined}

    ingest_landing_files()


ingest_landing()
