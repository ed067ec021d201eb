"""What changed in the raw lake since the feature tables were last built.

The build never trusts its triggers to say which days changed: Airflow merges queued Asset
events into one run, and events can be lost. It compares the lake's own state, one fingerprint
per raw day partition (its files' names, sizes and modification times), with the fingerprints
the last completed build recorded beside the tables (``<lake>/features/_built_from.json``).
Transactions and labels are both partitioned by transaction day, so a changed partition names
the transaction day to rebuild: a day ingested, re-delivered or late, or labels arriving for
an old day. The build then rebuilds from the earliest changed day on (``pipelines/features/
job.py``: no feature of a row depends on anything later than the row), and everything when
the feature job, the dbt project or the label delay changed, or no build completed before.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from pipelines.config import PROJECT_ROOT, Settings
from pipelines.features.job import (
    CUSTOMER_TABLE,
    CUSTOMER_TERMINAL_TABLE,
    TERMINAL_LABEL_TABLE,
    TERMINAL_TABLE,
)
from pipelines.features.runner import JOB_FILE
from pipelines.lake import write_text_atomic

MANIFEST = "_built_from.json"
FEATURE_TABLES = (CUSTOMER_TABLE, TERMINAL_TABLE, TERMINAL_LABEL_TABLE, CUSTOMER_TERMINAL_TABLE)
DBT_PROJECT = PROJECT_ROOT / "dbt_project"


@dataclass(frozen=True)
class BuildPlan:
    """What a feature build has to do, and the lake state to record once it has done it."""

    full: bool  # rebuild every day
    since: dt.date | None  # else: rebuild the days from this one on (None with full=False: none)
    changed_days: list[dt.date]
    reason: str
    snapshot: dict = field(repr=False)

    @property
    def up_to_date(self) -> bool:
        return not self.full and self.since is None


def manifest_path(settings: Settings) -> Path:
    return settings.features_dir / MANIFEST


def definitions_fingerprint(settings: Settings) -> str:
    """What every feature row depends on besides the data: the feature job, the dbt project
    (staging and mart) and the label delay."""
    digest = hashlib.sha256(JOB_FILE.read_bytes())
    for path in sorted(DBT_PROJECT.rglob("*")):
        if path.is_file() and path.suffix in (".sql", ".yml"):
            digest.update(str(path.relative_to(DBT_PROJECT)).encode())
            digest.update(path.read_bytes())
    digest.update(f"label_delay_days={settings.label_delay_days}".encode())
    return digest.hexdigest()


def _partition_fingerprint(folder: Path) -> str:
    files = sorted(
        p for p in folder.iterdir() if p.suffix == ".parquet" and not p.name.startswith(".")
    )
    digest = hashlib.sha256()
    for path in files:
        stat = path.stat()
        digest.update(f"{path.name}:{stat.st_size}:{stat.st_mtime_ns};".encode())
    return digest.hexdigest()


def lake_snapshot(settings: Settings) -> dict:
    """The raw lake's state: ``{"definitions": ..., "partitions": {"<table>/<day>": ...}}``."""
    partitions = {}
    for table, folder in (
        ("transactions", settings.raw_transactions_dir),
        ("labels", settings.raw_labels_dir),
    ):
        if not folder.is_dir():
            continue
        for part in sorted(folder.glob("date=*")):
            if part.is_dir():
                day = part.name.removeprefix("date=")
                partitions[f"{table}/{day}"] = _partition_fingerprint(part)
    return {"definitions": definitions_fingerprint(settings), "partitions": partitions}


def _recorded(settings: Settings) -> dict | None:
    path = manifest_path(settings)
    if not path.exists():
        return None
    return json.loads(path.read_text())


def plan_build(
    settings: Settings, *, full: bool = False, since: dt.date | None = None
) -> BuildPlan:
    """Compare the lake with the last completed build. ``full`` or ``since`` force a rebuild
    (of everything, or from that day on) whatever changed."""
    snapshot = lake_snapshot(settings)
    days = sorted({dt.date.fromisoformat(key.split("/", 1)[1]) for key in snapshot["partitions"]})
    if full:
        return BuildPlan(True, None, days, "full rebuild requested", snapshot)
    recorded = _recorded(settings)
    missing = [t for t in FEATURE_TABLES if not (settings.features_dir / t).is_dir()]
    if recorded is None or missing:
        why = "no completed build recorded" if recorded is None else f"no table {missing}"
        return BuildPlan(True, None, days, why, snapshot)
    if recorded.get("definitions") != snapshot["definitions"]:
        why = "the feature job, the dbt project or the label delay changed"
        return BuildPlan(True, None, days, why, snapshot)
    before, now = recorded.get("partitions", {}), snapshot["partitions"]
    changed = sorted(
        {
            dt.date.fromisoformat(key.split("/", 1)[1])
            for key in before.keys() | now.keys()
            if before.get(key) != now.get(key)
        }
    )
    if since is not None:
        return BuildPlan(False, since, changed, f"rebuild from {since} requested", snapshot)
    if not changed:
        return BuildPlan(False, None, [], "the lake has not changed since the last build", snapshot)
    return BuildPlan(
        False, changed[0], changed, f"{len(changed)} changed day(s), from {changed[0]}", snapshot
    )


def record_snapshot(settings: Settings, snapshot: dict) -> None:
    """Record the lake state (``BuildPlan.snapshot``, taken before the build read the lake) a
    build has completed from, once the online store is loaded too: the next plan starts from
    here. A day that arrived during the build differs from the snapshot: the next one has it."""
    write_text_atomic(manifest_path(settings), json.dumps(snapshot, indent=1))
