"""Request and response models of the scoring API: the validation is the contract.

Every rule here answers a client mistake with a 4xx that names the field, never a 5xx.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

# A timestamp this far ahead of the server clock is a client bug, not a payment.
MAX_CLOCK_SKEW = dt.timedelta(days=1)
MAX_ID = 2**63 - 1  # ids are 64-bit integers in the lake


class Transaction(BaseModel):
    model_config = ConfigDict(extra="forbid")

    transaction_id: int = Field(..., ge=0, le=MAX_ID, description="Caller's id, echoed back.")
    customer_id: int = Field(..., ge=0, le=MAX_ID)
    terminal_id: int = Field(..., ge=0, le=MAX_ID)
    tx_amount: float = Field(..., ge=0, le=1_000_000, description="Amount, >= 0 and finite.")
    tx_datetime: dt.datetime = Field(..., description="ISO 8601; no offset means UTC.")

    @field_validator("tx_amount")
    @classmethod
    def _finite(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError("must be a finite number")
        return value

    @field_validator("tx_datetime")
    @classmethod
    def _not_in_the_future(cls, value: dt.datetime) -> dt.datetime:
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        if value > dt.datetime.now(dt.UTC) + MAX_CLOCK_SKEW:
            raise ValueError("is more than a day in the future")
        return value.astimezone(dt.UTC)


class Score(BaseModel):
    transaction_id: int
    fraud_probability: float
    decision: Literal["approve", "review", "block"]
    model_name: str
    model_version: str
    unknown_customer: bool = Field(description="No state for this customer: defaults used.")
    unknown_terminal: bool = Field(description="No state for this terminal: defaults used.")
    feature_age_seconds: float | None = Field(
        description="Age of the customer state the score used (None for an unknown customer)."
    )
    explanation: dict[str, float] | None = Field(
        None, description="Top contributing features (only when asked)."
    )
    variant: Literal["control", "treatment"] = Field(
        "control",
        description="Experiment arm: treatment = decided by the challenger (A/B mode only).",
    )


class ModelInfo(BaseModel):
    name: str
    version: str
    alias: str
    bento: str | None = Field(
        None, description="The deployed Bento serving it (None: served from the source tree)."
    )
    feature_service: str | None
    training_window: str | None
    metrics: dict[str, float]
    loaded_at: str
    registry_status: Literal["ok", "unreachable"]
    last_reload_error: str | None
    status: Literal["ok", "degraded"] = Field(
        "ok", description="degraded: serving, but the registry cannot be reached (no swaps)."
    )
    experiment_mode: Literal["off", "ab", "shadow"] = "off"
    treatment_share: float | None = Field(None, description="A/B: share of customers treated.")
    challenger_version: str | None = Field(
        None, description="The challenger loaded for the experiment (None: none loaded)."
    )
    challenger_last_error: str | None = None
    workers: dict[str, str | None] | None = Field(
        None,
        description="/reload only: the champion version each worker (by pid) serves after it.",
    )
