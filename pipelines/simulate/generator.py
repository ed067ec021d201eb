"""The handbook's transaction simulator, vectorised, with day independence.

Every random draw is keyed by ``(seed, stream, day)``, so day *d* comes out the same whether it
is generated alone, inside a range, in a backfill or in a rerun. Fraud scenarios that span
several days (compromised terminals for 28 days, compromised cards for 14 days) are recomputed
from their draw days, never carried as state between days.

Scenario labels: 0 genuine, 1 amount > 220, 2 compromised terminal, 3 compromised card,
4 card testing (drift scenario ii, off by default).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass, replace
from functools import cached_property

import numpy as np
import pandas as pd

from pipelines.config import Settings
from pipelines.simulate.profiles import (
    STREAM_DRIFT_SELECTION,
    Customers,
    Terminals,
    make_customers,
    make_terminals,
    stream,
    terminals_within,
)

# Per-day streams (distinct from the profile streams).
_STREAM_GENUINE = 10
_STREAM_TERMINAL_COMPROMISE = 20
_STREAM_CARD_COMPROMISE = 30
_STREAM_CARD_COMPROMISE_PICK = 31
_STREAM_CARD_TESTING = 40

SECONDS_PER_DAY = 86_400
TERMINAL_COMPROMISE_DAYS = 28
CARD_COMPROMISE_DAYS = 14
# Room for each day's transaction ids: id = day_index * ID_STRIDE + rank within the day.
ID_STRIDE = 10_000_000

COLUMNS = [
    "transaction_id",
    "tx_datetime",
    "customer_id",
    "terminal_id",
    "tx_amount",
    "tx_fraud",
    "tx_fraud_scenario",
]


@dataclass(frozen=True)
class SimulationConfig:
    """What determines the simulated world. Two equal configs generate identical data."""

    seed: int = 0
    n_customers: int = 5_000
    n_terminals: int = 10_000
    radius: float = 5.0
    start: dt.date = dt.date(2018, 4, 1)
    # Drift (i): genuine spending shift.
    spending_from: dt.date | None = None
    spending_share: float = 0.3
    spending_factor: float = 1.5
    # Drift (ii): card testing, a fraud pattern the handbook's features barely see.
    new_fraud_from: dt.date | None = None
    new_fraud_cards_per_day: int = 10
    # Drift (iii): a share of customers move region, so they use other terminals.
    geo_from: dt.date | None = None
    geo_share: float = 0.3
    geo_shift: float = 35.0

    @classmethod
    def from_settings(cls, s: Settings) -> SimulationConfig:
        return cls(
            seed=s.seed,
            n_customers=s.n_customers,
            n_terminals=s.n_terminals,
            radius=s.terminal_radius,
            start=s.sim_start_date,
            spending_from=s.drift_spending_from,
            spending_share=s.drift_spending_share,
            spending_factor=s.drift_spending_factor,
            new_fraud_from=s.drift_new_fraud_from,
            new_fraud_cards_per_day=s.drift_new_fraud_cards_per_day,
            geo_from=s.drift_geo_from,
            geo_share=s.drift_geo_share,
            geo_shift=s.drift_geo_shift,
        )

    def with_(self, **changes: object) -> SimulationConfig:
        return replace(self, **changes)


@dataclass(frozen=True)
class _GenuineDay:
    """One day's genuine transactions, in generation order (the identity used by scenario 3)."""

    customer: np.ndarray
    terminal: np.ndarray
    seconds: np.ndarray
    amount: np.ndarray


