"""The framework's floor: a BentoML service with the scoring API's payload and no work.

    bentoml serve bench.echo_service:EchoService

Same request schema (``serving.schemas.Transaction``, validated by pydantic the same way),
same response schema (``Score``), same endpoint style (``async``: BentoML runs it on the
worker's event loop, as it runs the scoring API), and the scoring service's own
``@bentoml.service`` settings (workers, threads, logging, traffic) and output media type,
copied from it, so a settings change moves the floor too; it answers a constant score
instead of reading features and running a model. What the scoring service costs beyond this
is our work (Feast, model, prediction log, API-key/size guard).
"""

from __future__ import annotations

from typing import Annotated

import bentoml
from pydantic import Field

from serving.schemas import Score, Transaction
from serving.service import FraudScoringService  # no heavy import: Feast/MLflow load lazily

Batch = Annotated[list[Transaction], Field(min_length=1, max_length=1000)]


@bentoml.service(name="echo_scoring", **FraudScoringService.config)
class EchoService:
    @bentoml.api
    async def score(self, transactions: Batch, explain: bool = False) -> list[Score]:
        """Echo each transaction back as an 'approve' with probability 0."""
        return [
            Score(
                transaction_id=t.transaction_id,
                fraud_probability=0.0,
                decision="approve",
                model_name="echo",
                model_version="0",
                unknown_customer=False,
                unknown_terminal=False,
                feature_age_seconds=None,
            )
            for t in transactions
        ]


# Declared or not, as in the scoring service (undeclared, BentoML derives it per response).
EchoService.apis["score"].output_spec.media_type = FraudScoringService.apis[
    "score"
].output_spec.media_type
