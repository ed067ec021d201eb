"""Request-time features: the scored transaction combined with the entity state before it.

Python mode (not pandas): ~0.2 ms per online read instead of ~1.3 ms. The function runs in
training (historical retrieval) and in serving (online read) alike.
"""

from typing import Any

from feast import Field
from feast.on_demand_feature_view import on_demand_feature_view
from feast.types import Float64, Int64
from feature_views import customer_state, customer_terminal_history, terminal_labels
from sources import transaction_request


@on_demand_feature_view(
    sources=[customer_state, customer_terminal_history, transaction_request],
    schema=[
        Field(name="tx_during_weekend", dtype=Int64),
        Field(name="tx_during_night", dtype=Int64),
        Field(name="customer_nb_tx_1d_now", dtype=Int64),
        Field(name="customer_nb_tx_7d_now", dtype=Int64),
        Field(name="customer_nb_tx_30d_now", dtype=Int64),
        Field(name="customer_avg_amount_1d_now", dtype=Float64),
        Field(name="customer_avg_amount_7d_now", dtype=Float64),
        Field(name="customer_avg_amount_30d_now", dtype=Float64),
        Field(name="customer_nb_tx_1h_now", dtype=Int64),
        Field(name="customer_amount_ratio_30d", dtype=Float64),
        Field(name="customer_seconds_since_prev_tx", dtype=Float64),
        Field(name="customer_is_new", dtype=Int64),
        Field(name="customer_terminal_is_new", dtype=Int64),
    ],
    mode="python",
    description="Handbook customer windows including the scored transaction, and novelty flags.",
)
def transaction_features(inputs: dict[str, Any]) -> dict[str, Any]:
    # Feast stores this function's source and runs it alone: everything it needs is inside.
    import datetime as dt

    day = 86_400
    max_gap = 30 * day  # "no previous transaction" reads as the longest window
    windows = (("1d", day), ("7d", 7 * day), ("30d", 30 * day), ("1h", 3600))

    def payments(values: Any) -> list:
        # No state: None online, None or NaN offline; arrays come as lists or numpy arrays.
        return [] if values is None or isinstance(values, float) else list(values)

    out: dict[str, list] = {
        k: []
        for k in (
            "tx_during_weekend",
            "tx_during_night",
            "customer_nb_tx_1d_now",
            "customer_nb_tx_7d_now",
            "customer_nb_tx_30d_now",
            "customer_avg_amount_1d_now",
            "customer_avg_amount_7d_now",
            "customer_avg_amount_30d_now",
            "customer_nb_tx_1h_now",
            "customer_amount_ratio_30d",
            "customer_seconds_since_prev_tx",
            "customer_is_new",
            "customer_terminal_is_new",
        )
    }
    for i, amount in enumerate(inputs["tx_amount"]):
        now = int(inputs["tx_unix_seconds"][i])
        when = dt.datetime.fromtimestamp(now, dt.UTC)
        out["tx_during_weekend"].append(int(when.weekday() >= 5))
        out["tx_during_night"].append(int(when.hour <= 6))
        # The card's other payments up to now (a payment scored late must not see later ones;
        # one scored again, a retry, must not see itself). Each window is (now - n, now] on
        # whole seconds, the scored payment included, as in Spark.
        own = int(inputs["transaction_id"][i])
        earlier = [
            (int(u), float(a))
            for tid, u, a in zip(
                payments(inputs["customer_recent_tx_id"][i]),
                payments(inputs["customer_recent_tx_unix"][i]),
                payments(inputs["customer_recent_tx_amount"][i]),
                strict=True,
            )
            if u <= now and tid != own
        ]
        gap = now - max(u for u, _ in earlier) if earlier else None
        others_30d = None
        for n, window in windows:
            inside = [a for u, a in earlier if u > now - window]
            nb = len(inside) + 1
            out[f"customer_nb_tx_{n}_now"].append(nb)
            if n != "1h":
                out[f"customer_avg_amount_{n}_now"].append((sum(inside) + amount) / nb)
            if n == "30d":
                others_30d = inside
        usual = sum(others_30d) / len(others_30d) if others_30d else 0.0
        out["customer_amount_ratio_30d"].append(float(amount / usual) if usual > 0 else 1.0)
        out["customer_seconds_since_prev_tx"].append(
            float(min(gap, max_gap)) if gap is not None else float(max_gap)
        )
        out["customer_is_new"].append(int(gap is None))
        pair_last = inputs["pair_last_tx_unix"][i]
        out["customer_terminal_is_new"].append(
            int(pair_last is None or now - int(pair_last) >= 30 * day)
        )
    return out


@on_demand_feature_view(
    sources=[terminal_labels, transaction_request],
    schema=[Field(name="terminal_fraud_streak_days", dtype=Float64)],
    mode="python",
    description="Days since the terminal's current run of known fraud labels began (0: none).",
)
def terminal_fraud_streak(inputs: dict[str, Any]) -> dict[str, Any]:
    # A compromise has a lifetime: the streak's age at the scored transaction tells a live one
    # from one whose last frauds are still coming in through the label delay.
    days = []
    for now, start in zip(
        inputs["tx_unix_seconds"], inputs["terminal_fraud_streak_start_unix"], strict=True
    ):
        known = start is not None and start == start  # None online, NaN offline: no streak
        days.append(max(int(now) - int(start), 0) / 86_400 if known else 0.0)
    return {"terminal_fraud_streak_days": days}
