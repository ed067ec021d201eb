"""Writing a mart export by hand, day file by day file as dbt writes it, for tests that need
the mart's shape without running dbt."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from pipelines.config import Settings
from pipelines.lake import write_parquet_atomic
from pipelines.transform.mart import mart_day_file


def write_mart(settings: Settings, table: pa.Table) -> None:
    """One file per UTC day of ``tx_date`` (or of ``tx_datetime`` when the table has none)."""
    # The tests' timestamps are UTC, so the cast gives the UTC day.
    days = table["tx_date"] if "tx_date" in table.column_names else table["tx_datetime"]
    days = pc.cast(days, pa.date32())
    for day in pc.unique(days).to_pylist():
        path = mart_day_file(settings, day)
        write_parquet_atomic(table.filter(pc.equal(days, day)), path)
