"""First-start initialisation of the runtime folder."""

from __future__ import annotations

import datetime as dt

from pipelines.config import Settings, load_settings
from pipelines.lake import utc_today
from pipelines.registry import tracking


def initialise(settings: Settings) -> Settings:
    """Create the runtime folders, pin the history start (and the live start) and create the
    embedded tracking store; returns the reloaded settings.

    The history start is fixed once (today - history_days) in ``runtime.env`` so that the
    ingest DAG's ``start_date`` is the same at every parse, today and next month. With live
    traffic on, today is pinned as the first live day: the history before it is backfilled
    from the simulator, the payments from it on reach the lake through the scoring API.

    The embedded (SQLite) MLflow store is created here, before the services that share it
    start: processes opening a new SQLite store at the same moment race to create its schema
    and one fails ("table _alembic_tmp_experiments already exists"). A server store (the
    production profile) belongs to its MLflow server.
    """
    for folder in (settings.home, settings.data_dir, settings.landing_dir):
        folder.mkdir(parents=True, exist_ok=True)
    pins = []
    if settings.history_start is None:
        start = utc_today() - dt.timedelta(days=settings.history_days)
        pins.append(f"FRAUD_HISTORY_START={start.isoformat()}")
    if settings.live_traffic and settings.live_start is None:
        pins.append(f"FRAUD_LIVE_START={utc_today().isoformat()}")
    if pins:
        with open(settings.runtime_env_file, "a") as fh:
            fh.write("".join(f"{line}\n" for line in pins))
    settings = load_settings()
    if settings.tracking_uri.startswith("sqlite:///"):
        tracking.experiment_id(settings)
    return settings
