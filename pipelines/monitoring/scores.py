"""Everything one monitor run measured, as plain data (JSON for XCom and the CLI)."""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field
from typing import Any

from pipelines.monitoring.drift import ColumnDrift, QualityIssue


@dataclass(frozen=True)
class PerformanceCheck:
    """One metric on the latest labelled window against the champion's training-time figure."""

    metric: str  # roc_auc | average_precision | card_precision_at_100
    current: float
    champion: float | None
    degradation: float | None  # (champion - current) / champion; > 0 is worse
    first_day: dt.date
    last_day: dt.date
    transactions: int
    frauds: int
    severity: str = "none"

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["first_day"] = self.first_day.isoformat()
        out["last_day"] = self.last_day.isoformat()
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PerformanceCheck:
        values = dict(data)
        values["first_day"] = dt.date.fromisoformat(values["first_day"])
        values["last_day"] = dt.date.fromisoformat(values["last_day"])
        return cls(**values)


@dataclass(frozen=True)
class Reference:
    """What a profile kind was compared with."""

    kind: str
    source: str  # champion-artifact | training-window | fallback-window | score-baseline
    first_day: dt.date | None
    last_day: dt.date | None
    model_version: str | None = None

    def describe(self) -> str:
        window = f"{self.first_day}..{self.last_day}" if self.first_day else "n/a"
        version = f" v{self.model_version}" if self.model_version else ""
        return f"{self.source}{version} {window}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "source": self.source,
            "first_day": self.first_day.isoformat() if self.first_day else None,
            "last_day": self.last_day.isoformat() if self.last_day else None,
            "model_version": self.model_version,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Reference:
        def day(value: str | None) -> dt.date | None:
            return dt.date.fromisoformat(value) if value else None

        return cls(
            kind=data["kind"],
            source=data["source"],
            first_day=day(data.get("first_day")),
            last_day=day(data.get("last_day")),
            model_version=data.get("model_version"),
        )


@dataclass(frozen=True)
class DriftScores:
    """The measurements of one monitored day, the input of ``policy.decide``.

    ``previous_alerts``: "kind/column" of the policy columns that were at warning or worse in
    the latest run of the previous day (from the drift-metrics table), for the persistence
    rule.
    """

    day: dt.date
    columns: list[ColumnDrift] = field(default_factory=list)
    quality: list[QualityIssue] = field(default_factory=list)
    performance: list[PerformanceCheck] = field(default_factory=list)
    references: list[Reference] = field(default_factory=list)
    previous_alerts: frozenset[str] = frozenset()
    notes: list[str] = field(default_factory=list)  # what could not be measured, and why

    def column(self, kind: str, name: str) -> ColumnDrift | None:
        return next((c for c in self.columns if c.kind == kind and c.column == name), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "day": self.day.isoformat(),
            "columns": [c.to_dict() for c in self.columns],
            "quality": [q.to_dict() for q in self.quality],
            "performance": [p.to_dict() for p in self.performance],
            "references": [r.to_dict() for r in self.references],
            "previous_alerts": sorted(self.previous_alerts),
            "notes": list(self.notes),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DriftScores:
        return cls(
            day=dt.date.fromisoformat(data["day"]),
            columns=[ColumnDrift(**c) for c in data.get("columns", [])],
            quality=[QualityIssue(**q) for q in data.get("quality", [])],
            performance=[PerformanceCheck.from_dict(p) for p in data.get("performance", [])],
            references=[Reference.from_dict(r) for r in data.get("references", [])],
            previous_alerts=frozenset(data.get("previous_alerts", [])),
            notes=list(data.get("notes", [])),
        )


def alert_key(kind: str, column: str) -> str:
    return f"{kind}/{column}"
