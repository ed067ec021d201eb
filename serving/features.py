"""Online features for a batch of transactions, through the model's own feature service.

The on-demand view computes the request-time features with the same function as in training;
a customer or terminal without state gets the documented defaults and is flagged.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from feast import FeatureStore

    from serving.schemas import Transaction

# Defaults for an entity the online store does not know (documented in the README): a new
# customer is handled by the on-demand view itself (counts 1, ratio 1, is_new 1); a terminal
# without state has no history, hence no transactions and no known risk.
TERMINAL_DEFAULTS = {
    **{f"terminal_nb_tx_{n}d": 0.0 for n in (1, 7, 30)},
    **{f"terminal_risk_{n}d": 0.0 for n in (1, 7, 30)},
}


@dataclass(frozen=True)
class FeatureBatch:
    inputs: pd.DataFrame  # the model's input columns, in order
    unknown_customer: np.ndarray
    unknown_terminal: np.ndarray
    feature_age_seconds: list[float | None]


def unix_seconds(when: dt.datetime) -> int:
    return int(when.timestamp())


def fetch(
    store: FeatureStore, service: str, inputs: list[str], transactions: list[Transaction]
) -> FeatureBatch:
    rows = [
        {
            "customer_id": t.customer_id,
            "terminal_id": t.terminal_id,
            "tx_amount": t.tx_amount,
            "tx_unix_seconds": unix_seconds(t.tx_datetime),
        }
        for t in transactions
    ]
    # allow_cache: without it Feast re-reads the whole registry on every request.
    online = store.get_online_features(
        features=store.get_feature_service(service, allow_cache=True), entity_rows=rows
    ).to_dict()
    frame = pd.DataFrame({name: online.get(name) for name in inputs if name in online})
    frame["tx_amount"] = [t.tx_amount for t in transactions]
    unknown_terminal = frame["terminal_nb_tx_30d"].isna().to_numpy()
    for column, default in TERMINAL_DEFAULTS.items():
        if column in frame:
            frame[column] = frame[column].astype("float64").fillna(default)
    unknown_customer = np.asarray(online.get("customer_is_new", [0] * len(rows))) == 1
    ages = [
        None if new else float(seconds)
        for new, seconds in zip(
            unknown_customer, online.get("customer_seconds_since_prev_tx", []), strict=False
        )
    ]
    missing = [c for c in inputs if c not in frame]
    if missing:
        raise RuntimeError(f"feature service {service} does not provide {missing}")
    return FeatureBatch(frame[inputs].astype("float64"), unknown_customer, unknown_terminal, ages)
