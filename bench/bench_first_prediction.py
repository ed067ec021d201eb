"""Time from `make up` to the first served prediction, on a fresh home, nothing triggered by hand.

    .venv/bin/python bench/bench_first_prediction.py                # the defaults (60 days)
    .venv/bin/python bench/bench_first_prediction.py --history-days 30 --customers 2000

Starts what `make up` starts (Airflow, the scoring API; the MLflow UI is not on the path to a
prediction) on a temporary home with free ports, then records when each milestone is first
reached: history ingested, first features built, first model trained and promoted, deployed,
and the endpoint answering with it. Prints the timeline; stops everything at the end.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipelines.platform.process import free_port


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--history-days", type=int, default=None, help="default: the setting")
    parser.add_argument("--customers", type=int, default=None, help="default: the setting")
    parser.add_argument("--timeout", type=float, default=3600)
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="first-prediction-"))
    os.environ["FRAUD_HOME"] = str(home)
    for key, port in (
        ("FRAUD_AIRFLOW_PORT", free_port()),
        ("FRAUD_AIRFLOW_WORKER_LOG_PORT", free_port()),
        ("FRAUD_AIRFLOW_TRIGGER_LOG_PORT", free_port()),
        ("FRAUD_SERVING_PORT", free_port()),
    ):
        os.environ[key] = str(port)
    if args.history_days is not None:
        os.environ["FRAUD_HISTORY_DAYS"] = str(args.history_days)
    if args.customers is not None:
        os.environ["FRAUD_N_CUSTOMERS"] = str(args.customers)
        os.environ["FRAUD_N_TERMINALS"] = str(2 * args.customers)

    from pipelines.config import load_settings
    from pipelines.demo import sample_transactions, score
    from pipelines.platform.airflow import AirflowServices
    from pipelines.platform.runtime import initialise
    from pipelines.platform.scoring import ScoringService
    from pipelines.training.bootstrap import BOOTSTRAP_RUN_ID

    settings = initialise(load_settings())
    print(
        f"home {home}: {settings.history_days} history days, {settings.n_customers} customers, "
        f"{settings.bootstrap_trials} trials for the first model"
    )
    airflow, scoring = AirflowServices(settings), ScoringService(settings)
    start = time.monotonic()
    marks: dict[str, float] = {}

    def mark(name: str) -> None:
        if name not in marks:
            marks[name] = time.monotonic() - start
            print(f"{marks[name]:8.0f} s  {name}", flush=True)

    try:
        airflow.up()
        scoring.up()
        mark("services up (Airflow, scoring API)")
        with airflow.client() as api:

            def succeeded(dag_id: str, **params: str) -> list[dict]:
                query = {"limit": 1000, **params}  # the API pages by 50 by default
                runs = api.get(f"/dags/{dag_id}/dagRuns", params=query).json()["dag_runs"]
                return [r for r in runs if r["state"] == "success"]

            deadline = time.monotonic() + args.timeout
            while time.monotonic() < deadline:
                ingested = succeeded("ingest_transactions", run_type="scheduled")
                if len(ingested) >= settings.history_days:
                    mark(f"history ingested ({len(ingested)} daily runs)")
                if succeeded("build_features"):
                    mark("first features built (dbt, Spark, Feast)")
                first = api.get(f"/dags/train_model/dagRuns/{BOOTSTRAP_RUN_ID}")
                if first.status_code == 200 and first.json()["state"] == "success":
                    mark("first model trained and promoted")
                if succeeded("deploy_model"):
                    mark("first model deployed (Bento built, smoke-tested, switched)")
                if scoring.ready():
                    try:
                        answer = score(settings, sample_transactions(settings, 1))
                    except (RuntimeError, httpx.HTTPError):
                        answer = None
                    if answer:
                        mark(f"first served prediction (model v{answer[0]['model_version']})")
                        break
                time.sleep(5)
            else:
                print(f"no served prediction within {args.timeout:.0f} s")
    finally:
        scoring.down()
        airflow.down()
    print(f"\n{dt.datetime.now():%Y-%m-%d %H:%M} load average {os.getloadavg()[0]:.1f}")
    for name, seconds in marks.items():
        print(f"  {seconds / 60:6.1f} min  {name}")


if __name__ == "__main__":
    main()
