"""Feast in the production profile: online store on Redis, SQL registry on PostgreSQL.

One lake (dbt + Spark on local[2]), two homes over it: the embedded profile (SQLite registry
and online store) and the production profile (PostgreSQL registry, Redis online store), each
applied and materialized by the same code. Serving parity: the feature service's online
vectors are identical in both.
"""

from __future__ import annotations

import concurrent.futures as cf
import datetime as dt
import math
import secrets
import threading

import pyarrow.parquet as pq
import pytest

from pipelines.featurestore import repo, store
from serving.schemas import Transaction
from serving.stream import card_locks, push_payments, read_states
from tests.production.conftest import (
    REDIS_HOST,
    REDIS_PORT,
    database_exists,
    pg_url,
    profile,
    redis_keys,
)

# Feast keys in Redis end with the project name: a unique project isolates this run's keys.
PROJECT = f"fraudtest_{secrets.token_hex(4)}"
UNKNOWN_CUSTOMER, UNKNOWN_TERMINAL = 9_999_999, 8_888_888


def _build(settings) -> None:
    store.apply(settings)
    assert store.materialize_latest(settings) is not None


@pytest.fixture(scope="module")
def profiles(small_lake, fresh_database, redis_client, tmp_path_factory):
    """(embedded settings, production settings, registry database), both materialized."""
    shared = {"FRAUD_DATA_DIR": small_lake.data_dir, "FRAUD_FEAST_PROJECT": PROJECT}
    with profile(FRAUD_HOME=tmp_path_factory.mktemp("feast-sqlite"), **shared) as embedded:
        _build(embedded)
    registry_db = fresh_database("feast")
    production_env = {
        **shared,
        "FRAUD_HOME": tmp_path_factory.mktemp("feast-redis"),
        "FRAUD_FEAST_ONLINE_STORE": "redis",
        "FRAUD_FEAST_REDIS_URL": f"{REDIS_HOST}:{REDIS_PORT},db=0",
        "FRAUD_FEAST_REGISTRY_URL": pg_url(registry_db, "postgresql+psycopg"),
    }
    try:
        with profile(**production_env) as production:
            _build(production)
        yield embedded, production, registry_db
    finally:
        keys = redis_keys(redis_client, PROJECT)
        if keys:
            redis_client.delete(*keys)
        assert redis_keys(redis_client, PROJECT) == []


def _entity_rows(settings) -> list[dict]:
    """Every customer at its last terminal ten minutes after the newest state, plus misses."""
    customers = pq.read_table(settings.features_dir / "customer_terminal_features").to_pandas()
    last = customers.sort_values("event_timestamp").groupby("customer_id").tail(1)
    now = int(last.pair_last_tx_unix.max()) + 600
    rows = [
        {
            "customer_id": int(r.customer_id),
            "terminal_id": int(r.terminal_id),
            "transaction_id": -1,  # a payment no state holds
            "tx_amount": 10.0 + (int(r.customer_id) % 17) * 7.5,
            "tx_unix_seconds": now,
        }
        for r in last.itertuples()
    ]
    # An unseen customer at a known terminal, and a known customer at an unseen terminal.
    rows.append({**rows[0], "customer_id": UNKNOWN_CUSTOMER})
    rows.append({**rows[1], "terminal_id": UNKNOWN_TERMINAL})
    return rows


def _online(settings, rows: list[dict]) -> dict[str, list]:
    fs = store.get_store(settings)
    service = fs.get_feature_service(store.FEATURE_SERVICE)
    return fs.get_online_features(features=service, entity_rows=rows).to_dict()


def _same(a: object, b: object) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return type(a) is type(b) and a == b


def test_serving_parity_between_sqlite_and_redis(profiles):
    embedded, production, _ = profiles
    rows = _entity_rows(embedded)
    sqlite_vectors = _online(embedded, rows)
    redis_vectors = _online(production, rows)

    assert sqlite_vectors.keys() == redis_vectors.keys()
    for name, values in sqlite_vectors.items():
        mismatches = [
            (i, a, b)
            for i, (a, b) in enumerate(zip(values, redis_vectors[name], strict=True))
            if not _same(a, b)
        ]
        assert not mismatches, (name, mismatches[:5])
    # Parity of empty answers would prove nothing: the stores hold real state.
    known = len(rows) - 2
    assert sum(v is not None for v in redis_vectors["terminal_nb_tx_30d"]) >= known * 0.9
    assert redis_vectors["customer_is_new"][-2] == 1  # the unseen customer
    assert sum(v == 0 for v in redis_vectors["customer_is_new"]) >= known * 0.9