class TransactionSimulator:
    """Generates any day of the simulated world on demand."""

    def __init__(self, config: SimulationConfig) -> None:
        self.config = config
        self._genuine_cache: dict[int, _GenuineDay] = {}
        self._card_picks: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}

    # --- the fixed world ------------------------------------------------------------------
    @cached_property
    def terminals(self) -> Terminals:
        return make_terminals(self.config.seed, self.config.n_terminals)

    @cached_property
    def customers(self) -> Customers:
        c = self.config
        return make_customers(c.seed, c.n_customers, self.terminals, c.radius)

    def _drift_members(self, scenario: int, share: float) -> np.ndarray:
        """A fixed boolean mask of the customers a drift scenario affects."""
        rng = stream(self.config.seed, STREAM_DRIFT_SELECTION, scenario)
        return rng.random(self.config.n_customers) < share

    @cached_property
    def _spending_shifted(self) -> np.ndarray:
        return self._drift_members(1, self.config.spending_share)

    @cached_property
    def _moved_customers(self) -> Customers:
        """Customer profiles after drift (iii): the moved ones get new locations and terminals."""
        c, base = self.config, self.customers
        moved = self._drift_members(3, c.geo_share)
        x = np.where(moved, (base.x + c.geo_shift) % 100, base.x)
        y = np.where(moved, (base.y + c.geo_shift) % 100, base.y)
        offsets, flat = terminals_within(x, y, self.terminals, c.radius)
        return replace(base, x=x, y=y, offsets=offsets, terminals=flat)

    # --- calendar -------------------------------------------------------------------------
    def day_index(self, day: dt.date) -> int:
        return (day - self.config.start).days

    def date_of(self, index: int) -> dt.date:
        return self.config.start + dt.timedelta(days=index)

    def _active(self, switch: dt.date | None, index: int) -> bool:
        return switch is not None and self.date_of(index) >= switch

    # --- genuine behaviour ----------------------------------------------------------------
    def _genuine(self, k: int) -> _GenuineDay:
        cached = self._genuine_cache.get(k)
        if cached is not None:
            return cached
        c = self.config
        customers = self._moved_customers if self._active(c.geo_from, k) else self.customers
        rng = stream(c.seed, _STREAM_GENUINE, k)
        counts = rng.poisson(customers.mean_nb_tx_per_day)
        counts[customers.n_terminals == 0] = 0  # no terminal in range: no transaction
        cust = np.repeat(np.arange(len(customers)), counts)
        n = len(cust)
        # int() truncates toward zero, as the handbook does; out-of-day draws are dropped.
        seconds = rng.normal(SECONDS_PER_DAY / 2, 20_000, n).astype(np.int64)
        amount = rng.normal(customers.mean_amount[cust], customers.std_amount[cust])
        fallback = rng.uniform(0, 2 * customers.mean_amount[cust])
        amount = np.round(np.where(amount < 0, fallback, amount), 2)
        pick = rng.random(n)
        nterm = customers.n_terminals[cust]
        terminal = customers.terminals[customers.offsets[cust] + (pick * nterm).astype(np.int64)]
        keep = (seconds > 0) & (seconds < SECONDS_PER_DAY)
        cust, terminal, seconds, amount = cust[keep], terminal[keep], seconds[keep], amount[keep]
        if self._active(c.spending_from, k):
            shifted = self._spending_shifted[cust]
            amount = np.where(shifted, np.round(amount * c.spending_factor, 2), amount)
        day = _GenuineDay(cust, terminal, seconds, amount)
        self._genuine_cache[k] = day
        return day

    # --- fraud scenarios ------------------------------------------------------------------
    def _compromised_terminals(self, k: int) -> np.ndarray:
        """Terminals compromised on any draw day whose 28-day window covers day k."""
        c = self.config
        draws = [
            stream(c.seed, _STREAM_TERMINAL_COMPROMISE, d).choice(c.n_terminals, 2, replace=False)
            for d in range(max(0, k - TERMINAL_COMPROMISE_DAYS + 1), k + 1)
        ]
        return np.unique(np.concatenate(draws)) if draws else np.empty(0, dtype=np.int64)

    def _card_pick(self, d: int, j: int) -> tuple[np.ndarray, np.ndarray]:
        """Draw day d, j-th card: the (day, row) pairs of its pooled 14 days picked as fraud."""
        key = (d, j)
        if key not in self._card_picks:
            c = self.config
            card = stream(c.seed, _STREAM_CARD_COMPROMISE, d).choice(
                c.n_customers, 3, replace=False
            )[j]
            days, rows = [], []
            for day in range(d, d + CARD_COMPROMISE_DAYS):
                hit = np.flatnonzero(self._genuine(day).customer == card)
                days.append(np.full(len(hit), day))
                rows.append(hit)
            pool_days, pool_rows = np.concatenate(days), np.concatenate(rows)
            n = len(pool_rows)
            chosen = stream(c.seed, _STREAM_CARD_COMPROMISE_PICK, d, j).choice(
                n, n // 3, replace=False
            )
            self._card_picks[key] = (pool_days[chosen], pool_rows[chosen])
        return self._card_picks[key]

    def _card_testing(self, k: int) -> _GenuineDay:
        """Drift (ii): stolen cards tested with a burst of tiny night-time payments anywhere."""
        c = self.config
        rng = stream(c.seed, _STREAM_CARD_TESTING, k)
        cards = rng.choice(c.n_customers, c.new_fraud_cards_per_day, replace=False)
        bursts = rng.integers(3, 9, size=len(cards))
        cust = np.repeat(cards, bursts)
        n = len(cust)
        return _GenuineDay(
            customer=cust,
            terminal=rng.integers(0, c.n_terminals, n),
            seconds=rng.integers(1, 6 * 3600, n),
            amount=np.round(rng.uniform(0.5, 5.0, n), 2),
        )

    # --- output ---------------------------------------------------------------------------
    def generate_index(self, k: int) -> pd.DataFrame:
        """All transactions of day index k (labels included), sorted by time."""
        if k < 0:
            return _empty_frame()
        g = self._genuine(k)
        amount = g.amount.copy()
        scenario = np.where(amount > 220, 1, 0).astype(np.int8)
        scenario[np.isin(g.terminal, self._compromised_terminals(k))] = 2
        for d in range(max(0, k - CARD_COMPROMISE_DAYS + 1), k + 1):
            for j in range(3):
                pick_days, pick_rows = self._card_pick(d, j)
                rows = pick_rows[pick_days == k]
                # np.multiply.at compounds when two draws pick the same transaction.
                np.multiply.at(amount, rows, 5)
                scenario[rows] = 3
        parts = [(g.customer, g.terminal, g.seconds, amount, scenario)]
        if self._active(self.config.new_fraud_from, k):
            t = self._card_testing(k)
            parts.append(
                (t.customer, t.terminal, t.seconds, t.amount, np.full(len(t.customer), 4, np.int8))
            )
        customer, terminal, seconds, amount, scenario = (
            np.concatenate(p) for p in zip(*parts, strict=True)
        )
        order = np.lexsort((terminal, customer, seconds))
        midnight = np.datetime64(self.date_of(k), "us")
        frame = pd.DataFrame(
            {
                "transaction_id": k * ID_STRIDE + np.arange(len(order), dtype=np.int64),
                "tx_datetime": midnight + seconds[order].astype("timedelta64[s]"),
                "customer_id": customer[order].astype(np.int64),
                "terminal_id": terminal[order].astype(np.int64),
                "tx_amount": amount[order],
                "tx_fraud": (scenario[order] > 0).astype(np.int8),
                "tx_fraud_scenario": scenario[order],
            }
        )
        frame["tx_datetime"] = frame["tx_datetime"].dt.tz_localize("UTC")
        return frame

    def generate_day(self, day: dt.date) -> pd.DataFrame:
        return self.generate_index(self.day_index(day))

    def iter_days(self, first: dt.date, last: dt.date) -> Iterator[tuple[dt.date, pd.DataFrame]]:
        """Days first..last inclusive, reusing shared draws; memory stays bounded."""
        for k in range(self.day_index(first), self.day_index(last) + 1):
            yield self.date_of(k), self.generate_index(k)
            # Genuine days before k-13 and picks drawn before then can no longer be needed.
            horizon = k - CARD_COMPROMISE_DAYS + 1
            for old in [d for d in self._genuine_cache if d < horizon]:
                del self._genuine_cache[old]
            for old in [key for key in self._card_picks if key[0] < horizon]:
                del self._card_picks[old]

    def generate_range(self, first: dt.date, last: dt.date) -> pd.DataFrame:
        frames = [frame for _, frame in self.iter_days(first, last)]
        return pd.concat(frames, ignore_index=True) if frames else _empty_frame()


def _empty_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "transaction_id": pd.Series(dtype="int64"),
            "tx_datetime": pd.Series(dtype="datetime64[us, UTC]"),
            "customer_id": pd.Series(dtype="int64"),
            "terminal_id": pd.Series(dtype="int64"),
            "tx_amount": pd.Series(dtype="float64"),
            "tx_fraud": pd.Series(dtype="int8"),
            "tx_fraud_scenario": pd.Series(dtype="int8"),
        }
    )
