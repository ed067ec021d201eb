"""Benchmark: the full feature build on handbook-size data, against a DuckDB-only baseline.

    .venv/bin/python bench/bench_features.py [--days 183]
    .venv/bin/python bench/bench_features.py --growth [--sizes 30 90 180 365] [--json out.json]

Builds a temporary lake of the handbook's world (5,000 customers, 10,000 terminals, from
2018-04-01), then times each stage of ``build_features``: dbt build, the Spark job (spark-submit
on FRAUD_SPARK_MASTER, JVM start included), feast apply and materialization. The baseline,
measured in the same run on the same mart: the handbook's 14 features as one DuckDB SQL query
(window functions with RANGE intervals) — the floor a feature pipeline on one machine meets.
Our job writes a different shape of the same information: the customer's payments of the last
30 days as of each payment (from which the feature store's on-demand view computes the
customer windows at any instant), terminal windows under strict label arrival, the terminals'
newest labels and each customer-terminal pair's last use; and it runs unchanged on a cluster.

``--growth``: what a day costs as the history grows. One lake of the default world grows to
each size N in turn; at each, ``build_features`` rebuilds everything (``full=True``, timed),
then one more day is ingested and the daily build runs as the DAG runs it (incremental from
the days that changed, timed). Per step and in total, with the daily build's ratio to the one
at the smallest size.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import tempfile
import time

BASELINE_SQL = """
with tx as (
    select *, epoch(tx_datetime)::bigint as ts,
           case when label_available_at is not null then tx_fraud end as fraud
    from read_parquet(?, hive_partitioning = false)
)
select
    transaction_id,
    {customer}
    {terminal}
