"""The serving process checkpoints the SQLite online store's log from a thread, never inside a
scored payment's commit."""

from __future__ import annotations

from types import SimpleNamespace

from pipelines.featurestore.online import (
    MonotonicSqliteOnlineStore,
    WalCheckpointer,
    checkpoint_in_background,
)
from tests.waiting import wait_for


def _store(online: object, path: str) -> SimpleNamespace:
    config = SimpleNamespace(
        online_store=SimpleNamespace(
            type="pipelines.featurestore.online.MonotonicSqliteOnlineStore",
            path=path,
            vector_enabled=False,
        ),
        repo_path=None,
    )
    return SimpleNamespace(
        config=config, _get_provider=lambda: SimpleNamespace(online_store=online)
    )


def test_commits_no_longer_checkpoint_and_the_thread_does(tmp_path):
    online = MonotonicSqliteOnlineStore()
    store = _store(online, str(tmp_path / "online.db"))
    checkpointer = checkpoint_in_background(store)  # type: ignore[arg-type]
    assert isinstance(checkpointer, WalCheckpointer)
    try:
        conn = online._get_conn(store.config)
        assert conn.execute("pragma journal_mode").fetchone() == ("wal",)
        assert conn.execute("pragma wal_autocheckpoint").fetchone() == (0,)
        conn.execute("create table t (x blob)")
        with conn:
            conn.executemany("insert into t values (?)", [(b"x" * 4000,)] * 3000)
        # ~12 MB, far past SQLite's 1,000-page default: the commit left it all in the log
        # (the database file holds only the schema) ...
        database = tmp_path / "online.db"
        assert database.stat().st_size < 1_000_000
        # ... and the thread copies it into the database.
        wait_for(
            "the checkpoint to copy the log into the database",
            lambda: database.stat().st_size >= 12_000_000,
            10,
            interval=0.1,
        )
    finally:
        checkpointer.stop()


def test_other_online_stores_get_no_checkpointer(tmp_path):
    assert checkpoint_in_background(_store(object(), str(tmp_path / "x.db"))) is None  # type: ignore[arg-type]
