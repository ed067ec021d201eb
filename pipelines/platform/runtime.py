"""First-start initialisation of the runtime folder."""

from __future__ import annotations

import datetime as dt

from pipelines.config import Settings, load_settings


def initialise(settings: Settings) -> Settings:
    """Create the runtime folders and pin the history start; returns the reloaded settings.

    The history start is fixed once (today - history_days) in ``runtime.env`` so that the
    ingest DAG's ``start_date`` is the same at every parse, today and next month.
    """
    for folder in (settings.home, settings.data_dir, settings.landing_dir):
        folder.mkdir(parents=True, exist_ok=True)
    if settings.history_start is None:
        start = dt.date.today() - dt.timedelta(days=settings.history_days)
        with open(settings.runtime_env_file, "a") as fh:
            fh.write(f"FRAUD_HISTORY_START={start.isoformat()}\n")
    return load_settings()
