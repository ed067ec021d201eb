"""Benchmark: simulator throughput and one daily ingest run.

    .venv/bin/python bench/bench_ingest.py [--repeat 3]

Prints figures and ratios against baselines measured in the same run, so a noisy shared
machine shifts both sides alike:
- simulator: our vectorised generator (fraud scenarios included) on the handbook dataset
  (5,000 customers, 10,000 terminals, 183 days) vs a per-customer Python loop in the
  handbook's style (genuine transactions only, so the baseline is flattered);
- daily ingest: one `ingest_day` (simulate the day, write transactions atomically,
  simulate and write the arriving labels) vs a bare `DataFrame.to_parquet` of the same rows.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import tempfile
import time

import numpy as np

START, END = dt.date(2018, 4, 1), dt.date(2018, 9, 30)


def best_of(repeat: int, fn) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def handbook_style_loop(sim, days: int) -> int:
    """Genuine transactions the way the handbook writes them: loops over customers and days."""
    customers = sim.customers
    rng = np.random.default_rng(0)
    rows = 0
    for c in range(len(customers)):
        terms = customers.terminals[customers.offsets[c] : customers.offsets[c + 1]]
        if len(terms) == 0:
            continue
        for _ in range(days):
            for _ in range(rng.poisson(customers.mean_nb_tx_per_day[c])):
                seconds = int(rng.normal(43_200, 20_000))
                if 0 < seconds < 86_400:
                    amount = rng.normal(customers.mean_amount[c], customers.std_amount[c])
                    if amount < 0:
                        amount = rng.uniform(0, customers.mean_amount[c] * 2)
                    _ = (c, terms[rng.integers(len(terms))], seconds, round(amount, 2))
                    rows += 1
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--baseline-days", type=int, default=10)
    args = parser.parse_args()

    from pipelines.simulate import SimulationConfig, TransactionSimulator

    sim = TransactionSimulator(SimulationConfig(seed=0))
    rows = len(sim.generate_range(START, END))
    # A fresh simulator each time: profiles (terminal geometry) are part of the cost.
    ours = best_of(args.repeat, lambda: TransactionSimulator(sim.config).generate_range(START, END))
    print(
        f"simulator (vectorised, 183 days, handbook size): {rows:,} rows in {ours:.2f} s "
        f"= {rows / ours:,.0f} rows/s"
    )
    base_rows = handbook_style_loop(sim, args.baseline_days)
    base = best_of(1, lambda: handbook_style_loop(sim, args.baseline_days))
    print(
        f"baseline (per-customer loop, {args.baseline_days} days, genuine only): "
        f"{base_rows:,} rows in {base:.2f} s = {base_rows / base:,.0f} rows/s"
    )
    print(f"  speed-up: {(rows / ours) / (base_rows / base):.0f}x")

    with tempfile.TemporaryDirectory() as home:
        os.environ.update(FRAUD_HOME=home, FRAUD_HISTORY_START=START.isoformat())
        from pipelines.config import load_settings
        from pipelines.ingest.daily import ingest_day

        settings = load_settings()
        day = dt.date(2018, 6, 1)
        runs = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            result = ingest_day(day, settings)
            runs.append(time.perf_counter() - t0)
        frame = sim.generate_day(day)
        raw = best_of(args.repeat, lambda: frame.to_parquet(f"{home}/bare.parquet"))
        print(
            f"daily ingest run (fresh simulator, {result.transactions:,} tx + "
            f"{result.labels:,} labels): median {statistics.median(runs) * 1000:.0f} ms, "
            f"best {min(runs) * 1000:.0f} ms"
        )
        print(
            f"baseline (bare to_parquet of the day): {raw * 1000:.1f} ms "
            f"-> ingest costs {min(runs) / raw:.1f}x a bare write"
        )


if __name__ == "__main__":
    main()
