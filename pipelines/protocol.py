"""Time windows of the handbook's evaluation protocol.

Single split (handbook chapter 3): a training period of ``train_days`` days, a delay of
``delay_days`` days during which the training period's labels arrive, then a test period of
``test_days`` days. Days are UTC calendar days; every ``*_end`` is inclusive.

The training cutoff is the instant at which the model may be trained: every label of the last
training day has arrived by the midnight that ends day ``train_end + delay_days`` (each label
arrives ``delay_days`` after its transaction; the ingest of day d writes the labels of day
d - delay), so the cutoff is ``00:00 UTC of train_end + delay_days + 1``, which is also the start
of the test period. Training labels are used only if ``label_available_at <= cutoff``.

Model selection uses the same protocol shifted ``test_days + delay_days`` days into the past
(handbook chapter 5): its assessment period then ends on the last training day, so every label
the search sees is known at the cutoff of the split it serves.

Prequential (chapters 5-7): ``n_folds`` single splits, each shifted one more ``test_days``
into the past from the given one.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass


def _midnight(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(), dt.UTC)


@dataclass(frozen=True)
class SplitWindows:
    train_start: dt.date
    train_end: dt.date  # inclusive
    test_start: dt.date
    test_end: dt.date  # inclusive
    delay_days: int

    def __post_init__(self) -> None:
        if self.train_end < self.train_start or self.test_end < self.test_start:
            raise ValueError(f"empty period in {self}")
        if self.test_start <= self.train_end:
            raise ValueError(f"test period overlaps the training period in {self}")

    @classmethod
    def ending(
        cls, test_end: dt.date, *, train_days: int, delay_days: int, test_days: int
    ) -> SplitWindows:
        """The split whose test period ends on ``test_end`` (inclusive)."""
        test_start = test_end - dt.timedelta(days=test_days - 1)
        train_end = test_start - dt.timedelta(days=delay_days + 1)
        return cls(
            train_start=train_end - dt.timedelta(days=train_days - 1),
            train_end=train_end,
            test_start=test_start,
            test_end=test_end,
            delay_days=delay_days,
        )

    @classmethod
    def starting(
        cls, train_start: dt.date, *, train_days: int, delay_days: int, test_days: int
    ) -> SplitWindows:
        """The split whose training period starts on ``train_start``."""
        test_end = train_start + dt.timedelta(days=train_days + delay_days + test_days - 1)
        return cls.ending(
            test_end, train_days=train_days, delay_days=delay_days, test_days=test_days
        )

    @property
    def train_days(self) -> int:
        return (self.train_end - self.train_start).days + 1

    @property
    def test_days(self) -> int:
        return (self.test_end - self.test_start).days + 1

    @property
    def training_cutoff(self) -> dt.datetime:
        """When the last training label has arrived (see the module docstring)."""
        return _midnight(self.train_end + dt.timedelta(days=self.delay_days + 1))

    def test_day_starts(self) -> list[dt.datetime]:
        return [_midnight(self.test_start + dt.timedelta(days=i)) for i in range(self.test_days)]

    def shifted(self, days: int) -> SplitWindows:
        """The same split moved ``days`` days (negative: into the past)."""
        step = dt.timedelta(days=days)
        return SplitWindows(
            self.train_start + step,
            self.train_end + step,
            self.test_start + step,
            self.test_end + step,
            self.delay_days,
        )

    def validation(self) -> SplitWindows:
        """The model-selection split: this one moved back by test period + delay."""
        return self.shifted(-(self.test_days + self.delay_days))

    def as_tags(self, prefix: str = "") -> dict[str, str]:
        return {
            f"{prefix}train_start": self.train_start.isoformat(),
            f"{prefix}train_end": self.train_end.isoformat(),
            f"{prefix}test_start": self.test_start.isoformat(),
            f"{prefix}test_end": self.test_end.isoformat(),
            f"{prefix}delay_days": str(self.delay_days),
            f"{prefix}training_cutoff": self.training_cutoff.isoformat(),
        }

    @property
    def key(self) -> str:
        """A short stable name, e.g. for study names and file folders."""
        return (
            f"train{self.train_start:%Y%m%d}-{self.train_end:%Y%m%d}"
            f"_delay{self.delay_days}_test{self.test_start:%Y%m%d}-{self.test_end:%Y%m%d}"
        )


def prequential_splits(last: SplitWindows, n_folds: int = 4) -> list[SplitWindows]:
    """``n_folds`` splits: ``last`` and each earlier one shifted one more test period back
    (oldest first), as the handbook's prequential assessment."""
    if n_folds < 1:
        raise ValueError("n_folds must be >= 1")
    return [last.shifted(-i * last.test_days) for i in reversed(range(n_folds))]
