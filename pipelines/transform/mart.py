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
import pyarrow.parquet as pq

from pipelines.config import Settings

FCT_TRANSACTIONS = "fct_transactions"


def marts_path(settings: Settings, model: str = FCT_TRANSACTIONS) -> Path:
    """Directory holding the Parquet export of a mart (location set in the model's config)."""
    return settings.marts_dir / model


def mart_day_file(settings: Settings, day: dt.date, model: str = FCT_TRANSACTIONS) -> Path:
    """The export of one UTC day: ``<marts>/<model>/date=<day>/<model>.parquet``.

    dbt writes one file per day (``export_day_partitions`` in dbt_project/macros/lake.sql) and
    rewrites only the days a build rebuilt. Readers take these names, never a ``*.parquet``
    glob: while dbt rewrites a day, DuckDB's temporary ``tmp_<model>.parquet`` sits beside it.
    """
    return marts_path(settings, model) / f"date={day.isoformat()}" / f"{model}.parquet"


def mart_days(settings: Settings, model: str = FCT_TRANSACTIONS) -> list[dt.date]:
    """The days the export holds, oldest first (empty before the first dbt build)."""
    return sorted(
        dt.date.fromisoformat(path.parent.name.removeprefix("date="))
        for path in marts_path(settings, model).glob(f"date=*/{model}.parquet")
    )


def mart_files(
    settings: Settings,
    first: dt.date | None = None,
    last: dt.date | None = None,
    model: str = FCT_TRANSACTIONS,
) -> list[str]:
    """The export's day files of days ``first`` .. ``last`` (inclusive; open ends: all), oldest
    first, for ``read_parquet`` or pyarrow. Read them without hive partitioning: the day is a
    column of the rows already (``tx_date``)."""
    return [
        str(mart_day_file(settings, day, model))
        for day in mart_days(settings, model)
        if (first is None or day >= first) and (last is None or day <= last)
    ]


def read_export(
    settings: Settings, first: dt.date | None = None, last: dt.date | None = None
) -> pd.DataFrame:
    """The export's rows of days ``first`` .. ``last`` (open ends: all), oldest day first;
    raises FileNotFoundError when no day of them has been exported."""
    files = mart_files(settings, first, last)
    if not files:
        raise FileNotFoundError(f"no day of {marts_path(settings)} exported yet: run dbt first")
    return pq.read_table(files, partitioning=None).to_pandas()


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

    files = mart_files(settings, first, last)
    if not files:
        return pd.DataFrame({c: pd.Series(dtype=t) for c, t in LABEL_COLUMNS.items()})
    start = dt.datetime.combine(first, dt.time(), dt.UTC)
    end = dt.datetime.combine(last + dt.timedelta(days=1), dt.time(), dt.UTC)
    with duckdb.connect() as con:
        return con.execute(
            """
            select transaction_id, tx_datetime,
                   cast(timezone('UTC', tx_datetime) as date) as tx_day, customer_id, tx_fraud
            from read_parquet(?, hive_partitioning = false)
            where tx_fraud is not null and tx_datetime >= ? and tx_datetime < ?
            order by tx_datetime, transaction_id
            """,
            [files, start, end],
        ).df()
