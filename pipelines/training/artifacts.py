"""Plots logged with a training run: ROC and precision-recall curves, the search history.

matplotlib with the Agg backend (no display on a worker); curves are computed with numpy at
every distinct score, the same points the metrics in ``metrics`` integrate.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np


def _figure() -> tuple:  # (pyplot, Figure, Axes); matplotlib is imported lazily
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt, *plt.subplots(figsize=(5.5, 4.5), dpi=110)


def curve_points(labels: Sequence[int], scores: Sequence[float]) -> dict[str, np.ndarray]:
    """False/true positive rates, precision and recall at every distinct score threshold."""
    y = np.asarray(labels, dtype=np.int64)
    s = np.asarray(scores, dtype=np.float64)
    order = np.argsort(-s, kind="mergesort")
    y_sorted, s_sorted = y[order], s[order]
    last = np.r_[np.flatnonzero(np.diff(s_sorted)), s.size - 1]
    tp = np.cumsum(y_sorted)[last].astype(np.float64)
    fp = (last + 1) - tp
    n_pos, n_neg = max(y.sum(), 1), max(y.size - y.sum(), 1)
    return {
        "fpr": np.r_[0.0, fp / n_neg],
        "tpr": np.r_[0.0, tp / n_pos],
        "precision": tp / (last + 1),
        "recall": tp / n_pos,
    }


def plot_roc(labels: Sequence[int], scores: Sequence[float], auc: float, path: Path) -> Path:
    points = curve_points(labels, scores)
    plt, fig, ax = _figure()
    ax.plot(points["fpr"], points["tpr"], label=f"model (AUC {auc:.3f})")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="random")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC, test period")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_precision_recall(
    labels: Sequence[int], scores: Sequence[float], ap: float, path: Path
) -> Path:
    points = curve_points(labels, scores)
    base_rate = float(np.mean(labels))
    plt, fig, ax = _figure()
    ax.step(points["recall"], points["precision"], where="post", label=f"model (AP {ap:.3f})")
    ax.axhline(base_rate, linestyle="--", color="grey", label=f"random ({base_rate:.4f})")
    ax.set(
        xlabel="recall",
        ylabel="precision",
        title="Precision-recall, test period",
        xlim=(0, 1),
        ylim=(0, 1.02),
    )
    ax.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_search_history(
    numbers: Sequence[int], values: Sequence[float | None], states: Sequence[str], path: Path
) -> Path:
    """Each trial's validation AP (pruned trials: their last reported value) and the best so
    far."""
    plt, fig, ax = _figure()
    nums = np.asarray(numbers)
    vals = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
    state = np.asarray(states)
    for name, marker, color in (("COMPLETE", "o", "tab:blue"), ("PRUNED", "x", "tab:grey")):
        mask = (state == name) & ~np.isnan(vals)
        ax.scatter(nums[mask], vals[mask], marker=marker, color=color, label=name.lower())
    complete = np.where(state == "COMPLETE", vals, np.nan)
    if np.any(~np.isnan(complete)):
        best = np.fmax.accumulate(np.nan_to_num(complete, nan=-np.inf))
        best[np.isinf(best)] = np.nan
        ax.plot(nums, best, color="tab:red", label="best so far")
    ax.set(xlabel="trial", ylabel="validation average precision", title="Optuna search")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
