"""Feature views over the Spark tables: entity state after each transaction (and, for the
terminal's labels, after each label arrival).

Training joins them as of just *before* each transaction (its timestamp minus 1 µs) and serving
reads the latest online row: both see the state after the previous transaction, and the
on-demand view adds the transaction being scored in the same code. The customer's state and
the (customer, terminal) pair's are also streamed: serving pushes the state after every scored
payment (``serving/stream.py``), so the next payment of the card reads it at once.
"""

from datetime import timedelta

from entities import customer, terminal
from feast import FeatureView, Field
from feast.types import Array, Float64, Int64
from sources import (
    customer_state_push,
    customer_terminal_push,
    terminal_labels_source,
    terminal_state_source,
)

from pipelines.features.job import WINDOW_DAYS

customer_state = FeatureView(
    name="customer_state",
    entities=[customer],
    # Older than the longest window, the state says nothing about the present.
    ttl=timedelta(days=30),
    # The payments themselves, not window counts: a count cannot tell which of its payments
    # have left the window by the next one; the on-demand view counts exactly at any instant.
    schema=[
        Field(name="customer_recent_tx_id", dtype=Array(Int64)),
        Field(name="customer_recent_tx_unix", dtype=Array(Int64)),
        Field(name="customer_recent_tx_amount", dtype=Array(Float64)),
    ],
    source=customer_state_push,
    online=True,
    description="The customer's payments of the last 30 days, as of their latest payment.",
)

terminal_state = FeatureView(
    name="terminal_state",
    entities=[terminal],
    # The delayed windows reach 30 + label delay days back.
    ttl=timedelta(days=38),
    schema=[
        *(Field(name=f"terminal_nb_tx_{n}d", dtype=Int64) for n in WINDOW_DAYS),
        *(Field(name=f"terminal_risk_{n}d", dtype=Float64) for n in WINDOW_DAYS),
    ],
    source=terminal_state_source,
    online=True,
    description="Terminal volume and fraud risk over windows delayed by the label delay.",
)

terminal_labels = FeatureView(
    name="terminal_labels",
    entities=[terminal],
    # Labels arrive about daily at an active terminal; a month without one says nothing.
    ttl=timedelta(days=38),
    schema=[
        Field(name="terminal_last_label_fraud", dtype=Float64),
        Field(name="terminal_last3_labels_fraud_share", dtype=Float64),
        Field(name="terminal_fraud_streak_start_unix", dtype=Int64),
    ],
    source=terminal_labels_source,
    online=True,
    description="The terminal's newest known labels, as of the latest label arrival.",
)

customer_terminal_history = FeatureView(
    name="customer_terminal_history",
    entities=[customer, terminal],
    ttl=timedelta(days=30),  # no row within 30 days = a terminal new to this customer
    schema=[Field(name="pair_last_tx_unix", dtype=Int64)],
    source=customer_terminal_push,
    online=True,
    description="When the customer last paid at this terminal.",
)
