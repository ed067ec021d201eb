"""Offline sources (the Spark job's Parquet tables), the request source and a push source."""

from feast import Field, FileSource, PushSource, RequestSource
from feast.data_format import ParquetFormat
from feast.types import Float64, Int64

from pipelines.config import get_settings

_features_dir = get_settings().features_dir


def _spark_table(name: str, folder: str, description: str) -> FileSource:
    """One of the Spark job's tables: a folder of Parquet part files stamped ``event_timestamp``
    (the duckdb offline store needs the format spelled out)."""
    return FileSource(
        name=name,
        path=str(_features_dir / folder),
        file_format=ParquetFormat(),
        timestamp_field="event_timestamp",
        description=description,
    )


customer_state_source = _spark_table(
    "customer_state_source",
    "customer_features",
    "Customer state after each transaction (Spark job).",
)
terminal_state_source = _spark_table(
    "terminal_state_source",
    "terminal_features",
    "Terminal counts and delayed fraud risk after each transaction (Spark job).",
)
terminal_labels_source = _spark_table(
    "terminal_labels_source",
    "terminal_label_features",
    "The terminal's newest known labels after each label arrival (Spark job).",
)
customer_terminal_source = _spark_table(
    "customer_terminal_source",
    "customer_terminal_features",
    "Last use of each (customer, terminal) pair.",
)

# Serving pushes the customer's and the pair's new state after each scored payment
# (serving/stream.py), so the next payment of the card sees it (velocity above all) between two
# materializations; offline they are the Spark tables.
customer_state_push = PushSource(name="customer_state_push", batch_source=customer_state_source)
customer_terminal_push = PushSource(
    name="customer_terminal_push", batch_source=customer_terminal_source
)

# What only the request knows: the transaction being scored.
transaction_request = RequestSource(
    name="transaction_request",
    schema=[
        # Its id: a payment scored again (a retry) finds itself in its card's streamed state.
        Field(name="transaction_id", dtype=Int64),
        Field(name="tx_amount", dtype=Float64),
        Field(name="tx_unix_seconds", dtype=Int64),
    ],
)
