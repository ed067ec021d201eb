"""Benchmark: the production profile's engines against the embedded ones, in the same run.

    .venv/bin/python bench/bench_production.py [--days 30] [--customers 5000] [--reads 2000]

1. Serving path: online feature reads through the feature service (one transaction per read,
   in process, as the scoring service does), Feast online store on Redis with the SQL registry
   on PostgreSQL vs SQLite with the file registry; p50/p99 over ``--reads`` reads each.
2. The Spark feature job (spark-submit, JVM start included) on ``local[2]`` vs a local Spark
   standalone cluster (one master, one worker with the same 2 cores) started from pyspark.

Needs PostgreSQL (PGHOST/PGPORT/PGUSER, default postgres@127.0.0.1:5432) and Redis
(REDIS_HOST/REDIS_PORT, default 127.0.0.1:6379). Everything it creates — a temporary home, a
database, a Feast project's Redis keys, the Spark processes — is removed at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import random
import secrets
import shutil
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from pipelines.platform.process import free_port

PG_HOST = os.environ.get("PGHOST", "127.0.0.1")
PG_PORT = int(os.environ.get("PGPORT", "5432"))
PG_USER = os.environ.get("PGUSER", "postgres")
REDIS_HOST = os.environ.get("REDIS_HOST", "127.0.0.1")
REDIS_PORT = int(os.environ.get("REDIS_PORT", "6379"))
START = dt.date(2018, 4, 1)


@contextlib.contextmanager
def environment(**values: object) -> Iterator[None]:
    """FRAUD_* variables for one profile (Feast reads them when it imports the repo)."""
    from pipelines.config import get_settings

    saved = {k: os.environ.get(k) for k in values}
    os.environ.update({k: str(v) for k, v in values.items()})
    get_settings.cache_clear()
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        get_settings.cache_clear()


@contextlib.contextmanager
def postgres_database() -> Iterator[str]:
    import psycopg2

    name = f"fraud_bench_{secrets.token_hex(4)}"
    conn = psycopg2.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname="postgres")
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
        yield f"postgresql+psycopg://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}"
    finally:
        with conn.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.close()


def timed(label: str, fn):
    t0 = time.perf_counter()
    result = fn()
    took = time.perf_counter() - t0
    print(f"{label:52s} {took:7.1f} s", flush=True)
    return result, took


def entity_rows(settings, n: int, seed: int = 0) -> list[dict]:
    """Scoring requests: known customers at terminals they use, just after the newest state."""
    import pyarrow.parquet as pq

    pairs = pq.read_table(
        settings.features_dir / "customer_terminal_features",
        columns=["customer_id", "terminal_id", "pair_last_tx_unix"],
    ).to_pandas()
    now = int(pairs.pair_last_tx_unix.max()) + 600
    sample = pairs.sample(n=n, replace=len(pairs) < n, random_state=seed)
    rng = random.Random(seed)
    return [
        {
            "customer_id": int(r.customer_id),
            "terminal_id": int(r.terminal_id),
            "transaction_id": -1,  # a payment no state holds
            "tx_amount": round(rng.uniform(5, 200), 2),
            "tx_unix_seconds": now,
        }
        for r in sample.itertuples()
    ]


def read_latency(settings, rows: list[dict], warmup: int = 50) -> tuple[float, float]:
    """p50 and p99 (ms) of one online read per row through the feature service."""
    from pipelines.featurestore import store

    fs = store.get_store(settings)
    service = fs.get_feature_service(store.FEATURE_SERVICE)
    for row in rows[:warmup]:
        fs.get_online_features(features=service, entity_rows=[row])
    samples = []
    for row in rows:
        t0 = time.perf_counter()
        fs.get_online_features(features=service, entity_rows=[row]).to_dict()
        samples.append((time.perf_counter() - t0) * 1000)
    cuts = statistics.quantiles(samples, n=100)
    return cuts[49], cuts[98]


def bench_online(lake, home: Path, reads: int) -> None:
    import redis

    from pipelines.config import load_settings
    from pipelines.featurestore import store

    project = f"fraudbench_{secrets.token_hex(4)}"
    common = {"FRAUD_DATA_DIR": lake.data_dir, "FRAUD_FEAST_PROJECT": project}
    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT)
    figures = {}
    try:
        with postgres_database() as registry_url:
            profiles = {
                "SQLite (file registry)": {"FRAUD_HOME": home / "sqlite", **common},
                "Redis (PostgreSQL registry)": {
                    "FRAUD_HOME": home / "redis",
                    "FRAUD_FEAST_ONLINE_STORE": "redis",
                    "FRAUD_FEAST_REDIS_URL": f"{REDIS_HOST}:{REDIS_PORT},db=0",
                    "FRAUD_FEAST_REGISTRY_URL": registry_url,
                    **common,
                },
            }
            rows = entity_rows(lake, reads)
            for label, env in profiles.items():
                with environment(**env):
                    settings = load_settings()
                    timed(f"feast apply, {label}", lambda s=settings: store.apply(s))
                    timed(f"materialize, {label}", lambda s=settings: store.materialize_latest(s))
                    figures[label] = read_latency(settings, rows)
    finally:
        keys = list(client.scan_iter(match=f"*{project}".encode(), count=1000))
        if keys:
            client.delete(*keys)
        client.close()
    print(f"\nonline read through the feature service, {reads:,} reads each (in process):")
    for label, (p50, p99) in figures.items():
        print(f"  {label:30s} p50 {p50:6.2f} ms   p99 {p99:6.2f} ms")
    (s50, s99), (r50, r99) = figures.values()
    print(f"  Redis / SQLite: p50 {r50 / s50:.2f}x, p99 {r99 / s99:.2f}x")


def bench_spark(lake, home: Path, cores: int) -> None:
    from pipelines.config import load_settings
    from pipelines.features.runner import run_feature_job
    from pipelines.platform.spark import SparkStandalone

    cluster = SparkStandalone(
        home=home / "spark",
        master_port=free_port(),
        master_webui_port=free_port(),
        worker_port=free_port(),
        worker_webui_port=free_port(),
        worker_cores=cores,
        worker_memory="2g",
    )
    try:
        timed(f"start standalone master + worker ({cores} cores)", cluster.up)
        with environment(FRAUD_HOME=home / "cluster", FRAUD_SPARK_MASTER=cluster.master_url):
            settings = load_settings()
            shutil.copytree(lake.marts_dir, settings.marts_dir)
            remote, remote_s = timed(
                f"feature job on {cluster.master_url}", lambda: run_feature_job(settings)
            )
    finally:
        cluster.down()
    with environment(FRAUD_HOME=home / "local", FRAUD_SPARK_MASTER=f"local[{cores}]"):
        settings = load_settings()
        shutil.copytree(lake.marts_dir, settings.marts_dir)
        local, local_s = timed(f"feature job on local[{cores}]", lambda: run_feature_job(settings))
    print(f"\nSpark feature job, {local.input_rows:,} transactions (spark-submit, JVM included):")
    for label, took, result in (
        (f"local[{cores}]", local_s, local),
        ("standalone cluster", remote_s, remote),
    ):
        print(f"  {label:20s} {took:6.1f} s  (inside the job {result.job_seconds:.1f} s)")
    print(f"  cluster / local: {remote_s / local_s:.2f}x")


def servers_missing() -> str | None:
    """Why the benchmark cannot run here (None when PostgreSQL and Redis both answer)."""
    import psycopg2
    import redis

    try:
        psycopg2.connect(
            host=PG_HOST, port=PG_PORT, user=PG_USER, dbname="postgres", connect_timeout=5
        ).close()
        redis.Redis(host=REDIS_HOST, port=REDIS_PORT, socket_connect_timeout=5).ping()
    except (psycopg2.OperationalError, redis.ConnectionError) as exc:
        return str(exc).strip()
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--customers", type=int, default=5000)
    parser.add_argument("--terminals", type=int, default=10000)
    parser.add_argument("--reads", type=int, default=2000)
    parser.add_argument("--cores", type=int, default=2, help="local[N] and the worker's cores")
    args = parser.parse_args()
    if reason := servers_missing():
        # `make bench` runs every benchmark: say why this one did not, and let the others run.
        print(f"SKIPPED: needs PostgreSQL and Redis ({reason})")
        return

    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        os.environ.update(
            FRAUD_N_CUSTOMERS=str(args.customers),
            FRAUD_N_TERMINALS=str(args.terminals),
            FRAUD_HISTORY_START=START.isoformat(),
        )
        from pipelines.config import load_settings
        from pipelines.features.runner import run_feature_job
        from pipelines.ingest.daily import ingest_days
        from pipelines.transform.dbt import run_dbt_build

        with environment(FRAUD_HOME=home / "lake"):
            lake = load_settings()
        last = START + dt.timedelta(days=args.days - 1)
        print(f"world: {args.customers:,} customers, {args.terminals:,} terminals, {args.days} d")

        def ingest() -> int:
            return sum(r.transactions for r in ingest_days(START, last, lake))

        rows, _ = timed("ingest", ingest)
        print(f"{rows:,} transactions")
        timed("dbt build", lambda: run_dbt_build(lake))
        timed("feature tables for Feast (local Spark job)", lambda: run_feature_job(lake))
        bench_online(lake, home, args.reads)
        print()
        bench_spark(lake, home, args.cores)


if __name__ == "__main__":
    main()
