"""Names several packages must agree on, owned here: the registry's aliases and the columns
of the prediction log.

Pure constants (no imports): DAG files, serving and the Spark driver may all import it.
"""

from __future__ import annotations

# Aliases of ``settings.model_name`` in the MLflow registry (``pipelines/registry/promotion.py``
# moves them; serving follows ``champion``, experiments compare with ``challenger``).
CHAMPION_ALIAS = "champion"
CHALLENGER_ALIAS = "challenger"
PREVIOUS_CHAMPION_ALIAS = "previous_champion"

# Lineage tags of a training run (and its registered version) started to answer a drift
# (``pipelines/training/train.py`` writes them from the monitor's trigger conf; the gate's
# ``comparison_rule`` reads them).
DRIFT_ALERT_DAY_TAG = "drift_alert_day"
DRIFT_COLUMNS_TAG = "drift_columns"
WINDOW_CONTAINS_DRIFT_TAG = "window_contains_drift"
DRIFTED_TRAINING_DAYS_TAG = "drifted_training_days"

# The prediction log (``serving/prediction_log.py`` writes it; monitoring and the experiment
# analysis read it). One row per scored payment: the identifiers and times below, the payment's
# amount, the model's inputs as ``feature_<name>``, the answer (``fraud_probability``,
# ``decision``, ``model_version``, ``unknown_customer``, ``unknown_terminal``), then the
# experiment columns.
PREDICTION_LOG_IDENTIFIERS = (
    "transaction_id",
    "tx_datetime",
    "customer_id",
    "terminal_id",
    "request_time",
)
PREDICTION_LOG_FEATURE_PREFIX = "feature_"
# Experiment bookkeeping and timings, with their Arrow types (often all-null in one part: no
# shadow running) and the value a part written before they existed stands for.
PREDICTION_LOG_EXPERIMENT_COLUMNS: dict[str, tuple[str, object]] = {
    "variant": ("string", None),
    "shadow_probability": ("double", None),
    "shadow_model_version": ("string", None),
    "challenger_failed": ("bool", False),
    "latency_ms": ("double", None),
    "model_latency_ms": ("double", None),
    "shadow_latency_ms": ("double", None),
}
