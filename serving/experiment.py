"""Scoring a request under the configured experiment: which model decides, which shadows.

* ``off`` (or no challenger loaded): the champion scores and decides everything;
* ``ab``: customers in the treatment bucket (``pipelines.experiment.assignment``) are scored
  and decided by the challenger, the others by the champion;
* ``shadow``: the champion scores and decides everything; the challenger scores the same
  transactions too and its score is only logged.

A failing challenger never fails a request: in ``ab`` its customers fall back to the champion,
in ``shadow`` the shadow score is missing; both are flagged (``challenger_failed``, the error
rate guardrail of the analysis). A failing champion fails the request as before.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from pipelines.experiment.assignment import CONTROL, TREATMENT, Variant, assign

if TYPE_CHECKING:
    from serving.features import FeatureBatch
    from serving.model import LoadedModel
    from serving.schemas import Transaction

log = logging.getLogger(__name__)

# fetch(model, transactions) -> the model's inputs for them (Feast in the service).
Fetch = Callable[["LoadedModel", Sequence["Transaction"]], "FeatureBatch"]


@dataclass(frozen=True)
class GroupScore:
    """Some rows of the request scored by one model (the model that decides for them)."""

    model: LoadedModel
    rows: list[int]  # positions in the request
    batch: FeatureBatch
    probabilities: np.ndarray
    latency_ms: float  # features + prediction of this group
    fetch_ms: float  # the features alone


@dataclass
class ExperimentScores:
    variants: list[Variant]
    groups: list[GroupScore]
    shadow_probabilities: list[float | None]
    shadow_version: str | None = None
    shadow_latency_ms: float | None = None
    challenger_failed: list[bool] = field(default_factory=list)


def variants_for(
    transactions: Sequence[Transaction],
    mode: str,
    share: float,
    salt: str,
    challenger_loaded: bool,
) -> list[Variant]:
    """Treatment only in ``ab`` mode with a loaded challenger; everything else is control."""
    if mode != "ab" or not challenger_loaded:
        return [CONTROL] * len(transactions)
    return [assign(t.customer_id, salt, share) for t in transactions]


def _score(model: LoadedModel, rows: list[int], txs: Sequence[Transaction], fetch: Fetch):
    start = time.perf_counter()
    batch = fetch(model, [txs[i] for i in rows])
    fetched = time.perf_counter()
    probabilities = model.predict(batch.inputs)
    total_ms, fetch_ms = (time.perf_counter() - start) * 1e3, (fetched - start) * 1e3
    return GroupScore(model, rows, batch, probabilities, total_ms, fetch_ms)


def score_request(
    transactions: Sequence[Transaction],
    champion: LoadedModel,
    challenger: LoadedModel | None,
    *,
    mode: str,
    share: float,
    salt: str,
    fetch: Fetch,
) -> ExperimentScores:
    """Score ``transactions`` under the experiment ``mode`` (see the module docstring)."""
    n = len(transactions)
    variants = variants_for(transactions, mode, share, salt, challenger is not None)
    failed = [False] * n
    treated = [i for i, v in enumerate(variants) if v == TREATMENT]
    control = [i for i, v in enumerate(variants) if v == CONTROL]
    groups: list[GroupScore] = []
    if control:
        groups.append(_score(champion, control, transactions, fetch))
    if treated:
        try:
            groups.append(_score(challenger, treated, transactions, fetch))
        except Exception:
            log.exception("challenger v%s failed; its customers fall back", challenger.version)
            for i in treated:
                failed[i] = True
            groups.append(_score(champion, treated, transactions, fetch))
    result = ExperimentScores(variants, groups, [None] * n, challenger_failed=failed)
    if mode == "shadow" and challenger is not None:
        result.shadow_version = challenger.version
        main = groups[0]  # shadow mode: one group, every row, the champion's
        start = time.perf_counter()
        reused_fetch_ms = 0.0
        try:
            same_inputs = challenger.feature_service == champion.feature_service and set(
                challenger.inputs
            ) <= set(main.batch.inputs.columns)
            # Same feature service: the champion's features are the challenger's too.
            batch = main.batch if same_inputs else fetch(challenger, transactions)
            reused_fetch_ms = main.fetch_ms if same_inputs else 0.0
            shadow = challenger.predict(batch.inputs)
            result.shadow_probabilities = [round(float(p), 6) for p in shadow]
        except Exception:
            log.exception("shadow challenger v%s failed", challenger.version)
            result.challenger_failed = [True] * n
        # What the challenger would have cost on its own: features (even if shared) + model.
        result.shadow_latency_ms = (time.perf_counter() - start) * 1e3 + reused_fetch_ms
    return result
