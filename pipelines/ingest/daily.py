"""Daily ingest: one day's transactions, and the labels that arrive that day.

A day before the first live day (the history a first start backfills) comes from the
simulator. From the first live day on (``Settings.live_start``), the day's transactions are
the payments the scoring API scored (``pipelines/ingest/scored.py``): the simulator's payments
reach the lake only by being sent to ``/score`` (``pipelines/traffic.py`` replays them), so no
payment can enter twice. Labels still come from the simulator, the chargeback feed: for a live
day, those of the payments that reached the lake (a chargeback follows a payment that happened).

Labels arrive ``label_delay_days`` after the transactions they describe, as chargebacks do: each
label's ``label_available_at`` is its transaction's time plus the delay (the handbook's protocol:
a transaction at t is labelled from t + delay on), so the run for day *d* writes transactions of
*d* and the labels that arrived during *d*, those of *d - delay*. Both writes are atomic
overwrites of the partition file this source owns, so any rerun is a no-op in effect.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.config import Settings
from pipelines.ingest import schema, scored
from pipelines.ingest.scored import ingest_scored_day
from pipelines.lake import day_files, days_between, part_path, write_parquet_atomic
from pipelines.simulate import SimulationConfig, TransactionSimulator

log = logging.getLogger(__name__)
SOURCE = "simulated"


@dataclass(frozen=True)
class DayIngestResult:
    day: dt.date
    source: str  # where the day's transactions came from: "simulated" or "scored"
    transactions: int
    transactions_path: Path
    labels_day: dt.date | None
    labels: int
    labels_path: Path | None


def label_table(frame: pd.DataFrame, delay: dt.timedelta) -> pa.Table:
    """The labels of ``frame``'s transactions, each arriving ``delay`` after its transaction."""
    labels = frame[["transaction_id", "tx_fraud", "tx_fraud_scenario"]].copy()
    labels["label_available_at"] = frame["tx_datetime"] + delay
    return pa.Table.from_pandas(labels, schema=schema.LABELS, preserve_index=False)


def _lake_ids(settings: Settings, day: dt.date) -> set[int]:
    """The transaction ids of ``day``'s partition, every source."""
    return {
        i
        for f in day_files(settings.raw_transactions_dir, day)
        for i in pq.read_table(f, columns=["transaction_id"]).column(0).to_pylist()
    }


def ingest_day(
    day: dt.date, settings: Settings, simulator: TransactionSimulator | None = None
) -> DayIngestResult:
    """Write day ``day``'s transactions to the raw lake (the simulator's, or the scored
    payments of a live day), plus the labels arriving that day."""
    if day < settings.sim_start_date:
        raise ValueError(
            f"{day} is before the simulation calendar starts ({settings.sim_start_date}); "
            "set FRAUD_SIM_START earlier to simulate it"
        )
    sim = simulator or TransactionSimulator(SimulationConfig.from_settings(settings))
    frame = None
    if settings.is_live(day):
        source = scored.SOURCE
        n_tx, tx_path = ingest_scored_day(settings, day)
    else:
        source = SOURCE
        frame = sim.generate_day(day)
        tx = pa.Table.from_pandas(
            frame[schema.TRANSACTIONS.names], schema=schema.TRANSACTIONS, preserve_index=False
        )
        tx_path = write_parquet_atomic(tx, part_path(settings.raw_transactions_dir, day, SOURCE))
        n_tx = tx.num_rows
        log.info("wrote %d transactions of %s to %s", n_tx, day, tx_path)

    labels_day = day - dt.timedelta(days=settings.label_delay_days)
    labels_path, n_labels = None, 0
    # Labels exist only for days the simulated history covers.
    if labels_day >= settings.sim_start_date:
        labelled = frame if labels_day == day and frame is not None else None
        labelled = labelled if labelled is not None else sim.generate_day(labels_day)
        if settings.is_live(labels_day):
            labelled = labelled[labelled.transaction_id.isin(_lake_ids(settings, labels_day))]
        labels = label_table(labelled, dt.timedelta(days=settings.label_delay_days))
        labels_path = write_parquet_atomic(
            labels, part_path(settings.raw_labels_dir, labels_day, SOURCE)
        )
        n_labels = labels.num_rows
        log.info("wrote %d labels of %s (arrived %s) to %s", n_labels, labels_day, day, labels_path)
    return DayIngestResult(
        day, source, n_tx, tx_path, labels_day if labels_path else None, n_labels, labels_path
    )


def ingest_days(
    first: dt.date,
    last: dt.date,
    settings: Settings,
    on_day: Callable[[DayIngestResult], None] | None = None,
) -> list[DayIngestResult]:
    """Ingest ``first``..``last`` (inclusive) in order, as a backfill of the daily DAG would.

    One simulator serves every day (its customer and terminal tables are built once).
    ``on_day`` sees each result as it lands: progress output for a long range.
    """
    if last < first:
        raise ValueError(f"end {last} is before start {first}")
    sim = TransactionSimulator(SimulationConfig.from_settings(settings))
    results = []
    for day in days_between(first, last):
        result = ingest_day(day, settings, simulator=sim)
        results.append(result)
        if on_day is not None:
            on_day(result)
    return results
