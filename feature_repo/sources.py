"""Offline sources (the Spark job's Parquet tables), the request source and a push source."""

from feast import Field, FileSource, PushSource, RequestSource
from feast.data_format import ParquetFormat
from feast.types import Float64, Int64

from pipelines.config import get_settings

_features_dir = get_settings().features_dir

customer_state_source = FileSource(
    name="customer_state_source",
    path=str(_features_dir / "customer_features"),
    file_format=ParquetFormat(),  # a folder of part files: the duckdb store needs the format
    timestamp_field="event_timestamp",
    description="Customer state after each transaction (Spark job).",
)

terminal_state_source = FileSource(
    name="terminal_state_source",
    path=str(_features_dir / "terminal_features"),
    file_format=ParquetFormat(),
    timestamp_field="event_timestamp",
    description="Terminal counts and delayed fraud risk after each transaction (Spark job).",
)

terminal_labels_source = FileSource(
    name="terminal_labels_source",
    path=str(_features_dir / "terminal_label_features"),
    file_format=ParquetFormat(),
    timestamp_field="event_timestamp",
    description="The terminal's newest known labels after each label arrival (Spark job).",
)

customer_terminal_source = FileSource(
    name="customer_terminal_source",
    path=str(_features_dir / "customer_terminal_features"),
    file_format=ParquetFormat(),
    timestamp_field="event_timestamp",
    description="Last use of each (customer, terminal) pair.",
)

# Serving pushes the customer's new state after each scored transaction, so the online store
# stays fresh (velocity above all) between two materializations; offline it is the Spark table.
customer_state_push = PushSource(name="customer_state_push", batch_source=customer_state_source)

# What only the request knows: the transaction being scored.
transaction_request = RequestSource(
    name="transaction_request",
    schema=[
        Field(name="tx_amount", dtype=Float64),
        Field(name="tx_unix_seconds", dtype=Int64),
    ],
)
