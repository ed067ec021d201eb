"""The fraud-scoring API: ``bentoml serve serving.service:FraudScoringService``.

Endpoints: ``POST /score`` (one or many transactions, optional explanation), ``POST
/model_info``, ``POST /reload`` (check the champion alias now; the deploy DAG calls it), and
BentoML's own ``/livez``, ``/readyz``, ``/metrics``.
"""

from __future__ import annotations

import datetime as dt
import logging
from http import HTTPStatus
from typing import Annotated

import bentoml
from pydantic import Field

from pipelines.config import get_settings
from serving.guard import RequestGuard
from serving.schemas import ModelInfo, Score, Transaction

log = logging.getLogger(__name__)
_settings = get_settings()
# ~300 bytes per transaction in JSON: room for a full batch, not for abuse.
MAX_BODY_BYTES = 512 * _settings.max_batch_size + 4096

Batch = Annotated[list[Transaction], Field(min_length=1, max_length=_settings.max_batch_size)]


class ServiceUnavailable(bentoml.exceptions.BentoMLException):
    error_code = HTTPStatus.SERVICE_UNAVAILABLE


@bentoml.service(name="fraud_scoring", traffic={"timeout": 30})
class FraudScoringService:
    def __init__(self) -> None:
        from pipelines.featurestore.store import get_store
        from serving.model import ChampionWatcher
        from serving.prediction_log import PredictionLog

        self.settings = get_settings()
        self.store = get_store(self.settings)
        self.watcher = ChampionWatcher(
            self.settings.tracking_uri, self.settings.model_name, self.settings.model_poll_seconds
        )
        self.watcher.start()
        self.prediction_log = PredictionLog(
            self.settings.predictions_dir, self.settings.prediction_log_flush_seconds
        )

    def __is_ready__(self) -> bool:
        # Ready as soon as a champion is loaded; a registry outage later keeps it serving
        # (model_info then reports registry_status "unreachable").
        return self.watcher.current is not None

    @bentoml.on_shutdown
    def _flush_log(self) -> None:
        self.prediction_log.close()
        self.watcher.stop()

    @bentoml.api
    def score(self, transactions: Batch, explain: bool = False) -> list[Score]:
        """Score transactions: probability, decision, model version, feature freshness."""
        from serving.features import fetch
        from serving.model import decide

        model = self.watcher.current
        if model is None:
            raise ServiceUnavailable("no champion model is loaded yet")
        batch = fetch(self.store, model.feature_service, model.inputs, transactions)
        probabilities = model.predict(batch.inputs)
        explanations = model.explain(batch.inputs) if explain else [None] * len(transactions)
        s = self.settings
        scores = [
            Score(
                transaction_id=t.transaction_id,
                fraud_probability=round(float(p), 6),
                decision=decide(float(p), s.review_threshold, s.block_threshold),
                model_name=model.name,
                model_version=model.version,
                unknown_customer=bool(batch.unknown_customer[i]),
                unknown_terminal=bool(batch.unknown_terminal[i]),
                feature_age_seconds=batch.feature_age_seconds[i],
                explanation=explanations[i],
            )
            for i, (t, p) in enumerate(zip(transactions, probabilities, strict=True))
        ]
        now = dt.datetime.now(dt.UTC)
        features = batch.inputs.to_dict("records")
        self.prediction_log.append(
            [
                {
                    "transaction_id": t.transaction_id,
                    "tx_datetime": t.tx_datetime,
                    "customer_id": t.customer_id,
                    "terminal_id": t.terminal_id,
                    "tx_amount": t.tx_amount,
                    **{f"feature_{k}": v for k, v in features[i].items() if k != "tx_amount"},
                    "fraud_probability": sc.fraud_probability,
                    "decision": sc.decision,
                    "model_version": sc.model_version,
                    "unknown_customer": sc.unknown_customer,
                    "unknown_terminal": sc.unknown_terminal,
                    "request_time": now,
                }
                for i, (t, sc) in enumerate(zip(transactions, scores, strict=True))
            ]
        )
        return scores

    @bentoml.api
    def model_info(self) -> ModelInfo:
        """The model serving right now: version, alias, metrics, feature service, window."""
        return self._model_info()

    def _model_info(self) -> ModelInfo:
        # Not an API method: BentoML routes a call between API methods through its own
        # dispatch, which blocks a sync endpoint calling another one until it times out.
        model = self.watcher.current
        if model is None:
            raise ServiceUnavailable("no champion model is loaded yet")
        return ModelInfo(
            name=model.name,
            version=model.version,
            alias=model.alias,
            feature_service=model.feature_service,
            training_window=model.training_window,
            metrics=model.metrics,
            loaded_at=model.loaded_at,
            registry_status=self.watcher.registry_status,
            last_reload_error=self.watcher.last_error,
        )

    @bentoml.api
    def reload(self) -> ModelInfo:
        """Check the champion alias now (instead of at the next poll) and swap if it moved."""
        self.watcher.check()
        return self._model_info()


FraudScoringService.add_asgi_middleware(
    RequestGuard, api_key=_settings.serving_api_key, max_body_bytes=MAX_BODY_BYTES
)
