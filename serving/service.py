"""The fraud-scoring API: ``bentoml serve serving.service:FraudScoringService``.

Endpoints: ``POST /score`` (one or many transactions, optional explanation), ``POST
/model_info``, ``POST /reload`` (check the aliases now, in every worker), and BentoML's own
``/livez``, ``/readyz``, ``/metrics``.

What serves in production is a Bento (``serving/bento.py``): it pins the model version it was
built for, and a deploy rolls the workers onto the next Bento (``serving/deploy.py``). From
the source tree the service follows the ``champion`` alias instead.

With ``FRAUD_EXPERIMENT_MODE=ab|shadow`` the service also follows the ``challenger`` alias and
routes (A/B) or shadow-scores with it (``serving/experiment.py``); every logged prediction
carries its variant, the serving version, the shadow score and the request latency.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import time
from dataclasses import dataclass
from http import HTTPStatus
from typing import TYPE_CHECKING, Annotated

import bentoml
from pydantic import Field

from pipelines.config import get_settings
from pipelines.contracts import CHALLENGER_ALIAS, PREDICTION_LOG_FEATURE_PREFIX
from serving.batching import NaturalBatcher
from serving.bento import BENTO_NAME, model_version_of, running_bento
from serving.drain import ConnectionDrain, drain_on_signal
from serving.guard import REQUEST, RequestGuard, refusal
from serving.openapi import published_spec
from serving.schemas import ModelInfo, Score, Transaction
from serving.workers import ReloadBroadcast

if TYPE_CHECKING:
    from feast import FeatureStore

    from pipelines.config import Settings
    from serving.model import AliasWatcher, LoadedModel
    from serving.prediction_log import PredictionLog
    from serving.stream import CardLocks, CustomerState

log = logging.getLogger(__name__)
_settings = get_settings()
# ~300 bytes per transaction in JSON: room for a full batch, not for abuse.
MAX_BODY_BYTES = 512 * _settings.max_batch_size + 4096
RELOAD_WAIT_SECONDS = 20.0  # within BentoML's 30 s request timeout

Batch = Annotated[list[Transaction], Field(min_length=1, max_length=_settings.max_batch_size)]


class ServiceUnavailable(bentoml.exceptions.BentoMLException):
    error_code = HTTPStatus.SERVICE_UNAVAILABLE


class InvalidPayment(bentoml.exceptions.BentoMLException):
    error_code = HTTPStatus.BAD_REQUEST


def refuse_old_payments(transactions: list[Transaction], max_age: dt.timedelta) -> None:
    """400 naming the first payment dated before ``max_age`` ago (server clock)."""
    oldest = dt.datetime.now(dt.UTC) - max_age
    for i, t in enumerate(transactions):
        if t.tx_datetime < oldest:
            raise InvalidPayment(
                refusal(
                    f"transactions[{i}].tx_datetime: {t.tx_datetime.isoformat()} is older than "
                    f"{max_age.days} days (FRAUD_SERVING_MAX_PAYMENT_AGE_DAYS): the online "
                    "state no longer describes the card as it was then"
                )
            )


@dataclass(frozen=True)
class ScoreJob:
    """One /score request as the batcher sees it."""

    transactions: list[Transaction]
    explain: bool
    arrived: float  # time.monotonic() when its body was complete


@dataclass(frozen=True)
class Refused:
    """A job the batch did not score: the request is answered 503 with ``message``."""

    message: str


def waited_too_long(job: ScoreJob, now: float, max_wait_ms: float) -> str | None:
    """Why ``job`` is refused if it waited longer than ``max_wait_ms`` for its batch (its
    client has likely given up, and working on it would only delay the requests behind it)."""
    waited = (now - job.arrived) * 1e3
    if waited <= max_wait_ms:
        return None
    return f"overloaded: waited {waited:.0f} ms for a batch (over {max_wait_ms:.0f})"


class Scorer:
    """What the service scores and answers with: ``score_jobs`` (one batch of ``/score``
    requests: decisions, responses, prediction-log rows) and ``model_info``, from the models
    the watchers hold right now.

    The service builds it from the real collaborators and owns their lifecycle (it starts,
    checks and stops the watchers, closes the log); a test passes stand-ins to the same
    constructor. ``watcher`` and ``challenger`` are read for ``current``, ``registry_status``
    and ``last_error``; ``prediction_log`` for ``append``; ``challenger`` is None when no
    experiment runs."""

    def __init__(
        self,
        settings: Settings,
        *,
        store: FeatureStore,
        watcher: AliasWatcher,
        challenger: AliasWatcher | None,
        prediction_log: PredictionLog,
        card_locks: CardLocks,
        bento: str | None,
        awaiting_deploy: bool,
    ) -> None:
        self.settings = settings
        self.store = store
        self.watcher = watcher
        self.challenger = challenger
        self.prediction_log = prediction_log
        self.card_locks = card_locks
        self.bento = bento  # the Bento this worker runs; None from the source tree
        self.awaiting_deploy = awaiting_deploy

    def _not_ready(self) -> str:
        if self.awaiting_deploy:
            return "no Bento is deployed yet: the deploy_model DAG rolls the first one in"
        return "no champion model is loaded yet"

    def score_jobs(self, jobs: list[ScoreJob]) -> list[list[Score] | Refused]:
        """Score the payments of ``jobs`` as one batch; log them; one result per job."""
        from serving.stream import push_payments, rounds

        s = self.settings
        now = time.monotonic()
        results: list[list[Score] | Refused | None] = [
            None
            if (why := waited_too_long(job, now, s.serving_max_queue_ms)) is None
            else Refused(why)
            for job in jobs
        ]
        live = [k for k, result in enumerate(results) if result is None]
        model = self.watcher.current
        if model is None:
            return [Refused(self._not_ready())] * len(jobs)
        if not live:
            return results  # type: ignore[return-value]
        challenger = self.challenger.current if self.challenger is not None else None
        transactions = [t for k in live for t in jobs[k].transactions]
        explain = [jobs[k].explain for k in live for _ in jobs[k].transactions]
        scores: list[Score | None] = [None] * len(transactions)
        logged: list[dict | None] = [None] * len(transactions)
        stream = s.serving_stream_features
        cards = [t.customer_id for t in transactions]
        with self.card_locks.holding(cards) if stream else contextlib.nullcontext():
            for indexes in rounds(transactions):
                batch = [transactions[i] for i in indexes]
                wanted = [explain[i] for i in indexes]
                scored, states = self._score_round(batch, model, challenger, wanted)
                for i, (score, row) in zip(indexes, scored, strict=True):
                    scores[i], logged[i] = score, row
                if stream:
                    push_payments(self.store, batch, states)
        done, request_time = time.monotonic(), dt.datetime.now(dt.UTC)
        rows, start = [], 0
        for k in live:
            n = len(jobs[k].transactions)
            results[k] = scores[start : start + n]  # type: ignore[assignment]
            # From the moment its body was complete: the batch it waited for included.
            latency_ms = round((done - jobs[k].arrived) * 1e3, 3)
            rows += [
                {**row, "request_time": request_time, "latency_ms": latency_ms}
                for row in logged[start : start + n]
            ]
            start += n
        self.prediction_log.append(rows)
        return results  # type: ignore[return-value]

    def _score_round(
        self,
        transactions: list[Transaction],
        model: LoadedModel,
        challenger: LoadedModel | None,
        explain: list[bool],
    ) -> tuple[list[tuple[Score, dict]], dict[int, CustomerState]]:
        """Scores and prediction-log rows of payments of distinct cards (with an explanation
        where ``explain`` asks for one), and the cards' streamed states read with their
        features (when the write-through is on)."""
        from serving.experiment import score_request
        from serving.features import fetch
        from serving.model import action_for

        s = self.settings
        scored = score_request(
            transactions,
            model,
            challenger,
            mode=s.experiment_mode,
            share=s.experiment_treatment_share,
            salt=s.experiment_salt,
            fetch=lambda m, txs: fetch(
                self.store, m.feature_service, m.inputs, txs, with_states=s.serving_stream_features
            ),
        )
        states: dict[int, CustomerState] = {}
        shadow_latency = (
            None if scored.shadow_latency_ms is None else round(scored.shadow_latency_ms, 3)
        )
        results: list[tuple[Score, dict] | None] = [None] * len(transactions)
        for group in scored.groups:
            served = group.model
            b = group.batch
            wanted = [explain[i] for i in group.rows]
            # Only the rows whose request asked: an explanation costs a forward per input.
            asked = [j for j, w in enumerate(wanted) if w]
            explanations: list[dict | None] = [None] * len(wanted)
            if asked:
                for j, e in zip(asked, served.explain(b.inputs.iloc[asked]), strict=True):
                    explanations[j] = e
            features = b.records()
            states |= b.states or {}
            for j, i in enumerate(group.rows):
                t = transactions[i]
                p = float(group.probabilities[j])
                score = Score(
                    transaction_id=t.transaction_id,
                    fraud_probability=round(p, 6),
                    decision=action_for(p, s.review_threshold, s.block_threshold),
                    model_name=served.name,
                    model_version=served.version,
                    unknown_customer=bool(b.unknown_customer[j]),
                    unknown_terminal=bool(b.unknown_terminal[j]),
                    feature_age_seconds=b.feature_age_seconds[j],
                    explanation=explanations[j],
                    variant=scored.variants[i],
                )
                row = {
                    "transaction_id": t.transaction_id,
                    "tx_datetime": t.tx_datetime,
                    "customer_id": t.customer_id,
                    "terminal_id": t.terminal_id,
                    "tx_amount": t.tx_amount,
                    **{
                        f"{PREDICTION_LOG_FEATURE_PREFIX}{k}": v
                        for k, v in features[j].items()
                        if k != "tx_amount"
                    },
                    "fraud_probability": score.fraud_probability,
                    "decision": score.decision,
                    "model_version": score.model_version,
                    "unknown_customer": score.unknown_customer,
                    "unknown_terminal": score.unknown_terminal,
                    "request_time": None,  # set per request, with the request's latency
                    # Experiment columns (added after the ones monitoring reads).
                    "variant": score.variant,
                    "shadow_probability": scored.shadow_probabilities[i],
                    "shadow_model_version": scored.shadow_version,
                    "challenger_failed": scored.challenger_failed[i],
                    "latency_ms": None,
                    "model_latency_ms": round(group.latency_ms, 3),
                    "shadow_latency_ms": shadow_latency,
                }
                results[i] = (score, row)
        return results, states  # type: ignore[return-value]

    def model_info(self) -> ModelInfo:
        """What ``POST /model_info`` answers: the models serving right now, the registry's
        state, the experiment."""
        model = self.watcher.current
        if model is None:
            raise ServiceUnavailable(refusal(self._not_ready()))
        watchers = [w for w in (self.watcher, self.challenger) if w is not None]
        registry = "unreachable" if any(w.registry_status != "ok" for w in watchers) else "ok"
        challenger = self.challenger.current if self.challenger is not None else None
        s = self.settings
        return ModelInfo(
            name=model.name,
            version=model.version,
            alias=model.alias,
            bento=self.bento,
            feature_service=model.feature_service,
            training_window=model.training_window,
            metrics=model.metrics,
            loaded_at=model.loaded_at,
            registry_status=registry,
            last_reload_error=self.watcher.last_error,
            # Still serving the last good models, but no swap can happen until it is back.
            status="degraded" if registry != "ok" else "ok",
            experiment_mode=s.experiment_mode,
            treatment_share=s.experiment_treatment_share if s.experiment_mode == "ab" else None,
            challenger_version=None if challenger is None else challenger.version,
            challenger_last_error=None if self.challenger is None else self.challenger.last_error,
        )


@bentoml.service(name=BENTO_NAME, traffic={"timeout": 30}, workers=_settings.serving_workers)
class FraudScoringService:
    def __init__(self) -> None:
        from pipelines.featurestore.online import checkpoint_in_background
        from pipelines.featurestore.store import get_store
        from serving.model import AliasWatcher, ChampionWatcher
        from serving.prediction_log import PredictionLog
        from serving.stream import card_locks

        # MLflow retries an unreachable server for minutes by default (7 retries, 120 s
        # timeout): the watcher would hold its lock and /reload would time out. Fail fast and
        # let the next poll try again (an explicit environment setting still wins).
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
        self.settings = s = get_settings()
        store = get_store(s)
        self.checkpointer = checkpoint_in_background(store)
        bento = running_bento()
        pinned = None if bento is None else model_version_of(bento)
        self.watcher = ChampionWatcher(s.tracking_uri, s.model_name, s.model_poll_seconds, pinned)
        # `make up` before the first deploy: the source tree holds the port, serving nothing,
        # until the deploy rolls the first Bento in.
        self.awaiting_deploy = bento is None and s.serving_await_deploy
        if not self.awaiting_deploy:
            self.watcher.start()
        # The challenger is loaded (and smoke-tested) off the request path exactly like the
        # champion; it is dropped when its alias goes away (shipped or killed).
        self.challenger: AliasWatcher | None = None
        if s.experiment_mode != "off":
            self.challenger = AliasWatcher(
                s.tracking_uri,
                s.model_name,
                s.model_poll_seconds,
                CHALLENGER_ALIAS,
                keep_when_missing=False,
            )
            self.challenger.start()
        self.reloads = ReloadBroadcast(
            s.home / "serving" / "workers", self._check_aliases, bento=bento
        )
        self.reloads.start(self._serving_version())
        locks = card_locks(s)
        self.prediction_log = PredictionLog(s.predictions_dir, s.prediction_log_flush_seconds)
        self.scorer = Scorer(
            s,
            store=store,
            watcher=self.watcher,
            challenger=self.challenger,
            prediction_log=self.prediction_log,
            card_locks=locks,
            bento=bento,
            awaiting_deploy=self.awaiting_deploy,
        )
        self.batcher: NaturalBatcher[ScoreJob, list[Score] | Refused] = NaturalBatcher(
            self.scorer.score_jobs
        )

    def __is_ready__(self) -> bool:
        # Ready as soon as a champion is loaded; a registry outage later keeps it serving
        # and ready (model_info then reports status "degraded", registry "unreachable").
        return self.watcher.current is not None

    def _check_aliases(self) -> str | None:
        if not self.awaiting_deploy:
            self.watcher.check()
        if self.challenger is not None:
            self.challenger.check()
        return self._serving_version()

    def _serving_version(self) -> str | None:
        model = self.watcher.current
        return None if model is None else model.version

    @bentoml.on_startup
    async def _drain_on_signal(self) -> None:
        drain_on_signal()  # a roll drains this worker before stopping it (serving/drain.py)

    @bentoml.on_shutdown
    def _flush_log(self) -> None:
        self.reloads.stop()
        self.prediction_log.close()
        if self.checkpointer is not None:
            self.checkpointer.stop()
        self.watcher.stop()
        if self.challenger is not None:
            self.challenger.stop()

    @bentoml.api
    async def score(self, transactions: Batch, explain: bool = False) -> list[Score]:
        """Score transactions: probability, decision, model version, feature freshness.

        Every scored payment updates its card's online state before the response returns
        (``serving/stream.py``): the card's next payment reads it. A payment older than
        ``FRAUD_SERVING_MAX_PAYMENT_AGE_DAYS`` is refused (400): the online state holds the
        card as it is now, not as it was then. Requests that arrive together are scored
        together (``serving/batching.py``).
        """
        refuse_old_payments(
            transactions, dt.timedelta(days=self.settings.serving_max_payment_age_days)
        )
        state = REQUEST.get()
        arrived = state.arrived if state is not None else time.monotonic()
        result = await self.batcher.submit(ScoreJob(transactions, explain, arrived))
        if isinstance(result, Refused):
            raise ServiceUnavailable(refusal(result.message))
        return result

    @bentoml.api
    def model_info(self) -> ModelInfo:
        """The model serving right now: version, alias, metrics, feature service, window."""
        return self.scorer.model_info()

    @bentoml.api
    def reload(self) -> ModelInfo:
        """Check the aliases now (instead of at the next poll) and swap what moved, in every
        worker of this server: answers once all have (``workers``: how many serve what). A
        Bento's champion is pinned: there only the challenger can move."""
        self._check_aliases()
        followed = self.reloads.request(timeout=RELOAD_WAIT_SECONDS)
        # Not the model_info API method: BentoML routes a call between API methods through its
        # own dispatch, which blocks a sync endpoint calling another one until it times out.
        info = self.scorer.model_info()
        info.workers = {str(pid): version for pid, version in sorted(followed.items())}
        return info


# BentoML otherwise rebuilds the JSON schema of list[Score] on every response (~0.8 ms CPU).
FraudScoringService.apis["score"].output_spec.media_type = "application/json"
FraudScoringService.add_asgi_middleware(ConnectionDrain)
FraudScoringService.add_asgi_middleware(
    RequestGuard,
    api_key=_settings.serving_api_key,
    max_body_bytes=MAX_BODY_BYTES,
    max_inflight=_settings.serving_max_inflight,
    spec=lambda: published_spec(FraudScoringService.openapi_spec.asdict()),
)