from tx
"""


def baseline_query() -> str:
    customer = "".join(
        f"count(*) over (partition by customer_id order by ts range between {n * 86400 - 1} "
        f"preceding and current row) as customer_nb_tx_{n}d,\n"
        f"avg(tx_amount) over (partition by customer_id order by ts range between "
        f"{n * 86400 - 1} preceding and current row) as customer_avg_amount_{n}d,\n"
        for n in (1, 7, 30)
    )
    terminal = ",\n".join(
        f"count(*) over w{n} as terminal_nb_tx_{n}d,\n"
        f"coalesce(sum(fraud) over w{n} / nullif(count(fraud) over w{n}, 0), 0) "
        f"as terminal_risk_{n}d"
        for n in (1, 7, 30)
    )
    windows = ", ".join(
        f"w{n} as (partition by terminal_id order by ts range between "
        f"{(n + 7) * 86400 - 1} preceding and {7 * 86400} preceding)"
        for n in (1, 7, 30)
    )
    sql = BASELINE_SQL.format(customer=customer, terminal=terminal)
    return f"copy ({sql} window {windows}) to ? (format parquet)"


def timed(label: str, fn, rows: int | None = None):
    t0 = time.perf_counter()
    result = fn()
    took = time.perf_counter() - t0
    rate = f"  ({rows / took:,.0f} rows/s)" if rows else ""
    print(f"{label:42s} {took:7.1f} s{rate}", flush=True)
    return result, took


STEPS = ("dbt build", "spark features", "feast apply", "materialize")


def growth(sizes: list[int], json_out: str | None, keep: str | None = None) -> None:
    """The growth table (module docstring); ``keep``: build the world there and leave it."""
    import contextlib
    import json

    start = dt.date(2018, 4, 1)
    where = contextlib.nullcontext(keep) if keep else tempfile.TemporaryDirectory()
    with where as home:
        os.environ.update(FRAUD_HOME=home, FRAUD_HISTORY_START=start.isoformat())
        from pipelines.config import load_settings
        from pipelines.featurestore.build import build_features
        from pipelines.ingest.daily import ingest_days

        settings = load_settings()
        print(
            f"world: {settings.n_customers:,} customers, {settings.n_terminals:,} terminals, "
            f"from {start}; sizes {sizes}",
            flush=True,
        )
        rows, ingested = [], start - dt.timedelta(days=1)
        for size in sorted(sizes):
            before_last = start + dt.timedelta(days=size - 2)
            if before_last > ingested:
                print(f"ingesting {ingested + dt.timedelta(days=1)} .. {before_last}", flush=True)
                ingest_days(ingested + dt.timedelta(days=1), before_last, settings)
            full, full_s = timed(
                f"full rebuild, {size - 1} days", lambda: build_features(settings, full=True)
            )
            last = before_last + dt.timedelta(days=1)
            ingest_days(last, last, settings)
            ingested = last
            daily, daily_s = timed(f"daily build, day {size}", lambda: build_features(settings))
            rows.append(
                {
                    "days": size,
                    "daily_seconds": round(daily_s, 1),
                    "daily_steps": daily.seconds,
                    "daily_since": str(daily.plan.since),
                    "daily_rows_written": sum(t.rows_written for t in daily.spark.tables.values()),
                    "full_seconds": round(full_s, 1),
                    "full_steps": full.seconds,
                    "transactions": full.spark.input_rows,
                }
            )
    base = rows[0]["daily_seconds"]
    steps = " ".join(f"{label:>8}" for label in ("dbt", "spark", "apply", "online"))
    header = f"{'history':>8} {'transactions':>13} | {'daily':>7} {steps} {'vs first':>8} |"
    header += f" {'full':>7} {steps}"
    print("\n" + header)
    for r in rows:
        daily = " ".join(f"{r['daily_steps'].get(s, 0):8.1f}" for s in STEPS)
        full = " ".join(f"{r['full_steps'].get(s, 0):8.1f}" for s in STEPS)
        print(
            f"{r['days']:>7}d {r['transactions']:>13,} | {r['daily_seconds']:7.1f} {daily} "
            f"{r['daily_seconds'] / base:7.2f}x | {r['full_seconds']:7.1f} {full}"
        )
    if json_out:
        with open(json_out, "w") as f:
            json.dump(rows, f, indent=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=183)
    parser.add_argument("--growth", action="store_true", help="The growth table instead.")
    parser.add_argument("--sizes", type=int, nargs="+", default=[30, 90, 180, 365])
    parser.add_argument("--json", default=None, help="Also write the growth rows here.")
    parser.add_argument(
        "--keep", default=None, help="Growth: build the world in this empty folder and keep it."
    )
    args = parser.parse_args()
    if args.growth:
        growth(args.sizes, args.json, args.keep)
        return
    start = dt.date(2018, 4, 1)
    last = start + dt.timedelta(days=args.days - 1)

    with tempfile.TemporaryDirectory() as home:
        os.environ.update(FRAUD_HOME=home, FRAUD_HISTORY_START=start.isoformat())
        import duckdb

        from pipelines.config import load_settings
        from pipelines.features.runner import run_feature_job
        from pipelines.featurestore import store
        from pipelines.ingest.daily import ingest_days
        from pipelines.transform.dbt import run_dbt_build
        from pipelines.transform.mart import mart_files

        settings = load_settings()

        def ingest() -> int:
            return sum(r.transactions for r in ingest_days(start, last, settings))

        print(f"handbook world, {start} .. {last}")
        rows, _ = timed("ingest (simulate + write, all days)", ingest)
        print(f"{rows:,} transactions")
        timed("dbt build (staging, mart, tests)", lambda: run_dbt_build(settings), rows)
        _, spark = timed(
            "Spark feature job (spark-submit)", lambda: run_feature_job(settings), rows
        )
        timed("feast apply", lambda: store.apply(settings))
        timed("materialize (online store, SQLite)", lambda: store.materialize_latest(settings))

        out = os.path.join(home, "baseline.parquet")
        query = baseline_query()

        def baseline() -> None:
            with duckdb.connect() as con:
                con.execute(query, [mart_files(settings), out])

        _, floor = timed("baseline: 14 features, one DuckDB query", baseline, rows)
        print(f"Spark job / DuckDB baseline: {spark / floor:.1f}x the time")


if __name__ == "__main__":
    main()
