"""Folding a scored payment into its card's state, and the order payments are scored in."""

from __future__ import annotations

import datetime as dt

import pytest

from serving.schemas import Transaction
from serving.stream import EMPTY, RECENT_SECONDS, CustomerState, fold, rounds

T0 = dt.datetime(2026, 1, 1, 12, tzinfo=dt.UTC)


def payment(tid: int, seconds: float, customer: int = 1, amount: float = 10.0) -> Transaction:
    return Transaction(
        transaction_id=tid,
        customer_id=customer,
        terminal_id=5,
        tx_amount=amount,
        tx_datetime=T0 + dt.timedelta(seconds=seconds),
    )


def test_a_first_payment_starts_the_state_at_its_own_time():
    state = fold(EMPTY, payment(1, 0, amount=12.5))
    assert state == CustomerState((1,), (int(T0.timestamp()),), (12.5,), T0)


def test_payments_older_than_the_longest_window_are_dropped():
    state = fold(EMPTY, payment(1, 0))
    state = fold(state, payment(2, RECENT_SECONDS - 1))
    assert state.ids == (1, 2)  # 30 days minus a second apart: both in the window
    state = fold(state, payment(3, RECENT_SECONDS))
    assert state.ids == (2, 3)  # exactly 30 days after the first: (t - 30 d, t] leaves it out


def test_a_retried_payment_changes_nothing():
    state = fold(EMPTY, payment(1, 0))
    assert fold(state, payment(1, 0)) is None


def test_same_instant_and_late_payments_get_a_newer_stamp_than_the_stored_state():
    first = fold(EMPTY, payment(1, 60))
    same = fold(first, payment(2, 60))
    assert same.event_time == first.event_time + dt.timedelta(seconds=1)
    # Within the stored second (SQLite keeps whole seconds): still a second later.
    within = fold(same, payment(4, 61.5))
    assert within.event_time == same.event_time + dt.timedelta(seconds=1)
    same = within
    late = fold(same, payment(3, 0))  # scored after a later payment of the card
    assert late.event_time > same.event_time
    assert late.ids == (3, 1, 2, 4)  # in time order, same-second payments in arrival order
    assert late.unix == tuple(sorted(late.unix))


def test_rounds_score_each_card_s_payments_one_after_the_other_in_time_order():
    batch = [
        payment(1, 30, customer=7),
        payment(2, 0, customer=8),
        payment(3, 10, customer=7),
        payment(4, 20, customer=7),
    ]
    assert rounds(batch) == [[1, 2], [3], [0]]
    assert rounds([payment(1, 0, customer=c) for c in range(3)]) == [[0, 1, 2]]


@pytest.mark.parametrize("n", [1, 5])
def test_every_payment_lands_in_exactly_one_round(n):
    batch = [payment(i, i, customer=i % 2) for i in range(n)]
    flat = sorted(i for r in rounds(batch) for i in r)
    assert flat == list(range(n))
