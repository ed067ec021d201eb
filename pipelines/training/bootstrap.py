"""The first model: trained as soon as the features allow it, so a fresh system serves by itself.

``build_features`` asks ``first_model_verdict`` after every run. It says *train* only when all
hold: bootstrap training is on (``FRAUD_BOOTSTRAP_TRAINING``), no champion exists, no
``train_model`` run is queued or running (whoever started it), and the mart holds enough fully
labelled days for the whole protocol (the test split and the model-selection split before it).
Until then each run says why not, and the next ``build_features`` run asks again.

The first model is a quick one (``bootstrap_trials`` trials of at most ``bootstrap_max_epochs``
epochs, ``bootstrap_timeout_seconds``):
it exists to make the endpoint answer; the retrains that follow search with the full budget,
and the gate promotes them only if they beat it.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipelines.config import Settings

# One first model per system: a second request for it is the same run (skipped by Airflow).
BOOTSTRAP_RUN_ID = "bootstrap__first_model"


@dataclass(frozen=True)
class BootstrapVerdict:
    train: bool
    reason: str
    conf: dict[str, Any] = field(default_factory=dict)


def first_labelled_day_needed(settings: Settings, test_end: dt.date) -> dt.date:
    """The earliest day the protocol ending at ``test_end`` reads (model selection included)."""
    from pipelines.training.train import split_for

    return split_for(settings, test_end).validation().train_start


def mart_first_day(settings: Settings) -> dt.date | None:
    from pipelines.transform.mart import mart_days

    days = mart_days(settings)
    return days[0] if days else None


def first_model_verdict(settings: Settings, active_training_runs: int) -> BootstrapVerdict:
    """Whether to start the first training now, and with which ``train_model`` conf."""
    from pipelines.registry.versions import champion
    from pipelines.training.train import latest_assessable_day

    if not settings.bootstrap_training:
        return BootstrapVerdict(False, "bootstrap training is off (FRAUD_BOOTSTRAP_TRAINING)")
    if active_training_runs:
        return BootstrapVerdict(False, f"{active_training_runs} train_model run(s) active")
    current = champion(settings)
    if current is not None:
        return BootstrapVerdict(False, f"a champion exists (version {current.version})")
    first = mart_first_day(settings)
    if first is None:
        return BootstrapVerdict(False, "the mart is empty")
    try:
        test_end = latest_assessable_day(settings)
    except ValueError as exc:
        return BootstrapVerdict(False, str(exc))
    needed = first_labelled_day_needed(settings, test_end)
    if first > needed:
        return BootstrapVerdict(
            False,
            f"not enough labelled history: the protocol ending {test_end} reads from {needed}, "
            f"the mart starts {first}",
        )
    return BootstrapVerdict(
        True,
        f"no champion yet: training the first model (test period ending {test_end})",
        {
            "reason": "bootstrap: first model",
            "test_end": test_end.isoformat(),
            "trials": settings.bootstrap_trials,
            "max_epochs": settings.bootstrap_max_epochs,
            "timeout_seconds": settings.bootstrap_timeout_seconds,
        },
    )
