"""Batch scoring: a whole day of the mart scored by the champion, written to the lake.

Same feature path as online scoring — the model's feature service, its on-demand view and
the same point in time (the state before each transaction) — through Feast's historical
retrieval instead of the online store. One atomic part per day: a rerun replaces it.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.config import Settings
from pipelines.featurestore.store import historical_features, training_entities
from pipelines.lake import part_path, write_parquet_atomic
from pipelines.transform.mart import mart_day_file
from serving.model import action_for, load_champion


@dataclass(frozen=True)
class BatchScoreResult:
    day: dt.date
    rows: int
    model_version: str
    path: Path | None
    decisions: dict[str, int]


def scores_dir(settings: Settings) -> Path:
    return settings.lake_dir / "scores"


def score_day(settings: Settings, day: dt.date) -> BatchScoreResult:

    model = load_champion(settings.tracking_uri, settings.model_name)
    day_file = mart_day_file(settings, day)
    if not day_file.exists():
        return BatchScoreResult(day, 0, model.version, None, {})
    mart = pq.read_table(
        day_file,
        columns=["transaction_id", "tx_datetime", "customer_id", "terminal_id", "tx_amount"],
    ).to_pandas()
    if mart.empty:
        return BatchScoreResult(day, 0, model.version, None, {})
    features = historical_features(settings, training_entities(mart), model.feature_service)
    frame = mart.merge(
        features.drop(columns=["customer_id", "terminal_id", "tx_amount"], errors="ignore"),
        on="transaction_id",
        validate="1:1",
    )
    probabilities = model.predict(frame[model.inputs].astype("float64"))
    frame["fraud_probability"] = probabilities
    frame["decision"] = [
        action_for(float(p), settings.review_threshold, settings.block_threshold)
        for p in probabilities
    ]
    frame["model_version"] = model.version
    frame["scored_at"] = dt.datetime.now(dt.UTC)
    out = frame[
        [
            "transaction_id",
            "tx_datetime",
            "customer_id",
            "terminal_id",
            "tx_amount",
            "fraud_probability",
            "decision",
            "model_version",
            "scored_at",
        ]
    ]
    path = write_parquet_atomic(
        pa.Table.from_pandas(out, preserve_index=False),
        part_path(scores_dir(settings), day, "batch"),
    )
    return BatchScoreResult(
        day, len(out), model.version, path, out["decision"].value_counts().to_dict()
    )
