"""What today is compared with: the champion's training-time data.

* transactions: the merge of the daily transaction profiles over the champion's training
  period (its run's ``train_start``/``train_end`` tags); without a champion, the
  ``Settings.train_days`` days ending ``FALLBACK_REFERENCE_LAG_DAYS`` before the monitored day.
* predictions (model inputs as served): the profile training logged with the champion,
  MLflow artifact ``monitoring/reference_profile.bin`` of its run (cached on disk); without it,
  the merged prediction profiles of the same window as the transactions.
* the score: the champion's own first ``SCORE_BASELINE_DAYS`` days in service. Training data
  has no scores to compare with, and a score distribution is specific to one model version, so
  the baseline is taken from the prediction log of that version, never from another model's.

When the champion moves, every reference moves with it: monitoring follows the new model.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlflow import MlflowClient

from pipelines.config import Settings
from pipelines.contracts import CHAMPION_ALIAS
from pipelines.lake import days_between
from pipelines.monitoring.profiles import (
    ensure_day,
    monitoring_dir,
    read_view,
    window_view,
    write_view,
)
from pipelines.monitoring.scores import Reference

log = logging.getLogger(__name__)

# Where training logs the reference profile (pipelines/training/train.py).
REFERENCE_ARTIFACT = "monitoring/reference_profile.bin"
FALLBACK_REFERENCE_LAG_DAYS = 14
SCORE_BASELINE_DAYS = 7
SCORE_BASELINE_MIN_DAYS = 3
# How far back to look for the start of the champion's service.
SCORE_BASELINE_LOOKBACK_DAYS = 120


@dataclass(frozen=True)
class Champion:
    name: str
    version: str
    run_id: str | None
    metrics: dict[str, float] = field(default_factory=dict)
    train_start: dt.date | None = None
    train_end: dt.date | None = None


def _sqlite_file(uri: str) -> Path | None:
    return Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None


def load_champion(settings: Settings) -> Champion | None:
    """The version behind the ``champion`` alias, or None (no registry, no alias, unreachable)."""
    uri = settings.tracking_uri
    db = _sqlite_file(uri)
    if db is not None and not db.exists():
        return None  # nothing trained yet; opening it would create an empty store
    try:
        client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        mv = client.get_model_version_by_alias(settings.model_name, CHAMPION_ALIAS)
    except Exception as exc:  # no such model/alias, or the server is down: monitor without it
        log.info("no champion (%s): monitoring against the fallback window", exc)
        return None
    tags = dict(mv.tags or {})
    metrics = {
        k.removeprefix("metric."): float(v) for k, v in tags.items() if k.startswith("metric.")
    }
    run_tags: dict[str, str] = {}
    if mv.run_id:
        try:
            run = client.get_run(mv.run_id)
            run_tags = dict(run.data.tags)
            for name, value in run.data.metrics.items():
                metrics.setdefault(name, float(value))
        except Exception:  # a version without its run still has its tags
            log.warning("run %s of the champion is unreadable", mv.run_id, exc_info=True)

    def day(key: str) -> dt.date | None:
        value = run_tags.get(key) or tags.get(key)
        try:
            return dt.date.fromisoformat(value) if value else None
        except ValueError:
            return None

    return Champion(
        name=settings.model_name,
        version=str(mv.version),
        run_id=mv.run_id,
        metrics=metrics,
        train_start=day("train_start"),
        train_end=day("train_end"),
    )


def reference_window(
    settings: Settings,
    day: dt.date,
    champion: Champion | None,
    lag_days: int = FALLBACK_REFERENCE_LAG_DAYS,
) -> tuple[dt.date, dt.date, str]:
    """(first, last, source) of the transactions reference of ``day``."""
    if champion is not None and champion.train_start and champion.train_end:
        return champion.train_start, champion.train_end, "training-window"
    last = day - dt.timedelta(days=lag_days)
    return last - dt.timedelta(days=settings.train_days - 1), last, "fallback-window"


def transactions_reference(
    settings: Settings, first: dt.date, last: dt.date, source: str, version: str | None = None
) -> tuple[Any | None, Reference]:
    view, present = window_view(settings, "transactions", first, last)
    if present < len(days_between(first, last)):
        log.warning("reference %s..%s: %d days have transactions", first, last, present)
    return view, Reference("transactions", source, first, last, version)


def champion_reference_view(settings: Settings, champion: Champion) -> Any | None:
    """The reference profile training logged with the champion (downloaded once, cached)."""
    if champion.run_id is None:
        return None
    cache = monitoring_dir(settings) / "references" / f"model_version={champion.version}"
    target = cache / Path(REFERENCE_ARTIFACT).name
    if not target.exists():
        try:
            uri = settings.tracking_uri
            client = MlflowClient(tracking_uri=uri, registry_uri=uri)
            cache.mkdir(parents=True, exist_ok=True)
            downloaded = client.download_artifacts(champion.run_id, REFERENCE_ARTIFACT, str(cache))
            if Path(downloaded) != target:
                shutil.move(downloaded, target)
        except Exception as exc:  # logged before training wrote it, or store unreachable
            log.info("champion v%s has no reference profile: %s", champion.version, exc)
            return None
    return read_view(target)


def predictions_reference(
    settings: Settings, champion: Champion | None, first: dt.date, last: dt.date
) -> tuple[Any | None, Reference | None]:
    if champion is not None:
        view = champion_reference_view(settings, champion)
        if view is not None:
            return view, Reference(
                "predictions",
                "champion-artifact",
                champion.train_start,
                champion.train_end,
                champion.version,
            )
    view, _ = window_view(settings, "predictions", first, last)
    if view is None:
        return None, None
    return view, Reference("predictions", "prediction-log-window", first, last, None)


def model_versions(view: Any) -> set[str]:
    """The model versions a predictions profile contains (from its frequent items)."""
    column = view.get_column("model_version")
    if column is None:
        return set()
    metric = column.get_metric("frequent_items")
    if metric is None:
        return set()
    return {str(item.value) for item in metric.to_summary_dict()["frequent_strings"]}


def _baseline_cache(settings: Settings, version: str) -> tuple[Path, Path]:
    folder = monitoring_dir(settings) / "references" / f"model_version={version}"
    return folder / "score_baseline.bin", folder / "score_baseline.json"


def score_baseline(
    settings: Settings,
    day: dt.date,
    version: str,
    *,
    baseline_days: int = SCORE_BASELINE_DAYS,
    min_days: int = SCORE_BASELINE_MIN_DAYS,
) -> tuple[Any | None, Reference | None]:
    """The merged predictions profiles of ``version``'s first days in service before ``day``.

    Only days served by that version alone count (the day of a swap mixes two models); the
    service period is the contiguous run of such days that ends the day before ``day``. Once
    ``baseline_days`` days are in, the baseline is fixed for the version and cached.
    """
    view_file, meta_file = _baseline_cache(settings, version)
    if view_file.exists() and meta_file.exists():
        reference = Reference.from_dict(json.loads(meta_file.read_text()))
        if reference.last_day is not None and reference.last_day < day:
            return read_view(view_file), reference
    served: list[tuple[dt.date, Any]] = []
    for back in range(1, SCORE_BASELINE_LOOKBACK_DAYS + 1):
        d = day - dt.timedelta(days=back)
        view = ensure_day(settings, "predictions", d)
        if view is None or model_versions(view) != {version}:
            break
        served.append((d, view))
    served.reverse()  # oldest first: the first days in service
    baseline = served[:baseline_days]
    if len(baseline) < min_days:
        return None, None
    merged = baseline[0][1]
    for _, view in baseline[1:]:
        merged = merged.merge(view)
    reference = Reference("predictions", "score-baseline", baseline[0][0], baseline[-1][0], version)
    if len(baseline) == baseline_days:
        write_view(merged, view_file)
        meta_file.write_text(json.dumps(reference.to_dict()))
    return merged, reference
