"""The embedded online store: Feast's SQLite store, where an older row never replaces a newer one.

Two writers feed the online store: materialization (the Spark tables, up to the last batch)
and serving's push after every scored payment (``serving/stream.py``), which is usually newer.
Feast's Redis store already keeps the newer row (it compares event timestamps to the
nanosecond and skips a write that is not newer); its SQLite store overwrites unconditionally,
so a materialization would put a card back to yesterday's state. This store makes SQLite
behave like Redis: per entity and feature, a write whose event timestamp is not newer than the
stored one is skipped.

Configured by ``pipelines.featurestore.repo.render_config`` (``SQLITE_ONLINE_STORE``).
"""

from __future__ import annotations

import datetime as dt
import logging
import sqlite3
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from feast import FeatureView
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.infra.online_stores.sqlite import (
    SqliteOnlineStore,
    SqliteOnlineStoreConfig,
    _quote_id,
    _table_id,
)
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.repo_config import RepoConfig
from feast.utils import to_naive_utc

if TYPE_CHECKING:
    from feast import FeatureStore

log = logging.getLogger(__name__)


class MonotonicSqliteOnlineStoreConfig(SqliteOnlineStoreConfig):
    type: Literal["pipelines.featurestore.online.MonotonicSqliteOnlineStore"] = (
        "pipelines.featurestore.online.MonotonicSqliteOnlineStore"
    )


class MonotonicSqliteOnlineStore(SqliteOnlineStore):
    """``SqliteOnlineStore`` whose writes keep, per row, the newest event timestamp.

    The file is in WAL mode with ``synchronous=NORMAL``: a commit (two per scored payment)
    no longer waits for the disk (~0.75 ms each with the default rollback journal), readers
    never block the writer, and a committed write survives a crash of any process (a power
    loss may take back the last commits, as for the prediction log's journal).
    """

    def _get_conn(self, config: RepoConfig) -> Any:
        new = self._conn is None
        conn = super()._get_conn(config)
        if new:
            conn.execute("pragma journal_mode=wal")  # persists in the file
            conn.execute("pragma synchronous=normal")  # per connection
        return conn

    def online_write_batch(
        self,
        config: RepoConfig,
        table: FeatureView,
        data: list[tuple[EntityKeyProto, dict[str, ValueProto], dt.datetime, dt.datetime | None]],
        progress: Callable[[int], Any] | None,
    ) -> None:
        name = _quote_id(
            _table_id(config.project, table, config.registry.enable_online_feature_view_versioning)
        )
        # Feast's SQLite adapter stores a timestamp as whole Unix seconds: the comparison is to
        # the second (serving stamps its pushes in whole seconds for that reason).
        upsert = (
            f"INSERT INTO {name} (entity_key, feature_name, value, event_ts, created_ts) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT(entity_key, feature_name) DO UPDATE SET "
            "value = excluded.value, event_ts = excluded.event_ts, "
            f"created_ts = excluded.created_ts WHERE excluded.event_ts > {name}.event_ts"
        )
        version = config.entity_key_serialization_version
        rows = []
        for entity_key, values, timestamp, created in data:
            key = serialize_entity_key(entity_key, entity_key_serialization_version=version)
            event_ts = to_naive_utc(timestamp)
            created_ts = None if created is None else to_naive_utc(created)
            rows += [
                (key, feature, value.SerializeToString(), event_ts, created_ts)
                for feature, value in values.items()
            ]
        conn = self._get_conn(config)
        with conn:  # one transaction, one statement for the whole batch
            conn.executemany(upsert, rows)
        if progress:
            progress(len(data))


class WalCheckpointer:
    """Checkpoints the SQLite online store's write-ahead log from a thread, off the request
    path.

    By default SQLite checkpoints inside the commit that takes the log past 1,000 pages: on
    the serving path that is one scored payment in a few hundred waiting ~15 ms for the copy
    and its fsync (measured at the default world size). A serving process turns that off on
    its own connection and checkpoints every ``every_seconds`` on a connection of this
    thread instead (``PASSIVE``: it never blocks a reader or a writer; Python's sqlite3
    releases the GIL while it runs). Other writers (materialization) keep SQLite's default.
    """

    def __init__(self, store: FeatureStore, every_seconds: float = 1.0) -> None:
        online = store._get_provider().online_store
        self.path = online._get_db_path(store.config)
        online._get_conn(store.config).execute("pragma wal_autocheckpoint=0")
        self.every_seconds = every_seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="wal-checkpoint", daemon=True)
        self._thread.start()

    def checkpoint(self, conn: sqlite3.Connection) -> tuple[int, int, int]:
        """One passive checkpoint: (busy, frames in the log, frames checkpointed)."""
        return conn.execute("pragma wal_checkpoint(PASSIVE)").fetchone()

    def _run(self) -> None:
        conn = sqlite3.connect(self.path, timeout=1.0, check_same_thread=False)
        try:
            while not self._stop.wait(self.every_seconds):
                try:
                    self.checkpoint(conn)
                except sqlite3.Error:
                    log.exception("online store checkpoint failed; retrying")
        finally:
            conn.close()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def checkpoint_in_background(store: FeatureStore) -> WalCheckpointer | None:
    """A ``WalCheckpointer`` for ``store`` when its online store is this SQLite store
    (Redis needs none)."""
    if not isinstance(store._get_provider().online_store, MonotonicSqliteOnlineStore):
        return None
    return WalCheckpointer(store)
