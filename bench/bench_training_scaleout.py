"""Benchmark: training scaled out on processes, against one process, on the same data.

    .venv/bin/python bench/bench_training_scaleout.py [--customers 1000] [--trials 12]
        [--max-epochs 6] [--repeat 3]

1. Optuna search: the same trial budget on a fresh PostgreSQL study (one per variant and
   repeat) run in-process by one process with 2 threads, with 1 thread, and by two worker
   processes with one thread each; MLflow tracking on PostgreSQL too (each trial is a child
   run). Wall time of ``tune_model``, worker start included.
2. Final training of the chosen ensemble: in-process (2 threads, 1 thread) vs ``torchrun``
   with 2 DDP ranks (gloo, 1 thread each): wall time of the whole torchrun call and training
   time inside the ranks; test AP/AUC of each model.

Variants alternate within each repeat, so a burst of load from elsewhere hits all of them;
the median is printed at the end.

The world is the real chain (simulated lake -> dbt -> Spark local[2] -> Feast). Needs
PostgreSQL (PGHOST/PGPORT/PGUSER, default postgres@127.0.0.1:5432); its databases and the
temporary home are removed at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import secrets
import shutil
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from pipelines.training import steps

PG_HOST = os.environ.get("PGHOST", "127.0.0.1")
PG_PORT = int(os.environ.get("PGPORT", "5432"))
PG_USER = os.environ.get("PGUSER", "postgres")
FIRST_DAY = dt.date(2018, 4, 1)
TEST_END = dt.date(2018, 5, 14)
# (label, worker processes, torch threads per process)
SEARCH_VARIANTS = (
    ("1 process x 2 threads", 1, 2),
    ("1 process x 1 thread", 1, 1),
    ("2 workers x 1 thread", 2, 2),
)


@contextlib.contextmanager
def postgres_databases(count: int) -> Iterator[list[str]]:
    import psycopg2

    names = [f"fraud_bench_scaleout_{secrets.token_hex(4)}" for _ in range(count)]
    conn = psycopg2.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname="postgres")
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            for name in names:
                cur.execute(f'CREATE DATABASE "{name}"')
        yield [f"postgresql+psycopg2://{PG_USER}@{PG_HOST}:{PG_PORT}/{n}" for n in names]
    finally:
        with conn.cursor() as cur:
            for name in names:
                cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.close()


def load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def build_world(settings) -> dict[str, str]:
    from pipelines.featurestore.build import build_features
    from pipelines.ingest.daily import ingest_days
    from pipelines.training import train

    last = TEST_END + dt.timedelta(days=settings.label_delay_days)
    ingest_days(FIRST_DAY, last, settings)
    build_features(settings, materialize=False)  # training reads the offline store only
    return train.build_dataset(settings, TEST_END, reason="benchmark")


def quality(scorer, data) -> tuple[float, float]:
    from pipelines.metrics import average_precision, roc_auc
    from pipelines.training.dataset import LABEL

    test = data.frames["test"]
    scores = scorer.score_frame(test)
    return average_precision(test[LABEL], scores), roc_auc(test[LABEL], scores)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--customers", type=int, default=1000)
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--max-epochs", type=int, default=6)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="bench-scaleout-"))
    with postgres_databases(2) as (study_db, mlflow_db):
        env = {
            "FRAUD_HOME": str(home),
            "FRAUD_N_CUSTOMERS": str(args.customers),
            "FRAUD_N_TERMINALS": str(2 * args.customers),
            "FRAUD_HISTORY_START": FIRST_DAY.isoformat(),
            "FRAUD_LABEL_DELAY_DAYS": "7",
            "FRAUD_SPARK_MASTER": "local[2]",
            "FRAUD_MAX_EPOCHS": str(args.max_epochs),
            "FRAUD_TORCH_THREADS": "2",
            "FRAUD_TUNING_TIMEOUT_SECONDS": "3600",
        }
        os.environ.update(env)
        from pipelines.config import load_settings
        from pipelines.registry import tracking
        from pipelines.training import dataset, distributed, ensemble, train
        from pipelines.training.model import FraudScorer, configure_threads

        try:
            started = time.monotonic()
            ids = build_world(load_settings())
            print(f"world: {time.monotonic() - started:.0f}s; load {load()}")
            data = dataset.load(Path(ids["workdir"]) / "data")
            rows = {k: len(v) for k, v in data.frames.items()}
            print(f"rows {rows}; train frauds {int(data.frames['train'].tx_fraud.sum())}")

            # 1. the search; a fresh study each time (model name -> study name)
            os.environ["FRAUD_OPTUNA_STORAGE"] = study_db
            os.environ["FRAUD_MLFLOW_TRACKING_URI"] = mlflow_db
            timings: dict[str, list[float]] = {}
            chosen = None
            for repeat in range(args.repeat):
                for label, workers, threads in SEARCH_VARIANTS:
                    os.environ["FRAUD_TORCH_THREADS"] = str(threads)
                    os.environ["FRAUD_MODEL_NAME"] = f"bench-{label}-{repeat}".replace(" ", "")
                    settings = load_settings()
                    run_id = tracking.start_run(settings, f"bench {label}", {})
                    workdir = train.workdir_of(settings, run_id)
                    shutil.copytree(Path(ids["workdir"]) / "data", workdir / "data")
                    t0 = time.monotonic()
                    tuning = train.tune_model(
                        settings, run_id, workdir, n_trials=args.trials, workers=workers
                    )
                    seconds = time.monotonic() - t0
                    timings.setdefault(f"search, {label}", []).append(seconds)
                    chosen = chosen or workdir
                    print(
                        f"[{repeat}] search {label}: {seconds:.1f}s, "
                        f"{tuning['finished_trials']} trials, best validation AP "
                        f"{tuning['best_value']:.4f}; load {load()}",
                        flush=True,
                    )

            # 2. the final training of one chosen ensemble
            tuning = steps.read(chosen, steps.Tuning)
            for repeat in range(args.repeat):
                for threads in (2, 1):
                    configure_threads(threads)
                    t0 = time.monotonic()
                    members, _ = ensemble.train_ensemble(data, tuning["members"], ensemble.fit_here)
                    seconds = time.monotonic() - t0
                    timings.setdefault(f"final, 1 process x {threads} thread(s)", []).append(
                        seconds
                    )
                    ap, auc = quality(FraudScorer(data.inputs, members, 0.5).eval(), data)
                    print(
                        f"[{repeat}] final, 1 process x {threads} thread(s): {seconds:.1f}s; "
                        f"test AP {ap:.4f} AUC {auc:.4f}; load {load()}",
                        flush=True,
                    )
                outcome = distributed.launch(chosen, 2, threads=1)
                timings.setdefault("final, torchrun 2 ranks x 1 thread (wall)", []).append(
                    outcome.wall_seconds
                )
                timings.setdefault("final, torchrun 2 ranks x 1 thread (in ranks)", []).append(
                    outcome.seconds
                )
                ap, auc = quality(outcome.scorer, data)
                print(
                    f"[{repeat}] final, torchrun 2 ranks x 1 thread: {outcome.wall_seconds:.1f}s "
                    f"wall ({outcome.seconds:.1f}s training in the ranks), rows/rank "
                    f"{outcome.rows_per_rank}; test AP {ap:.4f} AUC {auc:.4f}; load {load()}",
                    flush=True,
                )
            print("\nmedian wall time over", args.repeat, "repeat(s):")
            for label, values in timings.items():
                runs = ", ".join(f"{v:.1f}" for v in values)
                print(f"  {label}: {statistics.median(values):.1f}s  ({runs})")
        finally:
            tracking._client.cache_clear()  # release pooled connections before DROP
            shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
