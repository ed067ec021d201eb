"""The one settings object of the platform.

Every value has an embedded default and can be overridden by an environment variable named
``FRAUD_<FIELD>`` (e.g. ``FRAUD_SEED=3``), by a ``.env`` file in the project root, or by the
runtime file ``var/runtime.env`` that ``make up`` writes once (it pins the history start so the
Airflow ``start_date`` never moves between parses). Precedence: environment > .env > runtime file
> defaults.

This module must stay cheap to import: DAG files import it at parse time.
"""

from __future__ import annotations

import datetime as dt
import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# When a retrain decision trains (pipelines/monitoring/retrain.py plans it).
RetrainPolicy = Literal["first-alert", "label-aware"]

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="FRAUD_",
        extra="ignore",
    )

    # --- where things live --------------------------------------------------------------
    home: Path = Field(
        default_factory=lambda: PROJECT_ROOT / "var",
        description="Root of all runtime state (ignored by git).",
    )
    data_dir: Path | None = Field(None, description="Data lake root; default `<home>/data`.")
    airflow_home: Path | None = Field(None, description="AIRFLOW_HOME; default `<home>/airflow`.")

    # --- simulator (handbook defaults) ----------------------------------------------------
    seed: int = Field(0, description="Seed of the transaction simulator.")
    n_customers: int = Field(5_000, ge=1, description="Number of simulated customers.")
    n_terminals: int = Field(10_000, ge=1, description="Number of simulated terminals.")
    terminal_radius: float = Field(
        5.0, gt=0, description="A customer uses terminals strictly closer than this."
    )
    sim_start: dt.date | None = Field(
        None, description="Day 0 of the simulation calendar; default = history start."
    )

    # --- history / schedule -------------------------------------------------------------
    history_days: int = Field(
        60, ge=1, description="Days of history the first start backfills (Airflow catchup)."
    )
    history_start: dt.date | None = Field(
        None,
        description="First ingested day. Pinned in var/runtime.env by `make up` "
        "(today - history_days) so the DAG start_date never shifts.",
    )
    label_delay_days: int = Field(
        7,
        ge=0,
        description="Days until a transaction's fraud label arrives (chargeback delay): "
        "each label arrives exactly this long after its transaction, as in "
        "the handbook's protocol.",
    )

    # --- live traffic: payments through the scoring API ----------------------------------
    live_traffic: bool = Field(
        True,
        description="`make up` runs the payment network: the simulator's payments of each live day"
        " sent to `/score` at their times (`python -m pipelines traffic replay "
        "--follow`, log `var/logs/traffic-replay.log`).",
    )
    live_start: dt.date | None = Field(
        None,
        description="First live day: from it, a day's payments reach the raw lake from the "
        "scored-payment log, not from the simulator. Pinned in var/runtime.env by `make up` "
        "(its first day) when live_traffic is on; unset: every day is simulated.",
    )

    # --- drift scenarios (off unless a start date is set) --------------------------------
    drift_spending_from: dt.date | None = Field(
        None, description="(i) From this day a share of customers spend more."
    )
    drift_spending_share: float = Field(0.3, ge=0, le=1, description="(i) Share of customers.")
    drift_spending_factor: float = Field(1.5, gt=0, description="(i) Amount multiplier.")
    drift_new_fraud_from: dt.date | None = Field(
        None, description="(ii) From this day card-testing fraud appears."
    )
    drift_new_fraud_cards_per_day: int = Field(
        10, ge=0, description="(ii) Cards compromised by card testing each day."
    )
    drift_geo_from: dt.date | None = Field(
        None, description="(iii) From this day a share of customers move region."
    )
    drift_geo_share: float = Field(0.3, ge=0, le=1, description="(iii) Share of customers moved.")
    drift_geo_shift: float = Field(35.0, description="(iii) Distance moved on each axis.")

    # --- transformation and features ---------------------------------------------------
    warehouse_path: Path | None = Field(
        None,
        description="DuckDB file dbt builds (one writer); default `<home>/warehouse/fraud.duckdb`.",
    )
    spark_master: str = Field(
        "local[2]", description="Spark master: `local[N]` or `spark://host:port`."
    )
    spark_driver_memory: str = Field("2g", description="Spark driver memory.")

    # --- Feast ---------------------------------------------------------------------------
    feast_project: str = Field("fraud", description="Feast project name.")
    feast_online_store: Literal["sqlite", "redis"] = Field(
        "sqlite", description="Feast online store: `sqlite` (embedded) or `redis` (production)."
    )
    feast_redis_url: str = Field(
        "127.0.0.1:6379,db=0", description="Redis connection string for the online store."
    )
    feast_registry_url: str | None = Field(
        None,
        description="SQL registry URL (postgresql+psycopg://…); default a file in <home>/feast.",
    )

    # --- training, tracking and registry ------------------------------------------------
    mlflow_tracking_uri: str | None = Field(
        None, description="MLflow tracking/registry URI; default SQLite in <home>/mlflow."
    )
    mlflow_ui_port: int = Field(5000, description="Port of the MLflow UI server `make up` starts.")
    mlflow_experiment: str = Field("fraud-detection", description="MLflow experiment name.")
    model_name: str = Field("fraud-detector", description="Registered model name.")
    optuna_storage: str | None = Field(
        None, description="Optuna study storage URL; default SQLite in <home>/optuna."
    )
    tuning_trials: int = Field(20, ge=1, description="Optuna trials per study.")
    tuning_timeout_seconds: int = Field(600, ge=10, description="Optuna study time budget.")
    max_epochs: int = Field(20, ge=1, description="Epoch cap per training (early stopping).")
    train_days: int = Field(7, ge=1, description="Days in the training period.")
    test_days: int = Field(7, ge=1, description="Days in the test (assessment) period.")
    promotion_metric: Literal["average_precision", "roc_auc", "card_precision_at_100"] = Field(
        "average_precision", description="Metric the promotion gate compares."
    )
    promotion_floor: float = Field(
        0.3, ge=0, le=1, description="Minimum promotion metric for any champion."
    )
    promotion_confidence: float = Field(
        0.95,
        gt=0,
        lt=1,
        description="Confidence of the gate's paired bootstrap interval (challenger - champion).",
    )
    promotion_bootstrap_draws: int = Field(
        200, ge=20, description="Resamples of the cards in the gate's paired bootstrap."
    )
    promotion_noninferiority_margin: float = Field(
        0.05,
        ge=0,
        le=1,
        # Wider than the quality benchmark's paired AP intervals (about +-0.03 on a test week):
        # a model as good as the champion passes.
        description="How much worse a model trained on post-drift data may be than a champion "
        "trained before the drift and still replace it (promotion metric units).",
    )
    torch_threads: int = Field(
        1,
        ge=1,
        description="CPU threads for PyTorch (on 2 shared cores, 2 threads measured 8-10x slower).",
    )
    tuning_workers: int = Field(
        1,
        ge=1,
        description="Optuna worker processes sharing one study (use PostgreSQL study storage).",
    )
    final_training_processes: int = Field(
        1,
        ge=1,
        description="`torchrun` ranks (DistributedDataParallel, gloo) for the final training.",
    )

    # --- serving ---------------------------------------------------------------------------
    serving_host: str = Field("127.0.0.1", description="Address the scoring API binds.")
    serving_port: int = Field(3000, description="Port of the BentoML scoring API.")
    serving_api_key: str | None = Field(
        None, description="If set, requests must carry it in the `X-API-Key` header."
    )
    review_threshold: float = Field(
        0.3, ge=0, le=1, description="Score from which a transaction is sent to review."
    )
    block_threshold: float = Field(
        0.8, ge=0, le=1, description="Score from which a transaction is blocked."
    )
    max_batch_size: int = Field(1000, ge=1, description="Most transactions in one request.")
    serving_workers: int = Field(
        2,
        ge=1,
        description="BentoML worker processes of the scoring API: one keeps answering while a "
        "crashed one restarts; `POST /reload` switches them all before it answers.",
    )
    serving_max_inflight: int = Field(
        8,
        ge=1,
        description="Requests one worker takes at a time (queued ones included); more get 503 with"
        " `Retry-After` at once instead of a queue.",
    )
    serving_max_queue_ms: float = Field(
        250,
        gt=0,
        description="A request that waited longer than this for its batch is refused "
        "(503) instead of worked on after its client gave up.",
    )
    serving_max_payment_age_days: float = Field(
        30,
        gt=0,
        description="Payments older than this (server clock) are refused (400): the online "
        "state no longer describes the card as it was then (the windows' lifetime).",
    )
    model_poll_seconds: float = Field(
        30,
        gt=0,
        description="How often serving checks the champion alias (the registry, for a "
        "Bento's pinned version).",
    )
    prediction_log_flush_seconds: float = Field(
        2, gt=0, description="Longest time a scored transaction waits to reach the log."
    )
    serving_stream_features: bool = Field(
        True,
        description="Each scored payment updates its card's online state (recent payments, last "
        "use of the terminal) before the response returns; `false`: the online state "
        "moves only when `build_features` materializes.",
    )
    serving_await_deploy: bool = Field(
        False,
        description="Served from the source tree, load no model until a deploy rolls a Bento in "
        "(what `make up` starts before the first deploy); `false`: follow the champion"
        " alias.",
    )
    serving_roll_timeout_seconds: float = Field(
        180,
        gt=0,
        description="A deploy's new workers must all serve the new Bento's version within this, or"
        " they are stopped and the old ones keep serving.",
    )
    serving_drain_seconds: float = Field(
        2.0,
        ge=0,
        description="A roll drains the old workers this long before stopping them: each "
        "stops accepting and closes its connections after their next answer.",
    )
    bentos_kept: int = Field(
        3, ge=1, description="Bentos kept in the store after a deploy (the newest deployed ones)."
    )

    # --- experiments: A/B and shadow against the challenger ----------------------------
    experiment_mode: Literal["off", "ab", "shadow"] = Field(
        "off",
        description="`off`, `ab` (a share of customers scored by the challenger) or `shadow` (the "
        "challenger scores everything; decisions stay the champion's).",
    )
    experiment_treatment_share: float = Field(
        0.1, ge=0, le=1, description="A/B: share of customers routed to the challenger."
    )
    experiment_salt: str = Field(
        "fraud-ab-1",
        description="Salt of the customer hash bucketing (a new salt draws a new split).",
    )
    experiment_alpha: float = Field(
        0.05, gt=0, lt=1, description="Significance level of the experiment analysis."
    )
    experiment_min_labelled: int = Field(
        200,
        ge=1,
        description="Fewest labelled predictions per variant before the analysis decides.",
    )
    experiment_window_days: int = Field(
        28,
        ge=1,
        description="Days the experiment analysis reads, ending on its day (CLI `--window-days` "
        "and the `analyze_experiment` param default to it).",
    )

    # --- lineage UIs -------------------------------------------------------------------
    dbt_docs_port: int = Field(
        8085, description="Port of the dbt docs site (lineage graph) `make up` serves."
    )
    feast_ui_port: int = Field(8888, description="Port of the Feast UI `make up` starts.")

    # --- first start ---------------------------------------------------------------------
    bootstrap_training: bool = Field(
        True,
        description="Train and promote the first model as soon as features exist and no "
        "champion does (no manual trigger).",
    )
    bootstrap_trials: int = Field(
        4,
        ge=1,
        description="Optuna trials of that first model (a quick one; retrains search with the full"
        " budget).",
    )
    bootstrap_max_epochs: int = Field(
        5, ge=1, description="Epoch cap per trial of that first model."
    )
    bootstrap_timeout_seconds: int = Field(
        240, ge=10, description="Search time budget of that first model."
    )

    # --- monitoring --------------------------------------------------------------------
    monitor_schedule: str = Field(
        "@daily", description="Cron expression or preset of `monitor_drift`."
    )
    monitor_poke_seconds: int = Field(
        300,
        ge=5,
        description="How often `monitor_drift` re-checks that its day is in the mart and a "
        "champion exists.",
    )
    retrain_cooldown_days: int = Field(
        7, ge=1, description="No drift-triggered retrain within this many days of the last one."
    )
    retrain_policy: RetrainPolicy = Field(
        "first-alert",
        description="When a `retrain` decision trains: `first-alert` at once; `label-aware` at "
        "once on a labelled performance drop, and on an input-drift alert once the training "
        "window holds `retrain_drifted_days` days of the drifted period with their labels "
        "(a scheduled `train_model` run). See docs/monitoring.md.",
    )
    retrain_drifted_days: int = Field(
        3,
        ge=1,
        description="`label-aware`: drifted days the training window must hold before an input-"
        "drift retrain starts.",
    )

    # --- Airflow -------------------------------------------------------------------------
    airflow_host: str = Field("127.0.0.1", description="Address the Airflow API server binds.")
    airflow_port: int = Field(8080, description="Port of the Airflow API server and UI.")
    airflow_worker_log_port: int = Field(8793, description="Port of the task-log server.")
    airflow_trigger_log_port: int = Field(8794, description="Port of the triggerer log server.")
    airflow_parallelism: int = Field(4, ge=1, description="Airflow task slots (sized for 2 cores).")
    airflow_database_url: str | None = Field(
        None, description="Airflow metadata DB; default SQLite in `<airflow_home>`."
    )
    airflow_user: str = Field("admin", description="UI/API login (the password is generated).")

    @model_validator(mode="after")
    def _resolve_paths(self) -> Settings:
        self.home = self.home.resolve()
        if self.data_dir is None:
            self.data_dir = self.home / "data"
        if self.airflow_home is None:
            self.airflow_home = self.home / "airflow"
        if self.warehouse_path is None:
            self.warehouse_path = self.home / "warehouse" / "fraud.duckdb"
        return self

    # Derived values are properties, not fields, so they cannot disagree with their inputs.
    @property
    def history_start_date(self) -> dt.date:
        """The pinned history start; the handbook's first day if nothing pinned it yet."""
        return self.history_start or dt.date(2018, 4, 1)

    def is_live(self, day: dt.date) -> bool:
        """Whether ``day``'s payments enter through the scoring API (not the simulator)."""
        return self.live_start is not None and day >= self.live_start

    @property
    def serving_client_headers(self) -> dict[str, str]:
        """What a client of the scoring API sends: the API key, where one is configured."""
        return {"X-API-Key": self.serving_api_key} if self.serving_api_key else {}

    @property
    def sim_start_date(self) -> dt.date:
        return self.sim_start or self.history_start_date

    @property
    def lake_dir(self) -> Path:
        return self.data_dir / "lake"

    @property
    def raw_transactions_dir(self) -> Path:
        return self.lake_dir / "raw" / "transactions"

    @property
    def raw_labels_dir(self) -> Path:
        return self.lake_dir / "raw" / "labels"

    @property
    def marts_dir(self) -> Path:
        """Parquet exports of the dbt marts (what Spark reads; never the DuckDB file)."""
        return self.lake_dir / "marts"

    @property
    def features_dir(self) -> Path:
        """Spark's feature tables: the Feast offline sources."""
        return self.lake_dir / "features"

    @property
    def feast_dir(self) -> Path:
        """Feast's rendered feature_store.yaml, file registry and SQLite online store."""
        return self.home / "feast"

    @property
    def mlflow_dir(self) -> Path:
        return self.home / "mlflow"

    @property
    def tracking_uri(self) -> str:
        return self.mlflow_tracking_uri or f"sqlite:///{self.mlflow_dir / 'mlflow.db'}"

    @property
    def study_storage(self) -> str:
        return self.optuna_storage or f"sqlite:///{self.home / 'optuna' / 'studies.db'}"

    @property
    def predictions_dir(self) -> Path:
        """The prediction log: Parquet parts per day, input of monitoring and feedback."""
        return self.lake_dir / "predictions"

    @property
    def landing_dir(self) -> Path:
        return self.data_dir / "landing"

    @property
    def quarantine_dir(self) -> Path:
        return self.data_dir / "quarantine"

    @property
    def runtime_env_file(self) -> Path:
        return self.home / "runtime.env"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (cached; tests call ``get_settings.cache_clear()``)."""
    return load_settings()


def load_settings() -> Settings:
    """Fresh settings from the environment and the env files (later files win)."""
    home = Path(os.environ.get("FRAUD_HOME", PROJECT_ROOT / "var"))
    return Settings(_env_file=(home / "runtime.env", PROJECT_ROOT / ".env"))


# How the configuration reference shows the defaults that are computed when the settings load.
SHOWN_DEFAULTS = {
    "home": "`./var`",
    "data_dir": "`<home>/data`",
    "airflow_home": "`<home>/airflow`",
    "sim_start": "history start",
    "history_start": "pinned by `make up`",
    "live_start": "pinned by `make up`",
    "drift_spending_from": "off",
    "drift_new_fraud_from": "off",
    "drift_geo_from": "off",
    "warehouse_path": "`<home>/warehouse/fraud.duckdb`",
    "feast_registry_url": "file in `<home>/feast`",
    "mlflow_tracking_uri": "SQLite in `<home>/mlflow`",
    "optuna_storage": "SQLite in `<home>/optuna`",
    "serving_api_key": "none (open)",
    "airflow_database_url": "SQLite in `<airflow_home>`",
}
REFERENCE_DOC = PROJECT_ROOT / "docs" / "configuration.md"
REFERENCE_BEGIN = "<!-- settings reference: generated by `python -m pipelines.config` -->"
REFERENCE_END = "<!-- end of the settings reference -->"


def _shown(value: object) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, str):
        return f"`{value}`"
    return str(value)


def settings_reference() -> str:
    """The configuration reference: one table row per setting (variable, default, meaning),
    from the fields of ``Settings``, in their order."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        default = SHOWN_DEFAULTS.get(name) or _shown(field.default)
        meaning = (field.description or "").replace("|", "\\|")
        rows.append(f"| `FRAUD_{name.upper()}` | {default} | {meaning} |")
    return "\n".join(rows)


def write_settings_reference(doc: Path = REFERENCE_DOC) -> bool:
    """Replace the reference between its markers in ``doc``; True if the file changed."""
    text = doc.read_text()
    head, rest = text.split(REFERENCE_BEGIN)
    _, tail = rest.split(REFERENCE_END)
    new = f"{head}{REFERENCE_BEGIN}\n{settings_reference()}\n{REFERENCE_END}{tail}"
    if new == text:
        return False
    doc.write_text(new)
    return True


if __name__ == "__main__":
    changed = write_settings_reference()
    print(f"{REFERENCE_DOC}: {'updated' if changed else 'already current'}")
