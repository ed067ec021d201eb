"""The experiment's actions: read its outcomes, decide (``statistics.py``), act, record.

Input: the prediction log (``serving/prediction_log.py``) of a window, joined with the labels
that have arrived (``pipelines.transform.mart.read_labels``, as monitoring reads them; the
mart is rebuilt after each ingest, before the daily analysis). Which rows count, the
per-arm metrics, the customer bootstrap and the ship / iterate / kill rules are
``pipelines.experiment.statistics`` (pure functions of that frame).

Actions (``apply=True``): ship moves the ``champion`` alias to the challenger through
``pipelines.registry.promotion.apply_decision`` (one alias move; the old champion becomes
``previous_champion``, so ``rollback`` undoes it); kill removes the ``challenger`` alias (the
service stops routing to it); iterate changes nothing. Every analysis is recorded as a JSON
file under ``<home>/experiments/decisions/`` and as ``experiment_*`` tags on the challenger
version.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pandas as pd

from pipelines import contracts
from pipelines.config import Settings
from pipelines.experiment.statistics import (
    CONTROL,
    TREATMENT,
    AnalysisConfig,
    ExperimentResult,
    Mode,
    compare,
)
from pipelines.lake import utc_today, write_text_atomic
from pipelines.monitoring.data import read_prediction_log
from pipelines.registry import promotion, tracking, versions
from pipelines.transform.mart import read_labels

log = logging.getLogger(__name__)


def config_from_settings(settings: Settings, **overrides: Any) -> AnalysisConfig:
    """The analysis thresholds the settings choose (the rest: ``AnalysisConfig``'s defaults)."""
    return AnalysisConfig(
        alpha=settings.experiment_alpha,
        min_labelled=settings.experiment_min_labelled,
        seed=settings.seed,
        **overrides,
    )


# --- reading ---------------------------------------------------------------------------------


def experiments_dir(settings: Settings) -> Path:
    return settings.home / "experiments"


def labelled_log(settings: Settings, first: dt.date, last: dt.date) -> pd.DataFrame | None:
    """Prediction-log rows of ``first`` .. ``last`` with ``tx_fraud`` (NaN: not arrived)."""

    log_rows = read_prediction_log(settings, first, last)
    if log_rows is None:
        return None
    for column, (_, default) in contracts.PREDICTION_LOG_EXPERIMENT_COLUMNS.items():
        if column not in log_rows:  # a part written before the experiment columns existed
            log_rows[column] = default
    labels = read_labels(settings, first, last)[["transaction_id", "tx_fraud"]]
    frame = log_rows.merge(labels, on="transaction_id", how="left")
    frame["tx_day"] = frame["tx_datetime"].dt.date
    return frame


# --- the registry side -----------------------------------------------------------------------


def _aliased(settings: Settings, alias: str) -> str | None:

    found = versions.version_by_alias(settings, alias)
    return None if found is None else str(found.version)


def apply_result(settings: Settings, result: ExperimentResult) -> str:
    """Carry out the decision in the registry (see the module docstring); returns what it did."""

    # Act only on the versions analysed: an alias that moved meanwhile belongs to someone else.
    if (
        _aliased(settings, contracts.CHAMPION_ALIAS),
        _aliased(settings, contracts.CHALLENGER_ALIAS),
    ) != (
        result.champion_version,
        result.challenger_version,
    ):
        return "none: the aliases moved since the analysis"
    if result.decision == "ship":
        decision = promotion.PromotionDecision(
            promote=True,
            reason="experiment: " + result.reasons[0],
            metric="experiment_average_precision",
            candidate_value=result.arms[TREATMENT].average_precision,
            champion_value=result.arms[CONTROL].average_precision,
            champion_version=result.champion_version,
            version=result.challenger_version,
        )
        promotion.apply_decision(settings, result.challenger_version, decision)
        return f"promoted v{result.challenger_version} to champion"
    if result.decision == "kill":
        tracking.client(settings).delete_registered_model_alias(
            settings.model_name, contracts.CHALLENGER_ALIAS
        )
        return f"removed the challenger alias from v{result.challenger_version}"
    return "none"


def _tags(result: ExperimentResult) -> dict[str, str]:
    tags = {
        "experiment_decision": result.decision,
        "experiment_reason": " | ".join(result.reasons)[:4000],
        "experiment_mode": result.mode or "",
        "experiment_window": f"{result.first_day}..{result.last_day}",
        "experiment_champion_version": result.champion_version,
        "experiment_action": result.action or "",
        "experiment_record": result.record or "",
        "experiment_at": result.analysed_at,
    }
    for variant, arm in result.arms.items():
        if arm.average_precision is not None:
            tags[f"experiment_{variant}_average_precision"] = f"{arm.average_precision:.6f}"
        tags[f"experiment_{variant}_labelled"] = str(arm.labelled)
    if result.difference is not None:
        d = result.difference
        tags["experiment_ap_difference"] = f"{d.observed:.6f}"
        tags["experiment_ap_interval"] = f"[{d.ci_low:.6f}, {d.ci_high:.6f}]"
        tags["experiment_p_value"] = f"{d.p_value:.4f}"
    return tags


def record(settings: Settings, result: ExperimentResult) -> Path:
    """The decision as JSON under ``<home>/experiments/decisions/`` and as version tags."""

    folder = experiments_dir(settings) / "decisions"
    folder.mkdir(parents=True, exist_ok=True)
    stamp = result.analysed_at.replace(":", "").replace("+0000", "Z")
    path = folder / f"{stamp}-v{result.challenger_version}.json"
    result.record = str(path)
    write_text_atomic(path, json.dumps(result.to_dict(), indent=2, default=str))
    client = tracking.client(settings)
    for key, value in _tags(result).items():
        client.set_model_version_tag(settings.model_name, result.challenger_version, key, value)
    return path


def analyze(
    settings: Settings,
    day: dt.date | None = None,
    window_days: int | None = None,
    *,
    apply: bool = True,
    mode: Mode | None = None,
    config: AnalysisConfig | None = None,
) -> ExperimentResult | None:
    """Analyse the running experiment over the ``window_days`` days ending ``day`` (defaults:
    ``settings.experiment_window_days``, today in UTC), record it and (``apply``) act on it.
    None when there is no challenger."""
    window_days = window_days or settings.experiment_window_days
    champion = _aliased(settings, contracts.CHAMPION_ALIAS)
    challenger = _aliased(settings, contracts.CHALLENGER_ALIAS)
    if champion is None or challenger is None:
        log.info("no experiment: champion v%s, challenger v%s", champion, challenger)
        return None
    day = day or utc_today()
    first = day - dt.timedelta(days=window_days - 1)
    config = config or config_from_settings(settings)
    frame = labelled_log(settings, first, day)
    if frame is None:
        result = ExperimentResult(
            "iterate",
            [f"the prediction log has nothing in {first}..{day}"],
            mode,
            champion,
            challenger,
            config=asdict(config),
        )
    else:
        result = compare(frame, champion, challenger, config, mode)
    result.first_day, result.last_day = first.isoformat(), day.isoformat()
    result.action = apply_result(settings, result) if apply else "none (dry run)"
    record(settings, result)
    log.info("experiment v%s vs v%s: %s (%s)", challenger, champion, result.decision, result.action)
    return result
