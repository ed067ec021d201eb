"""The handbook's metrics against hand-computed cases, and AUC/AP against scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from pipelines import metrics


def _cp(rows: list[tuple[int, int, int, float]], k: int) -> list[float]:
    """rows: (day, card, label, score)."""
    days, cards, labels, scores = zip(*rows, strict=True)
    return metrics.card_precision_at_k_per_day(days, cards, labels, scores, k)


def test_cp_at_k_removes_cards_detected_on_earlier_days():
    rows = [
        # day 1: top 2 by score = card 1 (fraud), card 2 (genuine) -> 1/2; card 1 detected.
        (1, 1, 1, 0.9),
        (1, 2, 0, 0.8),
        (1, 3, 1, 0.7),  # a fraud outside the top 2: not detected, stays in later days
        (1, 4, 0, 0.1),
        # day 2: card 1 would rank first again but is already detected: removed.
        (2, 1, 1, 0.99),
        (2, 3, 1, 0.6),
        (2, 5, 0, 0.5),
        (2, 6, 0, 0.4),
    ]
    # Without removal day 2 would be cards 1, 3 -> 2/2 = 1.0; with it: 3, 5 -> 1/2.
    assert _cp(rows, k=2) == [0.5, 0.5]


def test_cp_at_k_divides_by_k_on_a_day_with_fewer_than_k_cards():
    rows = [(1, 7, 1, 0.3), (1, 8, 0, 0.2), (2, 9, 1, 0.5)]
    assert _cp(rows, k=4) == [0.25, 0.25]
    assert metrics.card_precision_at_k(*zip(*rows, strict=True), k=4) == pytest.approx(0.25)


def test_cp_at_k_takes_each_cards_max_score_and_max_label_separately():
    # Card 1: a genuine transaction scored high and a fraud scored low. The handbook's
    # groupby(card).max() pairs the max score 0.9 with the max label 1: card 1 counts as a hit.
    rows = [(1, 1, 0, 0.9), (1, 1, 1, 0.05), (1, 2, 1, 0.5), (1, 3, 0, 0.4)]
    assert _cp(rows, k=1) == [1.0]
    # ... and it is detected (removed on day 2) even though its fraud scored 0.05.
    rows += [(2, 1, 1, 0.95), (2, 3, 0, 0.4)]
    assert _cp(rows, k=1) == [1.0, 0.0]


def test_cp_at_k_ties_keep_ascending_card_order_whatever_the_row_order():
    # Cards 3 (fraud) and 5 (genuine) tie at 0.5: ties keep the order of ascending card id.
    for rows in ([(1, 5, 0, 0.5), (1, 3, 1, 0.5)], [(1, 3, 1, 0.5), (1, 5, 0, 0.5)]):
        assert _cp(rows, k=1) == [1.0]
    assert _cp([(1, 5, 1, 0.5), (1, 3, 0, 0.5)], k=1) == [0.0]


def test_cp_at_k_days_are_taken_in_calendar_order():
    # Day 1 is listed last: it must still be assessed first (its detection removes card 1).
    rows = [(2, 1, 1, 0.9), (2, 2, 0, 0.1), (1, 1, 1, 0.8), (1, 2, 0, 0.2)]
    assert _cp(rows, k=1) == [1.0, 0.0]


def test_cp_at_k_rejects_bad_input():
    with pytest.raises(ValueError):
        metrics.card_precision_at_k_per_day([1], [1], [1], [0.5], k=0)
    with pytest.raises(ValueError):
        metrics.card_precision_at_k_per_day([1, 1], [1], [1], [0.5], k=1)


def test_auc_and_ap_by_hand():
    labels = [1, 0, 1, 0]
    scores = [0.9, 0.8, 0.3, 0.1]
    # Pairs (pos, neg): (0.9,0.8) (0.9,0.1) (0.3,0.8)x (0.3,0.1) -> 3/4.
    assert metrics.roc_auc(labels, scores) == pytest.approx(0.75)
    # Ranks: hit at 1 (P=1, R=.5), hit at 3 (P=2/3, R=1): AP = .5*1 + .5*2/3.
    assert metrics.average_precision(labels, scores) == pytest.approx(0.5 + 1 / 3)
    # A tie between a fraud and a genuine counts a half pair.
    assert metrics.roc_auc([1, 0], [0.5, 0.5]) == pytest.approx(0.5)


@pytest.mark.parametrize("seed", range(5))
def test_auc_and_ap_match_scikit_learn_with_ties(seed):
    rng = np.random.default_rng(seed)
    labels = (rng.random(2_000) < 0.05).astype(int)
    labels[0] = 1
    # Rounded scores: many ties, the hard case for both metrics.
    scores = np.round(rng.random(2_000) + labels * rng.random(2_000) * 0.5, 2)
    assert metrics.roc_auc(labels, scores) == pytest.approx(roc_auc_score(labels, scores))
    assert metrics.average_precision(labels, scores) == pytest.approx(
        average_precision_score(labels, scores)
    )


def test_auc_needs_both_classes_and_rejects_nan():
    with pytest.raises(ValueError):
        metrics.roc_auc([1, 1], [0.1, 0.2])
    with pytest.raises(ValueError):
        metrics.average_precision([0, 0], [0.1, 0.2])
    with pytest.raises(ValueError):
        metrics.roc_auc([1, 0], [np.nan, 0.2])


def test_precision_and_recall_at_the_operating_threshold():
    labels = [1, 1, 0, 1, 0, 0]
    scores = [0.9, 0.7, 0.7, 0.4, 0.2, 0.1]
    op = metrics.at_threshold(labels, scores, 0.7)  # alerts: scores >= 0.7
    assert (op.alerts, op.precision, op.recall) == (3, pytest.approx(2 / 3), pytest.approx(2 / 3))
    none = metrics.at_threshold(labels, scores, 0.95)
    assert (none.alerts, none.precision, none.recall) == (0, 0.0, 0.0)


def test_best_f1_threshold_picks_the_best_cut():
    labels = [1, 1, 0, 1, 0, 0]
    scores = [0.9, 0.8, 0.7, 0.6, 0.2, 0.1]
    # Cut at 0.8: P=1, R=2/3, F1=.8; at 0.6: P=3/4, R=1, F1=6/7 (best); at 0.9: F1=.5.
    assert metrics.best_f1_threshold(labels, scores) == pytest.approx(0.6)


def test_assess_names_every_metric():
    out = metrics.assess([1, 1, 2], [1, 2, 3], [1, 0, 1], [0.9, 0.1, 0.8], threshold=0.5, k=100)
    assert set(out) == {
        "roc_auc",
        "average_precision",
        "card_precision_at_100",
        "precision_at_threshold",
        "recall_at_threshold",
        "alerts_at_threshold",
        "threshold",
    }
    assert out["roc_auc"] == 1.0 and out["card_precision_at_100"] == pytest.approx(0.01)


# --- the bootstrap over cards ----------------------------------------------------------------


@pytest.mark.parametrize("seed", range(3))
def test_card_draw_weights_are_card_constant_and_count_the_drawn_rows(seed):
    rng = np.random.default_rng(100 + seed)
    n_cards = 40
    codes = rng.integers(0, n_cards, 500)
    codes[:n_cards] = np.arange(n_cards)  # every card has a row
    weights = metrics.card_draw_weights(codes, n_cards, np.random.default_rng(seed))
    assert weights.shape == codes.shape and weights.dtype.kind == "i"
    for card in range(n_cards):
        assert np.unique(weights[codes == card]).size == 1
    # The same draw by hand: each drawn card brings all its rows, once per time drawn.
    drawn = np.random.default_rng(seed).integers(0, n_cards, n_cards)
    rows_of_card = np.bincount(codes, minlength=n_cards)
    assert weights.sum() == rows_of_card[drawn].sum()
    per_card = np.zeros(n_cards, dtype=np.int64)
    per_card[codes] = weights
    assert per_card.sum() == n_cards and not np.all(per_card == 1)


def _card_week(seed: int, n_cards: int = 300) -> tuple[np.ndarray, ...]:
    """A week of rows: ~10 per card, frauds on 10 % of the cards."""
    rng = np.random.default_rng(seed)
    cards = rng.integers(0, n_cards, 10 * n_cards) + 1000
    days = rng.integers(1, 8, cards.size)
    fraud_cards = rng.random(n_cards) < 0.1
    labels = (fraud_cards[cards - 1000] & (rng.random(cards.size) < 0.5)).astype(int)
    return days, cards, labels


def test_paired_card_bootstrap_of_identical_scores_is_exactly_zero():
    days, cards, labels = _card_week(0)
    scores = np.random.default_rng(1).random(cards.size)
    out = metrics.paired_card_bootstrap(days, cards, labels, scores, scores.copy(), draws=20)
    assert set(out) == set(metrics.ranking_metrics(days, cards, labels, scores))
    assert all(interval == (0.0, 0.0) for interval in out.values())


def test_paired_card_bootstrap_finds_a_clearly_better_model():
    days, cards, labels = _card_week(2)
    rng = np.random.default_rng(3)
    good = labels + rng.random(cards.size)  # frauds above most genuine rows
    random = rng.random(cards.size)
    out = metrics.paired_card_bootstrap(days, cards, labels, good, random, draws=50, seed=4)
    low, high = out["average_precision"]
    assert 0 < low <= high
    reverse = metrics.paired_card_bootstrap(days, cards, labels, random, good, draws=50, seed=4)
    assert reverse["average_precision"][1] < 0


def test_paired_card_bootstrap_counts_a_card_drawn_twice_as_two_cards(monkeypatch):
    # One day, k=2. Card 7: a fraud; card 8: genuine; card 9: genuine. Every draw: card 7
    # twice, card 8 once, card 9 not at all.
    days, cards, labels = [1, 1, 1], [7, 8, 9], [1, 0, 0]
    fraud_first = [0.9, 0.5, 0.1]  # top 2: the two copies of card 7 -> CP@2 = 2/2
    genuine_first = [0.5, 0.9, 0.1]  # top 2: card 8, a copy of card 7 -> CP@2 = 1/2

    def fixed_draw(codes, n_cards, rng):
        return np.array([2, 1, 0])[codes]

    monkeypatch.setattr(metrics, "card_draw_weights", fixed_draw)
    out = metrics.paired_card_bootstrap(
        days, cards, labels, fraud_first, genuine_first, draws=3, k=2
    )
    # Were the copies one card, both tops would hold card 7 and card 8: a difference of 0.
    assert out["card_precision_at_2"] == (0.5, 0.5)


def test_paired_card_bootstrap_rejects_bad_input():
    with pytest.raises(ValueError):
        metrics.paired_card_bootstrap([1, 1], [1, 2], [1, 0], [0.5, 0.1], [0.4], draws=5)
    with pytest.raises(ValueError):
        metrics.paired_card_bootstrap([1, 1], [1, 2], [1, 0], [0.5, 0.1], [0.4, 0.2], draws=0)
