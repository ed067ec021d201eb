"""The service's scoring path under each experiment mode, with stand-in features and models.

The scorer is the service's own (``serving.service.Scorer``: its batch path, decisions,
responses and log rows), built through its constructor; only the Feast lookup, the registry
watchers and the log writer passed to it are stand-ins.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from pipelines import contracts
from pipelines.experiment.assignment import TREATMENT, assign
from serving.features import FeatureBatch
from serving.model import LoadedModel, action_for
from serving.schemas import Transaction

INPUTS = ["tx_amount", "customer_risk"]


class Linear:
    """A stand-in pyfunc model: probability = a + b * amount / 1000 (clipped)."""

    def __init__(self, a: float, b: float, fail: bool = False) -> None:
        self.a, self.b, self.fail = a, b, fail

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        if self.fail:
            raise RuntimeError("challenger exploded")
        return np.clip(self.a + self.b * frame["tx_amount"].to_numpy() / 1000, 0, 1)


def _model(version: str, predictor: Linear, alias: str) -> LoadedModel:
    return LoadedModel(
        name="fraud-detector",
        version=version,
        alias=alias,
        inputs=INPUTS,
        feature_service="fraud_model_v1",
        predictor=predictor,
    )


CHAMPION = _model("1", Linear(0.0, 1.0), "champion")
# The opposite ranking: wherever it decided, most decisions would change.
CHALLENGER = _model("2", Linear(1.0, -1.0), "challenger")


def _fetch(store, service, inputs, transactions, with_states=False) -> FeatureBatch:
    frame = pd.DataFrame({"tx_amount": [t.tx_amount for t in transactions], "customer_risk": 0.0})[
        inputs
    ]
    n = len(transactions)
    return FeatureBatch(frame, np.zeros(n, bool), np.zeros(n, bool), [60.0] * n)


class ListLog:
    def __init__(self) -> None:
        self.rows: list[dict] = []

    def append(self, rows: list[dict]) -> None:
        self.rows.extend(rows)


def _transactions(n: int = 200) -> list[Transaction]:
    when = dt.datetime(2024, 5, 1, 12, tzinfo=dt.UTC)
    return [
        Transaction(
            transaction_id=i,
            customer_id=1000 + i,
            terminal_id=7,
            tx_amount=float(i * 997 % 1000),
            tx_datetime=when,
        )
        for i in range(n)
    ]


def _following(model: LoadedModel | None) -> SimpleNamespace:
    """A stand-in registry watcher holding ``model``, with the registry reachable."""
    return SimpleNamespace(current=model, registry_status="ok", last_error=None)


@pytest.fixture
def service(make_settings, monkeypatch):
    """Builds the service's scorer (what ``POST /score`` and ``/model_info`` run) through its
    constructor, from the stand-ins."""
    import serving.features
    from serving.service import Scorer
    from serving.stream import card_locks

    monkeypatch.setattr(serving.features, "fetch", _fetch)

    def build(
        mode: str,
        challenger: LoadedModel | None = CHALLENGER,
        share: float = 0.5,
        champion: LoadedModel | None = CHAMPION,
    ):
        # The write-through needs a real online store: tests/e2e/test_streaming.py covers it.
        settings = make_settings(
            experiment_mode=mode,
            experiment_treatment_share=share,
            serving_stream_features=False,
            serving_max_payment_age_days=36500,  # the payments are from 2024
        )
        return Scorer(
            settings,
            store=None,
            watcher=_following(champion),
            challenger=None if mode == "off" else _following(challenger),
            prediction_log=ListLog(),
            card_locks=card_locks(settings),
            bento=None,  # the source tree
            awaiting_deploy=False,
        )

    return build


def _score(svc, txs: list[Transaction]) -> list:
    """One request through the service's batch path (what ``POST /score`` awaits)."""
    from serving.service import ScoreJob

    (scores,) = svc.score_jobs([ScoreJob(txs, explain=False, arrived=time.monotonic())])
    return scores


def _responses(scores) -> list[tuple]:
    return [
        (s.transaction_id, s.fraud_probability, s.decision, s.model_version, s.variant)
        for s in scores
    ]


def test_shadow_never_changes_a_response_or_decision(service):
    txs = _transactions()
    off, shadow = service("off"), service("shadow")
    baseline = _score(off, txs)
    shadowed = _score(shadow, txs)
    assert _responses(shadowed) == _responses(baseline)
    assert {s.model_version for s in shadowed} == {"1"}
    # The challenger would have decided differently for most of them: the test can fail.
    logged = shadow.prediction_log.rows
    settings = shadow.settings
    challenger_decisions = [
        action_for(r["shadow_probability"], settings.review_threshold, settings.block_threshold)
        for r in logged
    ]
    differing = sum(a != b.decision for a, b in zip(challenger_decisions, baseline, strict=True))
    assert differing >= len(txs) / 3
    # ...and its scores are logged beside the champion's, per transaction.
    for row, tx in zip(logged, txs, strict=True):
        assert row["shadow_model_version"] == "2" and row["variant"] == "control"
        assert row["shadow_probability"] == pytest.approx(1 - tx.tx_amount / 1000, abs=1e-6)
        assert row["fraud_probability"] == pytest.approx(tx.tx_amount / 1000, abs=1e-6)
        assert row["challenger_failed"] is False
        assert row["latency_ms"] >= row["model_latency_ms"] > 0
        assert row["shadow_latency_ms"] > 0
    off_rows = off.prediction_log.rows
    assert all(r["shadow_probability"] is None and r["variant"] == "control" for r in off_rows)
    assert set(off_rows[0]) == set(logged[0])  # one log schema whatever the mode
    # The columns its readers know them by (pipelines/contracts.py).
    columns = set(logged[0])
    assert columns >= {*contracts.PREDICTION_LOG_IDENTIFIERS}
    assert columns >= {*contracts.PREDICTION_LOG_EXPERIMENT_COLUMNS}
    assert any(c.startswith(contracts.PREDICTION_LOG_FEATURE_PREFIX) for c in columns)


