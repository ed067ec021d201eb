"""Benchmark: scoring latency over HTTP, against the same work done in process.

    .venv/bin/python bench/bench_serving.py [--requests 1000] [--clients 8]

Builds a small world (ingest, dbt, Spark, Feast apply + materialize), registers a small
network in MLflow as champion, starts ``bentoml serve`` and measures one transaction per
request: sequential p50/p99 and throughput, then ``--clients`` concurrent clients. Baseline in
the same run: the service's own work (Feast online read through the feature service +
prediction) called in process, without HTTP — the difference is the cost of the server.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import datetime as dt
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np


def percentiles(samples: list[float]) -> str:
    a = np.asarray(samples) * 1000
    return f"p50 {np.percentile(a, 50):.2f} ms, p99 {np.percentile(a, 99):.2f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

    with tempfile.TemporaryDirectory() as home:
        os.environ.update(
            FRAUD_HOME=home,
            FRAUD_N_CUSTOMERS="1000",
            FRAUD_N_TERMINALS="2000",
            FRAUD_HISTORY_START="2018-04-01",
            FRAUD_MODEL_POLL_SECONDS="3600",
            BENTOML_DO_NOT_TRACK="True",
            BENTOML_HOME=os.path.join(home, "bentoml"),
        )
        import mlflow
        import pyarrow.parquet as pq

        from pipelines.config import load_settings
        from pipelines.features.runner import run_feature_job
        from pipelines.featurestore import store
        from pipelines.ingest.simulated import ingest_simulated_day
        from pipelines.transform.dbt import mart_file, run_dbt_build
        from serving.features import fetch
        from serving.model import load_champion
        from serving.schemas import Transaction
        from tests.e2e.test_serving import Server, _register

        settings = load_settings()
        print("building a 30-day world of 1,000 customers…", flush=True)
        for i in range(30):
            ingest_simulated_day(dt.date(2018, 4, 1) + dt.timedelta(days=i), settings)
        run_dbt_build(settings)
        run_feature_job(settings)
        store.apply(settings)
        store.materialize_latest(settings)
        mart = pq.read_table(mart_file(settings)).to_pandas()
        labelled = mart[mart.tx_fraud.notna()]
        frame = store.historical_features(settings, store.training_entities(labelled)).merge(
            labelled[["transaction_id", "tx_fraud"]], on="transaction_id"
        )
        fs = store.get_store(settings)
        service = fs.get_feature_service(store.FEATURE_SERVICE)
        inputs = ["tx_amount"] + [
            f.name for p in service.feature_view_projections for f in p.features
        ]
        version = _register(settings, frame, inputs, scale=1.0)
        mlflow.MlflowClient(settings.tracking_uri).set_registered_model_alias(
            settings.model_name, "champion", version
        )
        rng = np.random.default_rng(0)
        rows = mart.iloc[rng.integers(0, len(mart), args.requests)]
        bodies = [
            {
                "transaction_id": int(r.transaction_id),
                "customer_id": int(r.customer_id),
                "terminal_id": int(r.terminal_id),
                "tx_amount": float(r.tx_amount),
                "tx_datetime": (r.tx_datetime + dt.timedelta(minutes=1)).isoformat(),
            }
            for r in rows.itertuples()
        ]

        model = load_champion(settings.tracking_uri, settings.model_name)
        txs = [Transaction(**b) for b in bodies]
        inproc = []
        for tx in txs:
            t0 = time.perf_counter()
            batch = fetch(fs, model.feature_service, model.inputs, [tx])
            model.predict(batch.inputs)
            inproc.append(time.perf_counter() - t0)
        print(f"in process (Feast online read + predict): {percentiles(inproc)}")

        server = Server(dict(os.environ))
        try:
            with httpx.Client(base_url=server.url, timeout=30) as client:
                for b in bodies[:50]:  # warm-up
                    client.post("/score", json={"transactions": [b]})
                seq = []
                start = time.perf_counter()
                for b in bodies:
                    t0 = time.perf_counter()
                    client.post("/score", json={"transactions": [b]}).raise_for_status()
                    seq.append(time.perf_counter() - t0)
                wall = time.perf_counter() - start
            print(f"HTTP sequential: {percentiles(seq)}, {len(bodies) / wall:,.0f} req/s")
            print(
                f"  server overhead: {statistics.median(seq) / statistics.median(inproc):.1f}x "
                "the in-process median"
            )

            def one(b: dict) -> float:
                t0 = time.perf_counter()
                httpx.post(f"{server.url}/score", json={"transactions": [b]}).raise_for_status()
                return time.perf_counter() - t0

            start = time.perf_counter()
            with cf.ThreadPoolExecutor(args.clients) as pool:
                conc = list(pool.map(one, bodies))
            wall = time.perf_counter() - start
            print(
                f"HTTP {args.clients} clients: {percentiles(conc)}, {len(bodies) / wall:,.0f} req/s"
            )
        finally:
            server.stop()


if __name__ == "__main__":
    main()
