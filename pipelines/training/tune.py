"""Hyperparameter search: Optuna TPE + median pruning on per-epoch validation AP.

The study is persistent (``settings.study_storage``) and named after the model and the data
windows, so a search (``tune_workers.run_study``) for the same windows resumes it: the trial
budget is the study's total of finished trials, not a per-call count, and the sampler is
seeded with the number of trials already in the study so a resumed search does not replay the
first draws.
A trial left RUNNING by a killed process is failed by its missed heartbeats and retried once.

Scale-out (worker processes sharing the study through its storage) is ``tune_workers``: it
opens each worker's study with ``open_study(worker=...)``, whose sampler is seeded apart from
the other workers' and runs TPE with the "constant liar".

Each trial trains on the model-selection split (``validation_train`` -> ``validation``) and is
an MLflow child run of the training run (params, per-epoch curves, outcome).
"""

from __future__ import annotations

import logging
import os
import socket
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import torch
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

from pipelines.config import Settings
from pipelines.metrics import best_f1_threshold
from pipelines.registry import tracking
from pipelines.training.dataset import LABEL, ProtocolData
from pipelines.training.model import (
    EpochRecord,
    HyperParams,
    Preprocessing,
    configure_threads,
    predict_logits,
    train_network,
)

log = logging.getLogger(__name__)

TRAINING_SEED = 0
PATIENCE = 3  # epochs without a better validation AP before a trial stops
HEARTBEAT_SECONDS = 30
# Part of the study name: a changed search space starts a new study instead of resuming one
# whose distributions no longer match.
SEARCH_SPACE = "space1"
# Trial outcomes that count against the budget (a FAILed trial is retried, not counted).
_FINISHED = ("COMPLETE", "PRUNED")
WORKER_SEED_STRIDE = 100_003


@dataclass(frozen=True)
class TrialSpec:
    """One configuration: network hyperparameters and the input encoding."""

    hyper: HyperParams
    bins: int  # 0: standardised inputs only; N: plus piecewise-linear encoding on N bins

    def as_params(self) -> dict[str, Any]:
        return {**self.hyper.as_params(), "bins": self.bins}

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> TrialSpec:
        values = dict(params)
        bins = int(values.pop("bins", 0))
        return cls(HyperParams(**values), bins)


@dataclass(frozen=True)
class TrialSummary:
    number: int
    value: float  # best validation AP
    spec: TrialSpec
    best_epoch: int
    threshold: float  # max-F1 score threshold on validation


@dataclass
class TuningResult:
    study_name: str
    finished_trials: int  # in the whole study
    trials_this_call: int
    best: TrialSummary
    top: list[TrialSummary] = field(default_factory=list)
    seconds: float = 0.0


def suggest(trial: optuna.Trial) -> TrialSpec:
    """The search space (fixed names: a resumed study must see the same distributions)."""
    hyper = HyperParams(
        hidden_units=trial.suggest_categorical("hidden_units", [64, 128, 256]),
        hidden_layers=trial.suggest_int("hidden_layers", 1, 3),
        dropout=trial.suggest_float("dropout", 0.0, 0.4),
        learning_rate=trial.suggest_float("learning_rate", 3e-4, 1e-2, log=True),
        weight_decay=trial.suggest_float("weight_decay", 1e-7, 1e-3, log=True),
        batch_size=trial.suggest_categorical("batch_size", [256, 512, 1024, 2048]),
        fraud_weight=trial.suggest_float("fraud_weight", 1.0, 10.0, log=True),
        focal_gamma=trial.suggest_categorical("focal_gamma", [0.0, 1.0, 2.0]),
    )
    return TrialSpec(hyper, trial.suggest_categorical("bins", [0, 8, 16]))


def study_name(settings: Settings, data: ProtocolData) -> str:
    return f"{settings.model_name}-{data.service}-{data.windows.key}-{SEARCH_SPACE}"


