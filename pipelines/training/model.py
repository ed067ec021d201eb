"""The fraud model: a tabular MLP (or a small ensemble of them) with its preprocessing inside.

``FraudScorer`` is one ``torch.nn.Module`` taking the *raw* model inputs (the request's amount
and the feature service's features, in ``inputs`` order) and returning fraud probabilities:
missing values are filled, heavy-tailed columns are log-scaled, every column is standardised
with statistics fitted on the training period only, then the members' probabilities are
averaged. Serving therefore cannot apply a different preprocessing than training did: it is
part of the saved model.

Training is deterministic for a given seed and thread count: weights, dropout and batch order
come from seeded generators, and CPU kernels are deterministic.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pipelines.metrics import average_precision

# Columns whose name marks a count, an amount, a ratio or a gap: non-negative and heavy
# tailed, so log1p makes them near-symmetric before standardisation. Flags and risks (0..1)
# stay linear.
_LOG_SCALED_MARKERS = ("nb_tx", "amount", "seconds", "ratio")


def is_log_scaled(column: str) -> bool:
    return any(marker in column for marker in _LOG_SCALED_MARKERS)


@dataclass(frozen=True)
class HyperParams:
    """What the search explores (see ``tune.suggest``); defaults are a sane single model."""

    hidden_units: int = 128
    hidden_layers: int = 2
    dropout: float = 0.1
    learning_rate: float = 1e-3
    weight_decay: float = 1e-5
    batch_size: int = 512
    # Weight of a fraud in the loss relative to a genuine transaction (class weighting).
    fraud_weight: float = 1.0
    # 0 = binary cross-entropy; > 0 = focal loss with this gamma.
    focal_gamma: float = 0.0

    def as_params(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class EpochRecord:
    epoch: int
    train_loss: float
    validation_ap: float | None
    seconds: float

    def as_metrics(self, prefix: str = "") -> dict[str, float]:
        """The epoch's MLflow metrics (logged at step ``epoch``)."""
        metrics = {f"{prefix}train_loss": self.train_loss, f"{prefix}epoch_seconds": self.seconds}
        if self.validation_ap is not None:
            metrics[f"{prefix}validation_average_precision"] = self.validation_ap
        return metrics


@dataclass
class TrainedNetwork:
    network: Any  # torch.nn.Module: the MLP on preprocessed inputs
    history: list[EpochRecord] = field(default_factory=list)
    best_epoch: int = 0  # 1-based epoch whose weights were kept
    best_validation_ap: float | None = None


def configure_threads(threads: int) -> None:
    """Pin torch's intra-op threads (2 cores: more threads only contend)."""

    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


