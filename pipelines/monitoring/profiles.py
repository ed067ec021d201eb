"""whylogs profiles: one function that profiles a frame, and the per-day profile store.

Layout (under ``<data_dir>/monitoring/profiles/``)::

    transactions/date=YYYY-MM-DD.bin   the day's transactions and their context features
    predictions/date=YYYY-MM-DD.bin    the day's prediction log: model inputs as served + score

A profile is a mergeable sketch, so a window (a reference period, a week) is the merge of its
days: nothing but the daily binaries is ever stored. Files are written under a temporary name
and renamed into place, so a reader never sees half a profile and a rerun replaces the day.

``profile_frame`` is the only way frames become profiles here, and training logs its reference
with the same function: two profiles are comparable only if the same typing rules made them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pipelines.config import Settings
from pipelines.lake import atomic_path, days_between
from pipelines.monitoring.data import (
    TRANSACTION_COLUMNS,
    prediction_profile_frame,
    read_prediction_log,
    read_transactions_day,
)
from pipelines.monitoring.whylogs_compat import import_whylogs, read_profile

if TYPE_CHECKING:
    import pandas as pd

ProfileKind = Literal["transactions", "predictions"]
KINDS: tuple[ProfileKind, ...] = ("transactions", "predictions")


def monitoring_dir(settings: Settings) -> Path:
    """Root of everything monitoring writes (profiles, reports, the drift-metrics table)."""
    return settings.data_dir / "monitoring"


def profiles_dir(settings: Settings, kind: str) -> Path:
    return monitoring_dir(settings) / "profiles" / kind


def profile_path(settings: Settings, kind: str, day: dt.date) -> Path:
    return profiles_dir(settings, kind) / f"date={day.isoformat()}.bin"


def profile_frame(frame: pd.DataFrame) -> Any:
    """The whylogs ``DatasetProfileView`` of ``frame``.

    Booleans become 0/1 integers first: whylogs gives a bool column neither a distribution nor
    the same frequent items as an int, so a flag logged as bool in one place and as int in
    another (serving's ``unknown_*`` vs a training frame) would not be comparable.
    """
    why = import_whylogs()
    prepared = frame.copy()
    for column in prepared.columns:
        values = prepared[column]
        flags = values.dtype == bool or str(values.dtype) == "boolean"
        if values.dtype == object:  # bools with NULLs arrive as objects
            present = values.dropna()
            flags = len(present) > 0 and present.map(type).eq(bool).all()
        if flags:
            prepared[column] = values.astype("boolean").astype("Int8")
    return why.log(prepared).view()


def write_view(view: Any, path: Path) -> Path:
    """Write a profile view atomically (old or new file, never a partial one)."""
    with atomic_path(path) as tmp:
        view.write(str(tmp))
    return path


def read_view(path: Path) -> Any:
    return read_profile(path)


def read_day(settings: Settings, kind: str, day: dt.date) -> Any | None:
    """The stored profile of one day, or None if that day was never profiled."""
    path = profile_path(settings, kind, day)
    return read_view(path) if path.exists() else None


def merge_views(views: Iterable[Any]) -> Any | None:
    merged = None
    for view in views:
        if view is not None:
            merged = view if merged is None else merged.merge(view)
    return merged


def stored_days(settings: Settings, kind: str) -> list[dt.date]:
    folder = profiles_dir(settings, kind)
    if not folder.is_dir():
        return []
    return sorted(
        dt.date.fromisoformat(p.stem.removeprefix("date="))
        for p in folder.glob("date=*.bin")
        if not p.name.startswith(".")
    )


# --- profiling a day ----------------------------------------------------------------------


def profile_transactions_day(settings: Settings, day: dt.date) -> Path | None:
    """Profile the day's transactions and context columns; None if the mart has none."""

    frame = read_transactions_day(settings, day)
    if frame.empty:
        return None
    return write_view(
        profile_frame(frame[TRANSACTION_COLUMNS]), profile_path(settings, "transactions", day)
    )


def profile_predictions_day(settings: Settings, day: dt.date) -> Path | None:
    """Profile the day's prediction log (inputs as served, score); None if nothing was scored."""

    log = read_prediction_log(settings, day)
    if log is None:
        return None
    view = profile_frame(prediction_profile_frame(log))
    return write_view(view, profile_path(settings, "predictions", day))


PROFILERS = {"transactions": profile_transactions_day, "predictions": profile_predictions_day}


def profile_day(
    settings: Settings, day: dt.date, kinds: Iterable[str] = KINDS
) -> dict[str, Path | None]:
    """(Re)profile ``day`` for each kind; the value is None where that day has no data."""
    return {kind: PROFILERS[kind](settings, day) for kind in kinds}


def ensure_day(settings: Settings, kind: str, day: dt.date) -> Any | None:
    """The day's stored profile, profiling it first if it was never stored."""
    path = profile_path(settings, kind, day)
    if not path.exists() and PROFILERS[kind](settings, day) is None:
        return None
    return read_view(path)


def window_view(settings: Settings, kind: str, first: dt.date, last: dt.date) -> tuple[Any, int]:
    """The merge of the days ``first`` .. ``last`` (profiling missing ones) and how many days
    had data."""
    views = [ensure_day(settings, kind, d) for d in days_between(first, last)]
    present = [v for v in views if v is not None]
    return merge_views(present), len(present)
