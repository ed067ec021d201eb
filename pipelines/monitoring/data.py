"""What monitoring reads: a day of transactions (from the mart) and a day of the prediction log.

Transactions come with *context columns*: the customer's transaction counts in the last hour
and day (current one included), the amount relative to the customer's other transactions of
the last 30 days, and whether the customer used this terminal in the last 30 days. They are
what the drift scenarios move (spending, card testing bursts, customers at unfamiliar
terminals). They are the on-demand view's features of the same names
(``feature_repo/transaction_features.py``, what the model is trained and served on),
recomputed here from the mart in DuckDB over the feature job's windows, so the monitor needs
neither Spark nor Feast and runs as soon as the mart holds the day;
``tests/integration/test_feature_store.py`` checks the two agree row for row. The model's own
inputs, as served, are monitored through the prediction log.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

import duckdb

from pipelines.config import Settings
from pipelines.contracts import (
    PREDICTION_LOG_EXPERIMENT_COLUMNS,
    PREDICTION_LOG_FEATURE_PREFIX,
    PREDICTION_LOG_IDENTIFIERS,
)
from pipelines.features.job import SECONDS_PER_DAY, WINDOW_DAYS
from pipelines.lake import day_files, days_between
from pipelines.transform.mart import mart_day_file, mart_files, read_labels

if TYPE_CHECKING:
    import pandas as pd


# The longest window of the context columns: the mart is read this far before the day.
CONTEXT_LOOKBACK_DAYS = max(WINDOW_DAYS)
_HOUR, _DAY, _LONGEST = 3_600, SECONDS_PER_DAY, CONTEXT_LOOKBACK_DAYS * SECONDS_PER_DAY
TRANSACTION_COLUMNS = [
    "tx_amount",
    "tx_hour",
    "tx_during_night",
    "tx_during_weekend",
    "customer_nb_tx_1h",
    "customer_nb_tx_1d",
    "customer_amount_ratio_30d",
    "customer_terminal_is_new",
]
# Prediction-log columns that are not monitored: identifiers and times, and the experiment's
# bookkeeping and timings (not model inputs; a latency "drift" is the machine's, not the data's).
PREDICTION_LOG_KEYS = [*PREDICTION_LOG_IDENTIFIERS, *PREDICTION_LOG_EXPERIMENT_COLUMNS]

# Windows as in the on-demand view: (t - w, t] on whole seconds; "1 preceding" leaves out the
# current transaction (and, with second resolution, others in the same second).
_DAY_SQL = f"""
with tx as (
    select transaction_id, tx_datetime, customer_id, terminal_id, tx_amount,
           tx_during_weekend, tx_during_night,
           cast(epoch(tx_datetime) as bigint) as ts
    from read_parquet($files, hive_partitioning = false)
    where tx_datetime >= $lookback_start and tx_datetime < $end
),
windows as (
    select *,
        count(*) over (partition by customer_id order by ts
                       range between {_HOUR - 1} preceding and current row)
            as customer_nb_tx_1h,
        count(*) over (partition by customer_id order by ts
                       range between {_DAY - 1} preceding and current row)
            as customer_nb_tx_1d,
        avg(tx_amount) over (partition by customer_id order by ts
                       range between {_LONGEST - 1} preceding and 1 preceding)
            as other_avg_30d,
        count(*) over (partition by customer_id, terminal_id order by ts
                       range between {_LONGEST - 1} preceding and 1 preceding)
            as pair_before_30d
    from tx
)
select
    transaction_id,
    tx_amount,
    cast(hour(timezone('UTC', tx_datetime)) as bigint) as tx_hour,
    cast(tx_during_night as bigint) as tx_during_night,
    cast(tx_during_weekend as bigint) as tx_during_weekend,
    customer_nb_tx_1h,
    customer_nb_tx_1d,
    -- 1.0 when there is no earlier transaction to compare with, as the on-demand view does.
    coalesce(tx_amount / case when other_avg_30d > 0 then other_avg_30d end, 1.0)
        as customer_amount_ratio_30d,
    cast(pair_before_30d = 0 as bigint) as customer_terminal_is_new
from windows
where tx_datetime >= $start
order by tx_datetime, transaction_id
"""


def _midnight(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(), dt.UTC)


def mart_has_day(settings: Settings, day: dt.date) -> bool:
    """True once the mart export holds transactions of ``day`` (ingest and dbt have run)."""

    return mart_day_file(settings, day).exists()


def read_transactions_day(
    settings: Settings, day: dt.date, lookback_days: int = CONTEXT_LOOKBACK_DAYS
) -> pd.DataFrame:
    """The transactions of ``day`` with their context columns (``TRANSACTION_COLUMNS``)."""

    exported = mart_files(settings)
    if not exported:
        raise FileNotFoundError("no fct_transactions export yet: run dbt first")
    # No exported day in reach: any one file gives the same empty, typed answer.
    files = mart_files(settings, day - dt.timedelta(days=lookback_days), day) or exported[-1:]
    start = _midnight(day)
    params = {
        "files": files,
        "start": start,
        "end": start + dt.timedelta(days=1),
        "lookback_start": start - dt.timedelta(days=lookback_days),
    }
    with duckdb.connect() as con:
        return con.execute(_DAY_SQL, params).df()


def prediction_log_files(settings: Settings, day: dt.date) -> list[str]:
    return [str(p) for p in day_files(settings.predictions_dir, day)]


def read_prediction_log(
    settings: Settings, first: dt.date, last: dt.date | None = None
) -> pd.DataFrame | None:
    """Prediction-log rows of days ``first`` .. ``last`` (None when the log has none).

    A transaction scored twice (a client retry) keeps its latest score.
    """

    files = [
        f for d in days_between(first, last or first) for f in prediction_log_files(settings, d)
    ]
    if not files:
        return None
    with duckdb.connect() as con:
        # union_by_name: a flush whose batch had a column all-NULL may type it differently.
        frame = con.execute(
            """
            select * from read_parquet(?, union_by_name = true)
            qualify row_number() over (
                partition by transaction_id order by request_time desc) = 1
            order by tx_datetime, transaction_id
            """,
            [files],
        ).df()
    return frame if len(frame) else None


def prediction_profile_frame(log: pd.DataFrame) -> pd.DataFrame:
    """The monitored part of the prediction log, inputs named as the model names them."""
    monitored = log.drop(columns=[c for c in PREDICTION_LOG_KEYS if c in log.columns])
    return monitored.rename(
        columns={c: c.removeprefix(PREDICTION_LOG_FEATURE_PREFIX) for c in monitored.columns}
    )


def read_labelled_scores(
    settings: Settings, first: dt.date, last: dt.date, model_version: str | None
) -> pd.DataFrame | None:
    """Scores of ``model_version`` (any version if None) for transactions whose labels have
    arrived (``transform.mart.read_labels``): columns tx_day, customer_id, tx_fraud, score."""

    log = read_prediction_log(settings, first, last)
    if log is None:
        return None
    if model_version is not None:
        log = log[log["model_version"].astype(str) == str(model_version)]
    scores = log[["transaction_id", "fraud_probability"]].rename(
        columns={"fraud_probability": "score"}
    )
    frame = read_labels(settings, first, last).merge(scores, on="transaction_id")
    if frame.empty:
        return None
    return frame[["tx_day", "customer_id", "tx_fraud", "score"]].reset_index(drop=True)
