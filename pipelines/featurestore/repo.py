"""The feature repository's place and its rendered configuration: no Feast import.

``feature_store.yaml`` is rendered from the settings into ``<home>/feast/`` (never into the
repository), so several homes (a running system and the tests) never share one. Light
processes (``services``, the lineage launchers) import this module for the paths and names;
``store`` is what talks to Feast.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from pipelines.config import PROJECT_ROOT, Settings

FEATURE_REPO = PROJECT_ROOT / "feature_repo"
FEATURE_SERVICE = "fraud_model_v1"
# Feast's SQLite store, keeping the newest row per entity like its Redis store (online.py).
SQLITE_ONLINE_STORE = "pipelines.featurestore.online.MonotonicSqliteOnlineStore"
# Feast's DuckDB store, whose point-in-time join fetches features of picked rows only (offline.py).
OFFLINE_STORE = "pipelines.featurestore.offline.LeanJoinDuckDBOfflineStore"


def render_config(settings: Settings) -> dict:
    """The feature_store.yaml content for these settings (embedded or production profile)."""
    feast_dir = settings.feast_dir
    if settings.feast_registry_url:
        registry = {
            "registry_type": "sql",
            "path": settings.feast_registry_url,
            "cache_ttl_seconds": 60,
        }
    else:
        registry = {"path": str(feast_dir / "registry.db"), "cache_ttl_seconds": 60}
    if settings.feast_online_store == "redis":
        online = {"type": "redis", "connection_string": settings.feast_redis_url}
    else:
        online = {"type": SQLITE_ONLINE_STORE, "path": str(feast_dir / "online.db")}
    return {
        "project": settings.feast_project,
        "provider": "local",
        "registry": registry,
        # The file offline store silently drops entity rows without a feature row in TTL.
        "offline_store": {"type": OFFLINE_STORE},
        "online_store": online,
        "entity_key_serialization_version": 3,
        "auth": {"type": "no_auth"},
    }


def write_config(settings: Settings) -> Path:
    settings.feast_dir.mkdir(parents=True, exist_ok=True)
    path = settings.feast_dir / "feature_store.yaml"
    text = yaml.safe_dump(render_config(settings), sort_keys=False)
    if not path.exists() or path.read_text() != text:
        path.write_text(text)
    return path
