"""What the training steps hand each other: one JSON file per step in the run's work folder.

Each step's file has a type here (the keys a later step, the DAG or a test reads), so no step
reads another's output by an untyped string key. ``write`` replaces a file atomically (a
retried step leaves no half-written file); ``read`` says which step to run first when the
file is missing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NotRequired, TypedDict, TypeVar, cast

from pipelines.lake import write_text_atomic


class RunFolder(TypedDict):
    """``build_dataset``'s answer: the MLflow run and its work folder (what XCom carries)."""

    run_id: str
    workdir: str


class TunedMember(TypedDict):
    trial: int
    value: float  # validation average precision
    params: dict[str, Any]
    epochs: int  # the epoch count it needed on validation
    threshold: float  # its validation max-F1 threshold


class Tuning(TypedDict):
    study_name: str
    finished_trials: int
    trials_this_call: int
    best_value: float
    seconds: float
    workers: int
    members: list[TunedMember]  # the configurations the ensemble is built from


class FinalModel(TypedDict):
    model_uri: str
    model_id: str | None
    members: int
    threshold: float
    signature_inputs: list[str]
    world_size: int
    seconds: float
    rows_per_rank: NotRequired[list[int]]  # only when trained under torchrun


class Evaluation(TypedDict):
    model_uri: str
    metrics: dict[str, float]  # test_* and in_sample_*


class Registration(TypedDict):
    version: str


class GateVerdict(TypedDict):
    """``registry.promotion.PromotionDecision.as_dict()``."""

    promote: bool
    reason: str
    metric: str
    candidate_value: float
    champion_value: float | None
    champion_version: str | None
    version: str | None
    rule: str | None
    interval_low: float | None
    interval_high: float | None
    confidence: float | None
    margin: float | None
    alias: str


FILES: dict[type, tuple[str, str]] = {
    Tuning: ("tuning.json", "tune_model"),
    FinalModel: ("final.json", "train_final"),
    Evaluation: ("evaluation.json", "evaluate"),
    Registration: ("registration.json", "register"),
    GateVerdict: ("gate.json", "gate"),
}

Step = TypeVar("Step")


def path(workdir: Path | str, step: type) -> Path:
    return Path(workdir) / FILES[step][0]


def write(workdir: Path | str, step: type[Step], payload: Step) -> Step:
    write_text_atomic(path(workdir, step), json.dumps(payload, indent=2, default=str))
    return payload


def read(workdir: Path | str, step: type[Step]) -> Step:
    found = path(workdir, step)
    if not found.exists():
        raise FileNotFoundError(f"{found} missing: run the step {FILES[step][1]} first")
    return cast(Step, json.loads(found.read_text()))
