"""The scored-payment log as a source of the raw lake: a live day's payments are the ones the
scoring API scored.

From the first live day (``Settings.live_start``), payments reach the lake the way they reach a
real platform: through ``/score``. Every serving worker (and every replica, on storage they
share) appends its own Parquet parts to the prediction log (``serving/prediction_log.py``); the
day's ingest reads every part of the day and writes one file, ``part-scored``, atomically, so a
rerun replaces it (no duplicate) and a run killed mid-write leaves the previous file.

Exactly once, per ``transaction_id``:

* a payment scored twice (a client retry, a replayed day) is kept once, as first scored;
* an id the lake already holds from another source (the simulator's history, a landing file)
  is left out, with a warning: a payment is never counted twice because two sources saw it;
* the simulator writes no transactions for a live day (``pipelines/ingest/daily.py``).
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pyarrow as pa

from pipelines.config import Settings
from pipelines.ingest import schema
from pipelines.lake import day_files, part_path, write_parquet_atomic

log = logging.getLogger(__name__)
SOURCE = "scored"


@dataclass(frozen=True)
class ScoredDay:
    """What the scored-payment log held for a day, and what reached the lake."""

    table: pa.Table
    logged_rows: int  # prediction-log rows of the day (retries included)
    held_elsewhere: int  # ids another source of the lake already holds


def scored_payments(settings: Settings, day: dt.date) -> ScoredDay:
    """The payments of ``day`` the scoring API scored, each ``transaction_id`` once (its first
    scoring), without the ids another part of the lake already holds."""
    files = [str(p) for p in day_files(settings.predictions_dir, day)]
    if not files:
        return ScoredDay(schema.TRANSACTIONS.empty_table(), 0, 0)
    names = ", ".join(schema.TRANSACTIONS.names)
    with duckdb.connect() as con:
        con.execute(
            f"""
            create table logged as
            select {names}, request_time from read_parquet(?, union_by_name = true)
            """,
            [files],
        )
        logged_rows = con.execute("select count(*) from logged").fetchone()[0]
        con.execute(
            """
            create table first_scored as select * exclude (request_time) from logged
            qualify row_number() over (
                partition by transaction_id order by request_time, tx_datetime) = 1
            """
        )
        # Ids of other sources: every day of the lake (an id is unique in the lake, not only in
        # its day; a landing file may hold a payment of any day).
        # (A writer's temporary files end in .tmp: the glob never sees them.)
        lake = settings.raw_transactions_dir / "date=*" / "*.parquet"
        con.execute("create table held (transaction_id bigint)")
        if any(settings.raw_transactions_dir.glob("date=*/*.parquet")):
            con.execute(
                f"""
                insert into held select distinct transaction_id
                from read_parquet('{lake}', filename = true)
                where not ends_with(filename, 'part-{SOURCE}.parquet')
                """
            )
        table = con.sql(
            f"""
            select {names} from first_scored
            where transaction_id not in (select transaction_id from held)
            order by tx_datetime, transaction_id
            """
        ).to_arrow_table()
        held_elsewhere = con.execute(
            "select count(*) from first_scored "
            "where transaction_id in (select transaction_id from held)"
        ).fetchone()[0]
    table = table.cast(schema.TRANSACTIONS)
    return ScoredDay(table, logged_rows, held_elsewhere)


def ingest_scored_day(settings: Settings, day: dt.date) -> tuple[int, Path]:
    """Write ``day``'s scored payments to the raw lake (``part-scored``); returns the rows
    written and the file."""
    scored = scored_payments(settings, day)
    if scored.held_elsewhere:
        log.warning(
            "%d scored payments of %s carry ids another source of the lake already holds: "
            "left out (a payment is counted once)",
            scored.held_elsewhere,
            day,
        )
    path = write_parquet_atomic(scored.table, part_path(settings.raw_transactions_dir, day, SOURCE))
    log.info(
        "wrote %d scored payments of %s to %s (%d prediction-log rows)",
        scored.table.num_rows,
        day,
        path,
        scored.logged_rows,
    )
    return scored.table.num_rows, path