def open_study(
    settings: Settings, name: str, seed: int = TRAINING_SEED, *, worker: int | None = None
) -> optuna.Study:
    """Create or load the study. ``worker`` (parallel search) gives each worker process its own
    sampler seed and makes TPE account for the trials other workers are running."""

    url = settings.study_storage
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        # Heartbeats are flagged "experimental" in Optuna 5; they are what makes resume safe.
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        storage = RDBStorage(
            url,
            heartbeat_interval=HEARTBEAT_SECONDS,
            grace_period=3 * HEARTBEAT_SECONDS,
            heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=1),
        )
    study = optuna.create_study(
        study_name=name, storage=storage, direction="maximize", load_if_exists=True
    )
    # Seeded by the study's length: reproducible, yet a resumed call draws new points. Workers
    # starting together see the same length: their index separates their draws.
    offset = len(study.trials) + (0 if worker is None else WORKER_SEED_STRIDE * (worker + 1))
    study.sampler = optuna.samplers.TPESampler(seed=seed + offset, constant_liar=worker is not None)
    study.pruner = optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=2)
    return study


class _SelectionData:
    """The model-selection matrices, preprocessed once per encoding."""

    def __init__(self, data: ProtocolData) -> None:
        train, valid = data.frames["validation_train"], data.frames["validation"]
        self.inputs = data.inputs
        self.raw_train = train[data.inputs].to_numpy(np.float64)
        self.y_train = train[LABEL].to_numpy()
        self.raw_valid = valid[data.inputs].to_numpy(np.float64)
        self.y_valid = valid[LABEL].to_numpy()
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def matrices(self, bins: int) -> tuple[np.ndarray, np.ndarray]:
        if bins not in self._cache:
            pre = Preprocessing.fit(self.inputs, self.raw_train, self.y_train, bins)
            self._cache[bins] = (pre.transform(self.raw_train), pre.transform(self.raw_valid))
        return self._cache[bins]


def _summary(trial: optuna.trial.FrozenTrial) -> TrialSummary:
    return TrialSummary(
        number=trial.number,
        value=float(trial.value),
        spec=TrialSpec.from_params(trial.params),
        best_epoch=int(trial.user_attrs["best_epoch"]),
        threshold=float(trial.user_attrs["threshold"]),
    )


def finished_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return [t for t in study.get_trials(deepcopy=False) if t.state.name in _FINISHED]


def ranked_trials(study: optuna.Study) -> list[TrialSummary]:
    """Completed trials, best validation AP first (ties: the earlier trial)."""
    done = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    return [_summary(t) for t in sorted(done, key=lambda t: (-t.value, t.number))]


