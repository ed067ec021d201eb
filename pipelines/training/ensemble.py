"""The final model's ensemble: the ``ENSEMBLE_TRIALS`` best configurations of the search, each
trained with ``SEEDS_PER_TRIAL`` seeds on the training period; probabilities are averaged.

``train_ensemble`` takes the function that fits one network: ``fit_here`` in this process
(``train.train_final``), or one rank of a DistributedDataParallel group (``distributed``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from pipelines.training.dataset import LABEL
from pipelines.training.model import (
    EpochRecord,
    HyperParams,
    Preprocessing,
    ScoringMember,
    TrainedNetwork,
    train_network,
)

if TYPE_CHECKING:
    from pipelines.training.dataset import ProtocolData
    from pipelines.training.steps import TunedMember, Tuning

ENSEMBLE_TRIALS = 3
SEEDS_PER_TRIAL = 2


def ensemble_threshold(tuning: Tuning) -> float:
    """The operating threshold: mean validation max-F1 threshold of the chosen trials."""
    return float(sum(m["threshold"] for m in tuning["members"]) / len(tuning["members"]))


FitFunction = Callable[[Any, Any, HyperParams, int, int], TrainedNetwork]


def train_ensemble(
    data: ProtocolData,
    chosen: list[TunedMember],
    fit: FitFunction,
    seeds_per_trial: int = SEEDS_PER_TRIAL,
) -> tuple[list[Any], dict[str, list[EpochRecord]]]:
    """The ensemble's members (``ScoringMember``) trained on the training period by ``fit(x,
    labels, hyper, seed, epochs)`` (in this process, or one rank of a DDP group), and each
    member's epochs keyed by its MLflow metric prefix."""
    train = data.frames["train"]
    raw = train[data.inputs].to_numpy(np.float64)
    labels = train[LABEL].to_numpy()
    members, histories = [], {}
    for i, member in enumerate(chosen):
        params = dict(member["params"])
        bins = int(params.pop("bins", 0))
        pre = Preprocessing.fit(data.inputs, raw, labels, bins)
        x = pre.transform(raw)
        for seed in range(seeds_per_trial):
            trained = fit(x, labels, HyperParams(**params), seed, int(member["epochs"]))
            histories[f"final_m{i}s{seed}_"] = trained.history
            members.append(ScoringMember(pre, trained.network))
    return members, histories


def fit_here(x: Any, labels: Any, hyper: HyperParams, seed: int, epochs: int) -> TrainedNetwork:
    return train_network(x, labels, hyper, seed=seed, max_epochs=epochs)
