"""Daily ingest from the simulator: one day's transactions, and the labels that arrive that day.

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

from pipelines.config import Settings
from pipelines.ingest import schema
from pipelines.lake import part_path, write_parquet_atomic
from pipelines.simulate import SimulationConfig, TransactionSimulator

log = logging.getLogger(__name__)
SOURCE = "simulated"


@dataclass(frozen=True)
class DayIngestResult:
    day: dt.date
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


def ingest_simulated_day(
    day: dt.date, settings: Settings, simulator: TransactionSimulator | None = None
) -> DayIngestResult:
    """Write day ``day`` of the simulator to the raw lake, plus the labels arriving that day."""
    if day < settings.sim_start_date:
        raise ValueError(
            f"{day} is before the simulation calendar starts ({settings.sim_start_date}); "
            "set FRAUD_SIM_START earlier to simulate it"
        )
    sim = simulator or TransactionSimulator(SimulationConfig.from_settings(settings))
    frame = sim.generate_day(day)
    tx = pa.Table.from_pandas(
        frame[schema.TRANSACTIONS.names], schema=schema.TRANSACTIONS, preserve_index=False
    )
    tx_path = write_parquet_atomic(tx, part_path(settings.raw_transactions_dir, day, SOURCE))
    log.info("wrote %d transactions of %s to %s", tx.num_rows, day, tx_path)

    labels_day = day - dt.timedelta(days=settings.label_delay_days)
    labels_path, n_labels = None, 0
    # Labels exist only for days the simulated history covers.
    if labels_day >= settings.sim_start_date:
        labelled = frame if labels_day == day else sim.generate_day(labels_day)
        labels = label_table(labelled, dt.timedelta(days=settings.label_delay_days))
        labels_path = write_parquet_atomic(
            labels, part_path(settings.raw_labels_dir, labels_day, SOURCE)
        )
        n_labels = labels.num_rows
        log.info("wrote %d labels of %s (arrived %s) to %s", n_labels, labels_day, day, labels_path)
    return DayIngestResult(
        day, tx.num_rows, tx_path, labels_day if labels_path else None, n_labels, labels_path
    )


def ingest_simulated_days(
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
    for offset in range((last - first).days + 1):
        result = ingest_simulated_day(first + dt.timedelta(days=offset), settings, simulator=sim)
        results.append(result)
        if on_day is not None:
            on_day(result)
    return results