def test_the_production_profile_really_uses_redis_and_postgres(profiles, redis_client):
    _, production, registry_db = profiles
    # Online rows are in Redis under this project, and no SQLite store or file registry exists.
    assert len(redis_keys(redis_client, PROJECT)) > 0
    assert repo.render_config(production)["online_store"]["type"] == "redis"
    assert not (production.feast_dir / "online.db").exists()
    assert not (production.feast_dir / "registry.db").exists()
    assert database_exists(registry_db)


def test_sql_registry_on_postgres_holds_the_definitions(profiles):
    import sqlalchemy as sa

    _, production, registry_db = profiles
    engine = sa.create_engine(pg_url(registry_db, "postgresql+psycopg"))
    try:
        with engine.connect() as conn:
            views = conn.execute(
                sa.text("select feature_view_name from feature_views where project_id = :p"),
                {"p": PROJECT},
            ).scalars()
            services = conn.execute(
                sa.text("select feature_service_name from feature_services where project_id = :p"),
                {"p": PROJECT},
            ).scalars()
            assert {
                "customer_state",
                "terminal_state",
                "terminal_labels",
                "customer_terminal_history",
            } <= set(views)
            assert list(services) == [store.FEATURE_SERVICE]
    finally:
        engine.dispose()
    # A fresh store object (no cache) reads the same definitions back from PostgreSQL.
    with profile(
        FRAUD_HOME=production.home,
        FRAUD_DATA_DIR=production.data_dir,
        FRAUD_FEAST_PROJECT=PROJECT,
        FRAUD_FEAST_ONLINE_STORE="redis",
        FRAUD_FEAST_REDIS_URL=production.feast_redis_url,
        FRAUD_FEAST_REGISTRY_URL=production.feast_registry_url,
    ) as again:
        fs = store.get_store(again)
        odfvs = {v.name for v in fs.list_on_demand_feature_views()}
        assert "transaction_features" in odfvs
        assert all(v.most_recent_end_time is not None for v in fs.list_feature_views())


def _payment(tid: int, customer: int, when: dt.datetime) -> Transaction:
    return Transaction(
        transaction_id=tid, customer_id=customer, terminal_id=1, tx_amount=5.0, tx_datetime=when
    )


@pytest.mark.parametrize("profile_name", ["sqlite", "redis"])
def test_concurrent_payments_of_one_card_are_all_counted(profiles, profile_name):
    """Four writers (one feature store each, as four replicas would have) fold ten payments
    each into one card's state at once, holding the card's lock: no update is lost."""
    embedded, production, _ = profiles
    settings = embedded if profile_name == "sqlite" else production
    customer, start = 7_000_000 + len(profile_name), dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
    locks = card_locks(settings)
    go = threading.Barrier(4)

    def writer(w: int) -> None:
        fs = store.get_store(settings)
        go.wait()
        for k in range(10):
            tx = _payment(100 * w + k, customer, start + dt.timedelta(seconds=k))
            with locks.holding([customer]):
                assert push_payments(fs, [tx]) == 1

    with cf.ThreadPoolExecutor(4) as pool:
        for future in [pool.submit(writer, w) for w in range(4)]:
            future.result()
    state = read_states(store.get_store(settings), [customer])[customer]
    assert sorted(state.ids) == sorted(100 * w + k for w in range(4) for k in range(10))
    assert list(state.unix) == sorted(state.unix)


@pytest.mark.parametrize("profile_name", ["sqlite", "redis"])
def test_a_materialization_keeps_the_newer_streamed_state(profiles, profile_name):
    embedded, production, _ = profiles
    settings = embedded if profile_name == "sqlite" else production
    fs = store.get_store(settings)
    customers = pq.read_table(settings.features_dir / "customer_features").to_pandas()
    newest = customers.sort_values("event_timestamp").iloc[-1]
    customer = int(newest.customer_id)
    before = read_states(fs, [customer])[customer]
    later = newest.event_timestamp.to_pydatetime() + dt.timedelta(minutes=1)
    with card_locks(settings).holding([customer]):
        assert push_payments(fs, [_payment(10**12, customer, later)]) == 1
    fs.materialize(
        start_date=newest.event_timestamp - dt.timedelta(days=1),
        end_date=newest.event_timestamp + dt.timedelta(microseconds=1),
    )
    after = read_states(store.get_store(settings), [customer])[customer]
    assert after.ids == (*before.ids, 10**12)