def build_mlp(n_inputs: int, hp: HyperParams, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    width = n_inputs
    for _ in range(hp.hidden_layers):
        layers += [nn.Linear(width, hp.hidden_units), nn.ReLU(), nn.Dropout(hp.dropout)]
        width = hp.hidden_units
    layers.append(nn.Linear(width, 1))
    return nn.Sequential(*layers)


def _best_split(xs: np.ndarray, ys: np.ndarray, min_leaf: int) -> tuple[float, int]:
    """Gini decrease and position of the best split of sorted ``xs`` (gain 0: no split)."""
    n = xs.size
    if n < 2 * min_leaf:
        return 0.0, -1
    frauds = np.cumsum(ys, dtype=np.float64)
    total = frauds[-1]
    left_n = np.arange(1, n, dtype=np.float64)  # split before index i = 1..n-1
    left_pos = frauds[:-1]
    right_n = n - left_n
    right_pos = total - left_pos
    impurity = 2 * left_pos * (1 - left_pos / left_n) + 2 * right_pos * (1 - right_pos / right_n)
    valid = (xs[1:] > xs[:-1]) & (left_n >= min_leaf) & (right_n >= min_leaf)
    if not valid.any():
        return 0.0, -1
    impurity = np.where(valid, impurity, np.inf)
    best = int(np.argmin(impurity))
    gain = 2 * total * (1 - total / n) - impurity[best]
    return float(gain), best + 1


def target_aware_edges(
    values: np.ndarray, labels: np.ndarray, max_bins: int, min_leaf: int = 50
) -> np.ndarray:
    """Bin edges from a 1-D classification tree grown best-first (at most ``max_bins`` leaves):
    where the fraud rate changes along this column. Outer edges are the observed min and max.
    """
    order = np.argsort(values, kind="mergesort")
    xs, ys = values[order], np.asarray(labels, dtype=np.float64)[order]
    leaves = [(0, xs.size)]
    cuts: list[float] = []
    while len(leaves) < max_bins:
        candidates = [(*_best_split(xs[lo:hi], ys[lo:hi], min_leaf), lo, hi) for lo, hi in leaves]
        gain, pos, lo, hi = max(candidates, key=lambda c: c[0])
        if gain <= 1e-12:
            break
        leaves.remove((lo, hi))
        leaves += [(lo, lo + pos), (lo + pos, hi)]
        cuts.append(float((xs[lo + pos - 1] + xs[lo + pos]) / 2))
    return np.unique(np.r_[xs[0], cuts, xs[-1]]).astype(np.float32)


class Preprocessing:
    """Fill, log-scale and standardise every input, then (optionally) add a piecewise-linear
    encoding of each column over bins where the training fraud rate changes (Gorishniy et al.,
    "On embeddings for numerical features in tabular deep learning"): it lets an MLP express
    sharp thresholds, such as an amount above which everything is fraud, that a smooth
    function of a standardised input approximates poorly. Everything is fitted on the
    training period only."""

    def __init__(
        self,
        inputs: list[str],
        mean: np.ndarray,
        std: np.ndarray,
        bin_edges: dict[int, np.ndarray] | None = None,
    ) -> None:
        self.inputs = list(inputs)
        self.log_mask = np.array([is_log_scaled(c) for c in inputs])
        self.mean = np.asarray(mean, dtype=np.float32)
        self.std = np.asarray(std, dtype=np.float32)
        self.bin_edges = dict(bin_edges or {})

    @staticmethod
    def scale(raw: np.ndarray, log_mask: np.ndarray) -> np.ndarray:
        x = np.nan_to_num(np.asarray(raw, dtype=np.float32), nan=0.0)
        x[:, log_mask] = np.log1p(np.clip(x[:, log_mask], 0.0, None))
        return x

    @classmethod
    def fit(
        cls,
        inputs: list[str],
        raw: np.ndarray,
        labels: np.ndarray | None = None,
        max_bins: int = 0,
    ) -> Preprocessing:
        log_mask = np.array([is_log_scaled(c) for c in inputs])
        scaled = cls.scale(raw, log_mask)
        mean = scaled.mean(axis=0)
        std = scaled.std(axis=0)
        std[std < 1e-6] = 1.0  # a constant column stays constant (zero) instead of inf
        edges: dict[int, np.ndarray] = {}
        if max_bins >= 2 and labels is not None:
            standard = (scaled - mean) / std
            for j in range(standard.shape[1]):
                e = target_aware_edges(standard[:, j], labels, max_bins)
                if e.size >= 3:  # at least one cut: two bins
                    edges[j] = e
        return cls(inputs, mean, std, edges)

    @property
    def n_features(self) -> int:
        return len(self.inputs) + sum(e.size - 1 for e in self.bin_edges.values())

    def bin_tables(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(column index, bin low edge, bin width) of every piecewise-linear component."""
        cols, lows, widths = [], [], []
        for j, e in sorted(self.bin_edges.items()):
            cols += [j] * (e.size - 1)
            lows += list(e[:-1])
            widths += list(np.maximum(np.diff(e), 1e-6))
        return (
            np.asarray(cols, dtype=np.int64),
            np.asarray(lows, dtype=np.float32),
            np.asarray(widths, dtype=np.float32),
        )

    def transform(self, raw: np.ndarray) -> np.ndarray:
        standard = (self.scale(raw, self.log_mask) - self.mean) / self.std
        if not self.bin_edges:
            return standard.astype(np.float32)
        cols, lows, widths = self.bin_tables()
        encoded = np.clip((standard[:, cols] - lows) / widths, 0.0, 1.0)
        return np.hstack([standard, encoded]).astype(np.float32)


class ScoringMember(nn.Module):
    """One network with the preprocessing it was trained with: raw inputs -> logit."""

    def __init__(self, preprocessing: Preprocessing, network: nn.Module) -> None:
        super().__init__()
        self.register_buffer("log_mask", torch.as_tensor(preprocessing.log_mask))
        self.register_buffer("mean", torch.as_tensor(preprocessing.mean))
        self.register_buffer("std", torch.as_tensor(preprocessing.std))
        cols, lows, widths = preprocessing.bin_tables()
        self.register_buffer("bin_columns", torch.as_tensor(cols))
        self.register_buffer("bin_lows", torch.as_tensor(lows))
        self.register_buffer("bin_widths", torch.as_tensor(widths))
        self.network = network

    def preprocess(self, raw: torch.Tensor) -> torch.Tensor:
        x = torch.nan_to_num(raw.to(torch.float32), nan=0.0)
        x = torch.where(self.log_mask, torch.log1p(torch.clamp(x, min=0.0)), x)
        x = (x - self.mean) / self.std
        if self.bin_columns.numel() == 0:
            return x
        encoded = torch.clamp((x[:, self.bin_columns] - self.bin_lows) / self.bin_widths, 0, 1)
        return torch.cat([x, encoded], dim=1)

    def forward(self, raw: torch.Tensor) -> torch.Tensor:
        return self.network(self.preprocess(raw)).squeeze(-1)


class FraudScorer(nn.Module):
    """Raw inputs (columns in ``inputs`` order, float, NaN = missing) -> fraud probability:
    the mean of the members' probabilities. ``threshold`` is the operating point (alert when
    the probability is >= it), chosen on the validation period."""

    def __init__(self, inputs: list[str], members: list[ScoringMember], threshold: float) -> None:
        super().__init__()
        self.inputs = list(inputs)
        self.threshold = float(threshold)
        self.members = nn.ModuleList(members)

    def forward(self, raw: torch.Tensor) -> torch.Tensor:
        probabilities = [torch.sigmoid(member(raw)) for member in self.members]
        return torch.stack(probabilities).mean(dim=0)

    def score_frame(self, frame: Any) -> np.ndarray:
        """Probabilities for a DataFrame holding (at least) the input columns."""
        raw = frame[self.inputs].to_numpy(np.float32, na_value=np.nan)
        with torch.no_grad():
            return self(torch.as_tensor(raw)).numpy().astype(np.float64)


def weighted_loss(logits: torch.Tensor, target: torch.Tensor, hp: HyperParams) -> torch.Tensor:
    """The training loss: binary cross-entropy, frauds weighted by ``fraud_weight``, focal if
    ``focal_gamma`` > 0 (the same in one process and under DDP)."""
    weight = torch.where(target > 0.5, hp.fraud_weight, 1.0)
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    if hp.focal_gamma <= 0:
        return (bce * weight).mean()
    # Focal loss: down-weights the easy (mostly genuine) examples by (1 - p_t)^gamma.
    p_t = torch.exp(-bce)
    return (((1 - p_t) ** hp.focal_gamma) * bce * weight).mean()


def predict_logits(network: torch.nn.Module, x: torch.Tensor, batch: int = 65_536) -> np.ndarray:
    network.eval()
    with torch.no_grad():
        parts = [network(x[i : i + batch]).squeeze(-1) for i in range(0, len(x), batch)]
    return torch.cat(parts).numpy().astype(np.float64) if parts else np.zeros(0)


def train_network(
    x_train: np.ndarray,
    y_train: np.ndarray,
    hp: HyperParams,
    *,
    seed: int,
    max_epochs: int,
    x_valid: np.ndarray | None = None,
    y_valid: np.ndarray | None = None,
    patience: int = 3,
    on_epoch: Callable[[EpochRecord], None] | None = None,
) -> TrainedNetwork:
    """Train one MLP on *preprocessed* inputs.

    With a validation set: early stopping on validation AP (the best epoch's weights are kept,
    training stops after ``patience`` epochs without improvement). Without: exactly
    ``max_epochs`` epochs (the final model, trained for the epoch count chosen on validation).
    ``on_epoch`` sees each epoch's record and may raise to stop (Optuna's pruning).
    """

    x = torch.as_tensor(x_train, dtype=torch.float32)
    y = torch.as_tensor(np.asarray(y_train), dtype=torch.float32)
    xv = None if x_valid is None else torch.as_tensor(x_valid, dtype=torch.float32)
    network = build_mlp(x.shape[1], hp, seed)
    optimiser = torch.optim.Adam(
        network.parameters(), lr=hp.learning_rate, weight_decay=hp.weight_decay
    )
    shuffler = torch.Generator().manual_seed(seed)
    result = TrainedNetwork(network=network)
    best_state, best_ap, since_best = None, -math.inf, 0
    for epoch in range(1, max_epochs + 1):
        started = time.perf_counter()
        network.train()
        order = torch.randperm(len(x), generator=shuffler)
        total = 0.0
        for i in range(0, len(x), hp.batch_size):
            idx = order[i : i + hp.batch_size]
            optimiser.zero_grad()
            loss = weighted_loss(network(x[idx]).squeeze(-1), y[idx], hp)
            loss.backward()
            optimiser.step()
            total += loss.item() * len(idx)
        val_ap = None
        if xv is not None:
            val_ap = average_precision(y_valid, predict_logits(network, xv))
        record = EpochRecord(epoch, total / len(x), val_ap, time.perf_counter() - started)
        result.history.append(record)
        if on_epoch is not None:
            on_epoch(record)
        if val_ap is None:
            continue
        if val_ap > best_ap:
            best_ap, since_best = val_ap, 0
            best_state = copy.deepcopy(network.state_dict())
            result.best_epoch, result.best_validation_ap = epoch, val_ap
        else:
            since_best += 1
            if since_best >= patience:
                break
    if best_state is not None:
        network.load_state_dict(best_state)
    else:
        result.best_epoch = len(result.history)
    network.eval()
    return result
