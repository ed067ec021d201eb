"""The network and its preprocessing: fitted on training data, identical inside the saved
model, deterministic for a seed."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipelines.training.model import (
    FraudScorer,
    HyperParams,
    Preprocessing,
    ScoringMember,
    predict_logits,
    target_aware_edges,
    train_network,
)

INPUTS = ["tx_amount", "customer_nb_tx_1d_now", "terminal_risk_7d", "tx_during_night"]


def _data(n: int = 4_000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    amount = rng.gamma(2.0, 60.0, n)
    count = rng.poisson(3, n).astype(float)
    risk = np.where(rng.random(n) < 0.05, rng.random(n), 0.0)
    night = (rng.random(n) < 0.2).astype(float)
    fraud = (amount > 220) | (risk > 0.5)
    raw = np.column_stack([amount, count, risk, night])
    raw[rng.random(n) < 0.02, 2] = np.nan  # a terminal without state
    return raw, fraud.astype(int)


def test_target_aware_bins_find_a_sharp_threshold():
    raw, _ = _data()
    edges = target_aware_edges(raw[:, 0], (raw[:, 0] > 220).astype(int), max_bins=4)
    assert np.min(np.abs(edges - 220)) < 2.0


def test_the_saved_model_preprocesses_exactly_as_training_did():
    raw, labels = _data()
    pre = Preprocessing.fit(INPUTS, raw, labels, max_bins=8)
    assert pre.bin_edges and pre.log_mask.tolist() == [True, True, False, False]
    network = torch.nn.Linear(pre.n_features, 1)
    member = ScoringMember(pre, network)
    in_model = member.preprocess(torch.as_tensor(raw, dtype=torch.float32)).numpy()
    np.testing.assert_allclose(in_model, pre.transform(raw), atol=1e-4)
    # Statistics come from the data given to fit, never from what is scored later.
    shifted = raw * 3
    np.testing.assert_allclose(
        member.preprocess(torch.as_tensor(shifted, dtype=torch.float32)).numpy(),
        pre.transform(shifted),
        atol=1e-4,
    )


def test_training_is_deterministic_for_a_seed_and_keeps_the_best_epoch():
    raw, labels = _data()
    pre = Preprocessing.fit(INPUTS, raw[:3000], labels[:3000])
    x, xv = pre.transform(raw[:3000]), pre.transform(raw[3000:])
    hp = HyperParams(hidden_units=16, hidden_layers=1, batch_size=256)
    runs = [
        train_network(
            x, labels[:3000], hp, seed=seed, max_epochs=4, x_valid=xv, y_valid=labels[3000:]
        )
        for seed in (0, 0, 1)
    ]
    logits = [predict_logits(r.network, torch.as_tensor(xv)) for r in runs]
    np.testing.assert_array_equal(logits[0], logits[1])
    assert not np.array_equal(logits[0], logits[2])
    best = max(runs[0].history, key=lambda r: r.validation_ap)
    assert runs[0].best_epoch == best.epoch
    assert runs[0].best_validation_ap == pytest.approx(best.validation_ap)


def test_scorer_averages_member_probabilities_and_reads_frames_by_name():
    import pandas as pd

    raw, labels = _data(500)
    pre = Preprocessing.fit(INPUTS, raw, labels)
    members = [ScoringMember(pre, torch.nn.Linear(pre.n_features, 1)) for _ in range(2)]
    scorer = FraudScorer(INPUTS, members, threshold=0.5).eval()
    frame = pd.DataFrame(raw, columns=INPUTS)[list(reversed(INPUTS))]  # any column order
    with torch.no_grad():
        expected = np.mean(
            [torch.sigmoid(m(torch.as_tensor(raw, dtype=torch.float32))).numpy() for m in members],
            axis=0,
        )
    np.testing.assert_allclose(scorer.score_frame(frame), expected, rtol=1e-6)
