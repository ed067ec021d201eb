"""Benchmark: the offline store's point-in-time join against Feast's own, same entity rows.

    .venv/bin/python bench/bench_offline_join.py [--home DIR] [--rows 40000]

Historical retrieval of the feature service (``fraud_model_v1``) for ``--rows`` transactions
sampled from the mart, once with the project's join (``pipelines/featurestore/offline.py``:
the features of the picked row only) and once with Feast's (every candidate row's features
carried through the join), each in its own process so that the peak memory is its own. Prints
the seconds, the peak resident memory and whether the two results are equal.

``--home`` reuses a built world (e.g. a seed home kept by ``bench/quality_handbook.py
--workdir``); without it the script builds the default world of ``make up`` in a temporary
folder (5,000 customers, 60 days: ingest, dbt, Spark, ``feast apply``; a few minutes).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIRST_DAY = dt.date(2018, 4, 1)
DAYS = 60


def build(home: Path) -> None:
    from pipelines.config import load_settings
    from pipelines.featurestore.build import build_features
    from pipelines.ingest.daily import ingest_days

    settings = load_settings()
    ingest_days(FIRST_DAY, FIRST_DAY + dt.timedelta(days=DAYS - 1), settings)
    build_features(settings)


def retrieve(rows: int, join: str, out: Path) -> None:
    """One retrieval (in this process), its result pickled to ``out``."""
    import resource
    import time

    from feast.infra.offline_stores import ibis as feast_ibis

    from pipelines.config import load_settings
    from pipelines.featurestore import offline, store
    from pipelines.transform.mart import read_export

    settings = load_settings()
    mart = read_export(settings)
    entities = store.training_entities(mart.sample(n=min(rows, len(mart)), random_state=1))
    if join == "feast":
        offline.point_in_time_join = feast_ibis.point_in_time_join
    started = time.monotonic()
    frame = store.historical_features(settings, entities)
    seconds = time.monotonic() - started
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    frame.to_pickle(out)
    print(f"{join:6} {len(frame):>8,} rows {seconds:>8.1f} s {peak_gb:>8.2f} GB peak", flush=True)


def differing(a_path: Path, b_path: Path) -> list[str]:
    """The columns whose values differ between the two results (none: the same)."""
    import numpy as np
    import pandas as pd

    a = pd.read_pickle(a_path).set_index("transaction_id").sort_index()
    b = pd.read_pickle(b_path).set_index("transaction_id").sort_index()
    # Feast orders the on-demand outputs by a set: the column order differs between processes.
    if list(a.index) != list(b.index) or set(a.columns) != set(b.columns):
        return ["(rows or columns)"]
    b = b[a.columns]
    bad = []

    def payments(v: object) -> list | None:  # same-instant ties in any order
        return None if v is None or isinstance(v, float) else sorted(v)

    for column in a.columns:
        x, y = a[column], b[column]
        if x.dtype == object:
            same = [payments(v) for v in x] == [payments(v) for v in y]
        elif pd.api.types.is_float_dtype(x):  # sums over ties in another order
            same = np.allclose(x, y, rtol=1e-12, atol=0, equal_nan=True)
        else:
            same = x.equals(y)
        if not same:
            bad.append(column)
    return bad


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, help="a built world to reuse")
    parser.add_argument("--rows", type=int, default=40_000, help="entity rows to retrieve")
    parser.add_argument("--join", choices=["ours", "feast"], help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    if args.join:
        retrieve(args.rows, args.join, args.out)
        return
    with tempfile.TemporaryDirectory() as scratch:
        home = args.home or Path(scratch) / "world"
        os.environ.setdefault("FRAUD_HISTORY_START", FIRST_DAY.isoformat())
        os.environ["FRAUD_HOME"] = str(home.resolve())
        if args.home is None:
            print(f"building the default world in {home} …", flush=True)
            build(home)
        print(f"world {home}: historical retrieval of {args.rows:,} sampled transactions")
        outs = {}
        for join in ("ours", "feast"):
            outs[join] = Path(scratch) / f"{join}.pkl"
            command = [sys.executable, __file__, "--rows", str(args.rows), "--join", join]
            subprocess.run([*command, "--out", str(outs[join])], check=True, env=os.environ)
        bad = differing(outs["ours"], outs["feast"])
        print("same values in every column" if not bad else f"values differ in: {bad}")


if __name__ == "__main__":
    main()
