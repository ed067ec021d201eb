"""The marts dbt exports, and what readers take from them: paths and the arrived labels.

No dbt import: light processes (the lineage UIs, ``services``) import the paths, and every
reader of labels (monitoring's performance, the experiment's analysis) reads them here, from
the cleaned and tested mart, never from the raw lake.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import duckdb
import pandas as pd

from pipelines.config import Settings

FCT_TRANSACTIONS = "fct_transactions"


def marts_path(settings: Settings, model: str = FCT_TRANSACTIONS) -> Path:
    """Directory holding the Parquet export of a mart (location set in the model's config)."""
    return settings.marts_dir / model


def mart_file(settings: Settings, model: str = FCT_TRANSACTIONS) -> Path:
    """The single Parquet file of a mart's export.

    Prefer it to a glob over the directory: while dbt rewrites the export, DuckDB's temporary
    ``tmp_<name>.parquet`` sits beside it and would match ``*.parquet``.
    """
    return marts_path(settings, model) / f"{model}.parquet"


def docs_dir(settings: Settings) -> Path:
    """The dbt docs site (index.html + manifest.json + catalog.json) that ``make up`` serves."""
    return settings.home / "dbt-docs"


# What read_labels returns, column by column (the types of an empty answer).
LABEL_COLUMNS = {
    "transaction_id": "int64",
    "tx_datetime": "datetime64[us, UTC]",
    "tx_day": "object",
    "customer_id": "int64",
    "tx_fraud": "int64",
}


def read_labels(settings: Settings, first: dt.date, last: dt.date) -> pd.DataFrame:
    """The labels that have arrived for transactions of days ``first`` .. ``last`` (UTC), one
    row per transaction (``LABEL_COLUMNS``), in time order; empty before the first dbt build."""

    path = mart_file(settings)
    if not path.exists():
        return pd.DataFrame({c: pd.Series(dtype=t) for c, t in LABEL_COLUMNS.items()})
    start = dt.datetime.combine(first, dt.time(), dt.UTC)
    end = dt.datetime.combine(last + dt.timedelta(days=1), dt.time(), dt.UTC)
    with duckdb.connect() as con:
        return con.execute(
            """
            select transaction_id, tx_datetime,
                   cast(timezone('UTC', tx_datetime) as date) as tx_day, customer_id, tx_fraud
            from read_parquet(?)
            where tx_fraud is not null and tx_datetime >= ? and tx_datetime < ?
            order by tx_datetime, transaction_id
            """,
            [str(path), start, end],
        ).df()
