"""Feast from the platform's settings: apply, materialize, retrieval.

The configuration it hands Feast is rendered by ``repo``; the feature definitions live in
``feature_repo/``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import logging
import os
import sys
from collections.abc import Iterator

import duckdb
import feast
import pandas as pd
import yaml
from feast import FeatureStore
from feast.repo_config import load_repo_config
from feast.repo_operations import apply_total

from pipelines.config import Settings, get_settings
from pipelines.features.job import CUSTOMER_TABLE, TERMINAL_LABEL_TABLE, TERMINAL_TABLE
from pipelines.featurestore.repo import FEATURE_REPO, FEATURE_SERVICE, render_config, write_config
from pipelines.lake import files_of_days, partition_days, write_text_atomic

log = logging.getLogger(__name__)


def get_store(settings: Settings) -> FeatureStore:
    return FeatureStore(repo_path=str(FEATURE_REPO), fs_yaml_file=write_config(settings))


@contextlib.contextmanager
def _fresh_definitions() -> Iterator[None]:
    """Feast imports the repo's files as top-level modules: drop cached ones (they hold paths
    of the settings they were first imported with) and restore the working directory."""
    cwd = os.getcwd()
    repo = str(FEATURE_REPO)
    for name, module in list(sys.modules.items()):
        if (getattr(module, "__file__", None) or "").startswith(repo):
            del sys.modules[name]
    sys.path.insert(0, repo)  # as the feast CLI does: the files import each other by name
    try:
        yield
    finally:
        sys.path.remove(repo)
        os.chdir(cwd)


APPLIED_MARKER = "applied-definitions.sha256"


def definitions_fingerprint(settings: Settings) -> str:
    """What ``feast apply`` registers depends on: the definition files, the rendered config
    (registry, stores), the feature tables' folder the sources point at and Feast's version."""
    digest = hashlib.sha256()
    for path in sorted(FEATURE_REPO.rglob("*.py")):
        digest.update(str(path.relative_to(FEATURE_REPO)).encode())
        digest.update(path.read_bytes())
    digest.update(yaml.safe_dump(render_config(settings), sort_keys=True).encode())
    digest.update(str(settings.features_dir).encode())
    digest.update(feast.__version__.encode())
    return digest.hexdigest()


def _registry_has_definitions(settings: Settings) -> bool:
    if not settings.feast_registry_url:
        return (settings.feast_dir / "registry.db").exists()
    return bool(get_store(settings).list_feature_services())


def apply(settings: Settings, *, force: bool = False) -> bool:
    """``feast apply``: register the definitions of ``feature_repo/`` in the registry, unless
    the registry already holds these very definitions (same ``definitions_fingerprint`` as
    the last apply from this home). Returns whether it applied."""
    marker = settings.feast_dir / APPLIED_MARKER
    fingerprint = definitions_fingerprint(settings)
    if (
        not force
        and marker.exists()
        and marker.read_text() == fingerprint
        and _registry_has_definitions(settings)
    ):
        log.info("feast apply skipped: the registry holds these definitions")
        return False
    get_settings.cache_clear()  # the definitions read the settings of this call's environment
    config = load_repo_config(FEATURE_REPO, write_config(settings))
    with _fresh_definitions():
        apply_total(config, FEATURE_REPO, skip_source_validation=False)
    write_text_atomic(marker, fingerprint)
    return True


def materialize(settings: Settings, end: dt.datetime) -> str:
    """Load the online store up to ``end``: incrementally once every view has been loaded.

    Feast's first incremental load reaches back one TTL from the *wall clock*, which misses
    simulated or backfilled history; so a view never loaded before is backfilled explicitly
    over its TTL before ``end``. Returns "incremental" or "backfill".
    """
    fs = get_store(settings)
    views = fs.list_feature_views()
    if views and all(v.most_recent_end_time is not None for v in views):
        fs.materialize_incremental(end_date=end)
        return "incremental"
    longest_ttl = max((v.ttl for v in views if v.ttl), default=dt.timedelta(days=30))
    fs.materialize(start_date=end - longest_ttl, end_date=end)
    return "backfill"


def latest_feature_time(settings: Settings) -> dt.datetime | None:
    """The newest event timestamp in the Spark feature tables (None if there are none)."""
    # The entity states (the pair table only says when a pair last met).
    # The tables are partitioned by the UTC day of event_timestamp: the newest day holds it.
    files = []
    for name in (CUSTOMER_TABLE, TERMINAL_TABLE, TERMINAL_LABEL_TABLE):
        table = settings.features_dir / name
        days = partition_days(table)
        files += [str(f) for f in files_of_days(table, days[-1], days[-1])] if days else []
    if not files:
        return None
    with duckdb.connect() as con:
        query = "select max(event_timestamp) from read_parquet(?, hive_partitioning = false)"
        return con.execute(query, [files]).fetchone()[0]


def materialize_latest(settings: Settings) -> dt.datetime | None:
    """Incremental materialization up to the newest feature row; returns that time."""
    latest = latest_feature_time(settings)
    if latest is not None:
        # materialize's end is exclusive of nothing we have: one µs past the newest row.
        materialize(settings, end=latest + dt.timedelta(microseconds=1))
    return latest


def training_entities(transactions: pd.DataFrame) -> pd.DataFrame:
    """Entity rows for historical retrieval from transactions (one row per transaction).

    The timestamp is 1 µs before the transaction: the join then sees the entity state *before*
    it, exactly what the online store holds when the transaction is scored.
    """
    entities = transactions[["transaction_id", "customer_id", "terminal_id", "tx_amount"]].copy()
    ts = transactions["tx_datetime"]
    entities["event_timestamp"] = ts - dt.timedelta(microseconds=1)
    epoch = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    entities["tx_unix_seconds"] = ((ts - epoch) // dt.timedelta(seconds=1)).astype("int64")
    return entities


def historical_features(
    settings: Settings, entities: pd.DataFrame, service: str = FEATURE_SERVICE
) -> pd.DataFrame:
    """Point-in-time join of the feature service onto ``entities`` (no row may be lost)."""
    store = get_store(settings)
    frame = store.get_historical_features(
        entity_df=entities, features=store.get_feature_service(service)
    ).to_df()
    if len(frame) != len(entities):
        raise RuntimeError(f"historical retrieval returned {len(frame)} rows for {len(entities)}")
    return frame
