"""The production profile against this machine's real PostgreSQL and Redis.

Every test gets fresh resources and removes them: a PostgreSQL database per use
(``fraud_test_<purpose>_<random>``, dropped at the end of the session) and a Feast project
name per test module (Redis keys end with the project name; deleted afterwards). Connection
defaults follow libpq's variables (PGHOST, PGPORT, PGUSER) and REDIS_HOST/REDIS_PORT.

A test skips (with the reason) only when the server does not answer at all.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pipelines.config import Settings
from tests import worlds

PG_HOST = os.environ.get("PGHOST", "127.0.0.1")
PG_PORT = int(os.environ.get("PGPORT", "5432"))
PG_USER = os.environ.get("PGUSER", "postgres")
REDIS_HOST = os.environ.get("REDIS_HOST", "127.0.0.1")
REDIS_PORT = int(os.environ.get("REDIS_PORT", "6379"))

# The shared world's size and calendar (tests/worlds.py): its lake serves this suite too.
BASE_ENV = {k: v for k, v in worlds.ENV.items() if k != "FRAUD_SPARK_MASTER"}


def pg_url(database: str, driver: str = "postgresql+psycopg2") -> str:
    return f"{driver}://{PG_USER}@{PG_HOST}:{PG_PORT}/{database}"


def _admin_connection():
    import psycopg2

    conn = psycopg2.connect(
        host=PG_HOST, port=PG_PORT, user=PG_USER, dbname="postgres", connect_timeout=5
    )
    conn.autocommit = True  # CREATE/DROP DATABASE cannot run in a transaction
    return conn


def query(database: str, sql: str) -> list[tuple]:
    """The rows of ``sql`` run on ``database`` (one of the tests' own databases)."""
    import psycopg2

    conn = psycopg2.connect(
        host=PG_HOST, port=PG_PORT, user=PG_USER, dbname=database, connect_timeout=5
    )
    with contextlib.closing(conn), conn.cursor() as cur:
        cur.execute(sql)
        return cur.fetchall()


@contextlib.contextmanager
def profile(**env: str | Path) -> Iterator[Settings]:
    """Settings of a profile given as FRAUD_* variables (over the world's size and calendar),
    set in os.environ while inside."""
    with worlds.settings_from_env({**BASE_ENV, **env}) as settings:
        yield settings


@pytest.fixture(scope="session")
def postgres() -> None:
    """Skip (with the reason) if PostgreSQL does not answer."""
    import psycopg2

    try:
        _admin_connection().close()
    except psycopg2.OperationalError as exc:
        pytest.skip(f"PostgreSQL not reachable at {PG_HOST}:{PG_PORT} as {PG_USER}: {exc}")


@pytest.fixture(scope="session")
def fresh_database(postgres) -> Iterator[Callable[[str], str]]:
    """Factory: create an empty database for a purpose, return its name; all dropped at end."""
    created: list[str] = []

    def create(purpose: str) -> str:
        name = f"fraud_test_{purpose}_{secrets.token_hex(4)}"
        with contextlib.closing(_admin_connection()) as conn, conn.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
        created.append(name)
        return name

    yield create
    with contextlib.closing(_admin_connection()) as conn, conn.cursor() as cur:
        for name in created:
            # FORCE: a server we stopped may leave a pooled connection behind for a moment.
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def database_exists(name: str) -> bool:
    with contextlib.closing(_admin_connection()) as conn, conn.cursor() as cur:
        cur.execute("select 1 from pg_database where datname = %s", (name,))
        return cur.fetchone() is not None


@pytest.fixture(scope="session")
def redis_client():
    import redis

    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, socket_connect_timeout=5)
    try:
        client.ping()
    except redis.ConnectionError as exc:
        pytest.skip(f"Redis not reachable at {REDIS_HOST}:{REDIS_PORT}: {exc}")
    yield client
    client.close()


def redis_keys(client, project: str) -> list[bytes]:
    """Feast's Redis keys of one project: the serialized entity key followed by the project."""
    return list(client.scan_iter(match=f"*{project}".encode(), count=1000))


@pytest.fixture(scope="session")
def small_lake(shared_world) -> Settings:
    """The shared world's lake, mart and Spark tables (local[2]): the reference tables. Read
    only: a test that needs a home of its own points FRAUD_DATA_DIR here."""
    with worlds.world_settings(shared_world) as settings:
        return settings
