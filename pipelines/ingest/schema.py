"""Arrow schemas of the raw lake tables: the contract every source is checked against."""

from __future__ import annotations

import pyarrow as pa

TRANSACTIONS = pa.schema(
    [
        pa.field("transaction_id", pa.int64(), nullable=False),
        pa.field("tx_datetime", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("customer_id", pa.int64(), nullable=False),
        pa.field("terminal_id", pa.int64(), nullable=False),
        pa.field("tx_amount", pa.float64(), nullable=False),
    ]
)

LABELS = pa.schema(
    [
        pa.field("transaction_id", pa.int64(), nullable=False),
        pa.field("tx_fraud", pa.int8(), nullable=False),
        pa.field("tx_fraud_scenario", pa.int8(), nullable=False),
        # When the label became known (end of the day the chargeback feed delivered it).
        pa.field("label_available_at", pa.timestamp("us", tz="UTC"), nullable=False),
    ]
)