def test_a_failing_shadow_challenger_changes_nothing_but_is_flagged(service):
    txs = _transactions(20)
    broken = _model("3", Linear(0, 0, fail=True), "challenger")
    svc = service("shadow", broken)
    shadowed = _score(svc, txs)
    assert _responses(shadowed) == _responses(_score(service("off"), txs))
    rows = svc.prediction_log.rows
    assert all(r["challenger_failed"] and r["shadow_probability"] is None for r in rows)
    assert {r["shadow_model_version"] for r in rows} == {"3"}


def test_ab_routes_treatment_customers_to_the_challenger(service):
    txs = _transactions()
    svc = service("ab", share=0.5)
    scores = _score(svc, txs)
    expected = [assign(t.customer_id, svc.settings.experiment_salt, 0.5) for t in txs]
    assert [s.variant for s in scores] == expected
    assert 40 < expected.count(TREATMENT) < 160
    for s, t in zip(scores, txs, strict=True):
        treated = s.variant == TREATMENT
        assert s.model_version == ("2" if treated else "1")
        p = 1 - t.tx_amount / 1000 if treated else t.tx_amount / 1000
        assert s.fraud_probability == pytest.approx(p, abs=1e-6)
    logged = {r["transaction_id"]: r for r in svc.prediction_log.rows}
    assert all(logged[s.transaction_id]["variant"] == s.variant for s in scores)
    assert all(logged[s.transaction_id]["model_version"] == s.model_version for s in scores)


def test_ab_without_a_loaded_challenger_is_all_champion(service):
    scores = _score(service("ab", challenger=None), _transactions(50))
    assert {(s.model_version, s.variant) for s in scores} == {("1", "control")}


def test_ab_challenger_failure_falls_back_to_the_champion_and_is_logged(service):
    txs = _transactions(100)
    svc = service("ab", _model("3", Linear(0, 0, fail=True), "challenger"))
    scores = _score(svc, txs)
    assert {s.model_version for s in scores} == {"1"}
    treated = [r for r in svc.prediction_log.rows if r["variant"] == TREATMENT]
    assert treated and all(r["challenger_failed"] for r in treated)
    assert not any(r["challenger_failed"] for r in svc.prediction_log.rows if r not in treated)


def test_model_info_shows_the_experiment_and_degraded_registry(service):
    svc = service("shadow")
    info = svc.model_info()
    assert (info.experiment_mode, info.challenger_version, info.status) == ("shadow", "2", "ok")
    svc.challenger.registry_status = "unreachable"  # what the watcher's poll does on an outage
    info = svc.model_info()
    assert (info.status, info.registry_status) == ("degraded", "unreachable")


def test_requests_batched_together_get_their_own_scores_and_explanations(service):
    from serving.service import ScoreJob

    # Explanations occlude inputs with their training baseline.
    svc = service("off", champion=dataclasses.replace(CHAMPION, baseline={"tx_amount": 500.0}))
    txs = _transactions(6)
    now = time.monotonic()
    jobs = [
        ScoreJob(txs[:2], True, now),
        ScoreJob(txs[2:3], False, now),
        ScoreJob(txs[3:], True, now),
    ]
    results = svc.score_jobs(jobs)
    assert [[s.transaction_id for s in r] for r in results] == [[0, 1], [2], [3, 4, 5]]
    assert [s.explanation is not None for r in results for s in r] == [
        True,
        True,
        False,
        True,
        True,
        True,
    ]
    assert _responses([s for r in results for s in r]) == _responses(_score(service("off"), txs))
    assert [r["transaction_id"] for r in svc.prediction_log.rows] == list(range(6))


def test_a_batch_refuses_what_waited_too_long_and_scores_the_rest(service):
    from serving.service import Refused, ScoreJob

    svc = service("off")
    txs = _transactions(2)
    late = time.monotonic() - 10 * svc.settings.serving_max_queue_ms / 1e3
    stale, fresh = svc.score_jobs(
        [ScoreJob(txs[:1], False, late), ScoreJob(txs[1:], False, time.monotonic())]
    )
    assert isinstance(stale, Refused) and "waited" in stale.message
    assert [s.transaction_id for s in fresh] == [1]
    assert [r["transaction_id"] for r in svc.prediction_log.rows] == [1]


def test_without_a_champion_every_request_of_the_batch_is_refused(service):
    from serving.service import Refused, ScoreJob

    svc = service("off", champion=None)
    results = svc.score_jobs([ScoreJob(_transactions(1), False, time.monotonic())])
    assert [type(r) for r in results] == [Refused] and svc.prediction_log.rows == []
