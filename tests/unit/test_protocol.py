"""Protocol windows and the label rules of the training sets (pure pandas, no Feast)."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest

from pipelines.protocol import SplitWindows, prequential_splits
from pipelines.training.dataset import (
    LabelsNotAvailable,
    assessment_period,
    known_compromised_cards,
    training_period,
)

D = dt.date
HANDBOOK = SplitWindows.ending(D(2018, 8, 14), train_days=7, delay_days=7, test_days=7)


def test_handbook_single_split_windows():
    assert (HANDBOOK.train_start, HANDBOOK.train_end) == (D(2018, 7, 25), D(2018, 7, 31))
    assert (HANDBOOK.test_start, HANDBOOK.test_end) == (D(2018, 8, 8), D(2018, 8, 14))
    # Labels of 07-31 have all arrived by the midnight ending 08-07: the start of the test period.
    assert HANDBOOK.training_cutoff == dt.datetime(2018, 8, 8, tzinfo=dt.UTC)
    assert SplitWindows.starting(D(2018, 7, 25), train_days=7, delay_days=7, test_days=7) == (
        HANDBOOK
    )


def test_model_selection_split_ends_on_the_last_training_day():
    validation = HANDBOOK.validation()
    assert validation.train_start == D(2018, 7, 11)
    assert (validation.test_start, validation.test_end) == (D(2018, 7, 25), D(2018, 7, 31))


def test_prequential_folds_step_back_one_test_period_each():
    folds = prequential_splits(HANDBOOK, n_folds=4)
    assert [f.test_end for f in folds] == [
        D(2018, 7, 24),
        D(2018, 7, 31),
        D(2018, 8, 7),
        D(2018, 8, 14),
    ]
    assert all(f.train_days == 7 and f.delay_days == 7 for f in folds)


def test_overlapping_periods_are_refused():
    with pytest.raises(ValueError):
        SplitWindows(D(2018, 1, 1), D(2018, 1, 7), D(2018, 1, 7), D(2018, 1, 10), 0)


def _tx(tid: int, card: int, when: dt.datetime, fraud: int | None, label_at) -> dict:
    return {
        "transaction_id": tid,
        "customer_id": card,
        "terminal_id": 1,
        "tx_datetime": pd.Timestamp(when),
        "tx_amount": 10.0,
        "tx_fraud": fraud,
        "tx_fraud_scenario": fraud,
        "label_available_at": pd.Timestamp(label_at) if label_at else pd.NaT,
    }


def _mart(rows: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame(rows)
    frame["tx_day"] = frame.tx_datetime.dt.date
    return frame


def _at(day: dt.date, hour: int = 12) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(hour), dt.UTC)


def _arrival(day: dt.date) -> dt.datetime:
    """The last instant a label of ``day`` arrives by the ingest's rule (transaction time + 7
    days): the midnight ending day + 7."""
    return dt.datetime.combine(day + dt.timedelta(days=8), dt.time(), dt.UTC)


def test_training_keeps_only_labels_known_at_the_cutoff():
    late = _arrival(D(2018, 7, 31)) + dt.timedelta(seconds=1)
    mart = _mart(
        [
            _tx(1, 1, _at(D(2018, 7, 25)), 0, _arrival(D(2018, 7, 25))),
            _tx(2, 2, _at(D(2018, 7, 31)), 1, _arrival(D(2018, 7, 31))),  # exactly at cutoff
            _tx(3, 3, _at(D(2018, 7, 31)), 1, late),  # a label arriving after the cutoff
            _tx(4, 4, _at(D(2018, 7, 30)), None, None),  # no label yet
            _tx(5, 5, _at(D(2018, 8, 1)), 0, _arrival(D(2018, 8, 1))),  # delay period
        ]
    )
    kept, dropped = training_period(mart, HANDBOOK)
    assert list(kept.transaction_id) == [1, 2]
    assert dropped == 2


def test_test_day_drops_cards_known_compromised_at_its_start():
    mart = _mart(
        [
            # Card 1: fraud in the training week -> out of every test day.
            _tx(1, 1, _at(D(2018, 7, 28)), 1, _arrival(D(2018, 7, 28))),
            # Card 2: fraud on the first delay day (08-01), label at 08-09 00:00 -> still in
            # on test day 1 (08-08), out from test day 2 (08-09).
            _tx(2, 2, _at(D(2018, 8, 1)), 1, _arrival(D(2018, 8, 1))),
            # Card 3: fraud before the training week: not "known" by the handbook's rule.
            _tx(3, 3, _at(D(2018, 7, 20)), 1, _arrival(D(2018, 7, 20))),
            *[
                _tx(
                    10 + 10 * i + card,
                    card,
                    _at(D(2018, 8, 8) + dt.timedelta(days=i)),
                    0,
                    _at(D(2018, 8, 30)),
                )
                for i in range(7)
                for card in (1, 2, 3, 4)
            ],
        ]
    )
    assert known_compromised_cards(mart, HANDBOOK, _at(D(2018, 8, 8), 0)) == {1}
    assert known_compromised_cards(mart, HANDBOOK, _at(D(2018, 8, 9), 0)) == {1, 2}
    test, dropped = assessment_period(mart, HANDBOOK)
    by_day = test.groupby("tx_day").customer_id.apply(sorted).to_dict()
    assert by_day[D(2018, 8, 8)] == [2, 3, 4]
    assert all(by_day[D(2018, 8, 8) + dt.timedelta(days=i)] == [3, 4] for i in range(1, 7))
    assert dropped == 7 + 6


def test_an_unlabelled_test_period_cannot_be_assessed():
    mart = _mart([_tx(1, 1, _at(D(2018, 8, 10)), None, None)])
    with pytest.raises(LabelsNotAvailable):
        assessment_period(mart, HANDBOOK)
