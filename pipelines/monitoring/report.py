"""The whylogs HTML summary drift report of a run, one file per profile kind.

Saved as ``<data_dir>/monitoring/reports/date=YYYY-MM-DD/<kind>-<run time>.html`` (one per
run, never overwritten; the newest is also copied to ``<kind>-latest.html`` so a bookmark
follows the day). The report is whylogs' own: per column the reference and target
distributions, and the KS / chi-square drift category with the same test per column as the
policy uses.
"""

from __future__ import annotations

import datetime as dt
import html
import re
import warnings
from pathlib import Path
from typing import Any

from pipelines.config import Settings
from pipelines.lake import copy_atomic, write_text_atomic
from pipelines.monitoring.profiles import monitoring_dir
from pipelines.monitoring.whylogs_compat import import_whylogs


def reports_dir(settings: Settings) -> Path:
    return monitoring_dir(settings) / "reports"


def render_summary_drift_report(target: Any, reference: Any, column_kinds: dict[str, str]) -> str:
    """whylogs' summary drift report (HTML text) of ``target`` against ``reference``."""
    import_whylogs()
    from whylogs.viz import NotebookProfileVisualizer
    from whylogs.viz.drift.column_drift_algorithms import KS, ChiSquare

    viz = NotebookProfileVisualizer()
    viz.set_profiles(target_profile_view=target, reference_profile_view=reference)
    numeric = [c for c, k in column_kinds.items() if k == "numeric"]
    categorical = [c for c, k in column_kinds.items() if k == "categorical"]
    if numeric:
        viz.add_drift_config(column_names=numeric, algorithm=KS())
    if categorical:
        viz.add_drift_config(column_names=categorical, algorithm=ChiSquare())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rendered = viz.summary_drift_report().data
    # whylogs wraps the page in a notebook iframe (srcdoc); a file on disk wants the page.
    framed = re.search(r'srcdoc="(.*?)"\s+width=', rendered, re.DOTALL)
    return html.unescape(framed.group(1)) if framed else rendered


def write_report(
    settings: Settings,
    day: dt.date,
    kind: str,
    target: Any,
    reference: Any,
    column_kinds: dict[str, str],
    computed_at: dt.datetime | None = None,
) -> Path:
    """Render and save one report; returns its path."""
    at = computed_at or dt.datetime.now(dt.UTC)
    folder = reports_dir(settings) / f"date={day.isoformat()}"
    path = folder / f"{kind}-{at:%Y%m%dT%H%M%S}.html"
    write_text_atomic(path, render_summary_drift_report(target, reference, column_kinds))
    copy_atomic(path, folder / f"{kind}-latest.html")
    return path