def _objective(
    settings: Settings,
    selection: _SelectionData,
    parent_run_id: str | None,
) -> Callable[[optuna.Trial], float]:
    """One trial: train on the selection split, report per-epoch validation AP (pruning), log
    it as an MLflow child run of ``parent_run_id``."""

    max_epochs = settings.max_epochs
    # Which process ran the trial: host and pid (a parallel search spreads trials).
    worker_id = f"{socket.gethostname()}:{os.getpid()}"

    def objective(trial: optuna.Trial) -> float:
        spec = suggest(trial)
        trial.set_user_attr("worker", worker_id)
        x_train, x_valid = selection.matrices(spec.bins)
        child = tracking.start_child_run(settings, parent_run_id, trial.number, spec.as_params())
        if child is not None:
            tracking.set_tags(settings, child, {"optuna_worker": worker_id})

        def on_epoch(record: EpochRecord) -> None:
            trial.report(record.validation_ap, record.epoch)
            if child is not None:
                tracking.log_metrics(settings, child, record.as_metrics(), step=record.epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned at epoch {record.epoch}")

        try:
            trained = train_network(
                x_train,
                selection.y_train,
                spec.hyper,
                seed=TRAINING_SEED,
                max_epochs=max_epochs,
                x_valid=x_valid,
                y_valid=selection.y_valid,
                patience=PATIENCE,
                on_epoch=on_epoch,
            )
        except optuna.TrialPruned:
            tracking.end_child_run(settings, child, "PRUNED", {})
            raise
        except Exception:
            tracking.end_child_run(settings, child, "FAIL", {})
            raise
        scores = predict_logits(trained.network, _tensor(x_valid))
        threshold = best_f1_threshold(selection.y_valid, 1 / (1 + np.exp(-scores)))
        trial.set_user_attr("best_epoch", trained.best_epoch)
        trial.set_user_attr("threshold", threshold)
        tracking.end_child_run(
            settings,
            child,
            "COMPLETE",
            {
                "validation_average_precision": trained.best_validation_ap,
                "best_epoch": trained.best_epoch,
                "threshold": threshold,
            },
        )
        return float(trained.best_validation_ap)

    return objective


def optimize(
    settings: Settings,
    data: ProtocolData,
    study: optuna.Study,
    *,
    n_trials: int,
    timeout: float | None,
    parent_run_id: str | None,
    callbacks: Sequence[Callable[[optuna.Study, optuna.trial.FrozenTrial], None]] = (),
) -> int:
    """Run ``n_trials`` trials of ``study`` in this process; returns how many it ran (other
    processes may add trials to the same study meanwhile)."""
    ran = 0

    def count(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        nonlocal ran
        ran += 1

    study.optimize(
        _objective(settings, _SelectionData(data), parent_run_id),
        n_trials=n_trials,
        timeout=timeout,
        callbacks=[count, *callbacks],
        catch=(ValueError, FloatingPointError),
        gc_after_trial=False,
    )
    return ran


@dataclass
class StudyCall:
    """One call of the search (``tune_workers.run_study``): the study it resumes, what is left
    of its budget and what the study held when the call started."""

    name: str
    study: optuna.Study
    remaining: int  # finished trials the budget still asks for (<= 0: none to run)
    timeout: float | None
    trials_before: int
    started: float


def start_call(
    settings: Settings,
    data: ProtocolData,
    *,
    n_trials: int | None = None,
    timeout_seconds: float | None = None,
) -> StudyCall:
    """Open (or resume) the study of ``data``'s windows for a call whose budget is ``n_trials``
    finished trials (default ``settings.tuning_trials``) within ``timeout_seconds`` (default
    ``settings.tuning_timeout_seconds``)."""

    configure_threads(settings.torch_threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    target = n_trials if n_trials is not None else settings.tuning_trials
    timeout = timeout_seconds if timeout_seconds is not None else settings.tuning_timeout_seconds
    name = study_name(settings, data)
    study = open_study(settings, name)
    started = time.monotonic()

    remaining = target - len(finished_trials(study))
    before = len(study.trials)
    return StudyCall(name, study, remaining, timeout, before, started)


def finish_call(
    call: StudyCall, study: optuna.Study, *, top_k: int = 1, workers: int = 1
) -> TuningResult:
    """The call's outcome from ``study`` as it stands after the call's trials (reopened if
    other processes ran them): the best ``top_k`` completed trials. ``workers`` is logged."""
    ran = len(study.trials) - call.trials_before
    ranked = ranked_trials(study)
    if not ranked:
        raise RuntimeError(f"study {call.name} has no completed trial")
    result = TuningResult(
        study_name=call.name,
        finished_trials=len(finished_trials(study)),
        trials_this_call=ran,
        best=ranked[0],
        top=ranked[:top_k],
        seconds=time.monotonic() - call.started,
    )
    log.info(
        "study %s: %d finished trials (%d this call, %d worker(s)), best validation AP %.4f "
        "(trial %d)",
        call.name,
        result.finished_trials,
        ran,
        workers,
        result.best.value,
        result.best.number,
    )
    return result


def _tensor(x: np.ndarray) -> Any:

    return torch.as_tensor(x, dtype=torch.float32)
