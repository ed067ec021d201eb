"""Training orchestration: dataset -> search -> final model -> assessment -> registry -> gate.

Each step is a function of the settings, the MLflow run id and the run's work folder
(``<home>/training/<run_id>/``); steps hand each other files in that folder (datasets,
search outcome, model), so a DAG passes only the run id and the folder through XCom and any
step can be retried alone. ``run_training`` runs every step in one process (CLI, benchmark,
tests).

Protocol (``protocol``): the split whose test period ends on ``test_end``; model selection on
the same split moved back by test + delay; the final model is trained on the training period
for the epoch count its configuration needed on validation; the operating threshold is the
validation max-F1 threshold of the chosen configurations.

The final model is an ensemble (``ensemble``): the ``ENSEMBLE_TRIALS`` best configurations of
the search, each trained with ``SEEDS_PER_TRIAL`` seeds; probabilities are averaged. Seeds and
trials average out the variance of a network trained on ~600 frauds.

Scale-out (default off): ``tune_model(workers=N)`` runs the search in N worker processes
sharing the study storage (``tune_workers``); ``train_final(processes=N)`` trains the ensemble under
``torchrun`` with DistributedDataParallel on N local ranks (``distributed``).
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata as md
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import duckdb
import mlflow
import mlflow.pyfunc
import mlflow.pytorch
import numpy as np
from mlflow.models import infer_signature

from pipelines.config import Settings
from pipelines.contracts import (
    DRIFT_ALERT_DAY_TAG,
    DRIFT_COLUMNS_TAG,
    DRIFTED_TRAINING_DAYS_TAG,
    WINDOW_CONTAINS_DRIFT_TAG,
)
from pipelines.featurestore.repo import FEATURE_SERVICE
from pipelines.metrics import assess
from pipelines.monitoring.retrain import DriftAnswered
from pipelines.monitoring.whylogs_compat import write_profile
from pipelines.protocol import SplitWindows
from pipelines.registry import promotion, tracking, versions
from pipelines.training import dataset, distributed, ensemble, steps, tune, tune_workers
from pipelines.training.artifacts import plot_precision_recall, plot_roc, plot_search_history
from pipelines.training.model import FraudScorer, configure_threads
from pipelines.transform.mart import mart_files

log = logging.getLogger(__name__)

MODEL_ARTIFACT = "model"
TEST_SCORES = "test_scores.npy"
TRAINING_DIR = "training"
REQUIREMENTS = ("torch", "numpy", "pandas", "mlflow")


def split_for(settings: Settings, test_end: dt.date) -> SplitWindows:
    return SplitWindows.ending(
        test_end,
        train_days=settings.train_days,
        delay_days=settings.label_delay_days,
        test_days=settings.test_days,
    )


def workdir_of(settings: Settings, run_id: str) -> Path:
    return settings.home / TRAINING_DIR / run_id


def latest_assessable_day(settings: Settings) -> dt.date:
    """The newest day whose transactions all have their label: the latest possible test end."""

    query = """
        select max(tx_date) from (
            select tx_date from read_parquet(?, hive_partitioning = false) group by tx_date
            having count(*) = count(tx_fraud)
        )
    """
    files = mart_files(settings)
    if not files:
        raise ValueError("no mart export yet: nothing can be assessed")
    with duckdb.connect() as con:
        day = con.execute(query, [files]).fetchone()[0]
    if day is None:
        raise ValueError("no fully labelled day in the mart yet: nothing can be assessed")
    return day


# --- step 1: dataset ------------------------------------------------------------------------


def drift_lineage_tags(drift: DriftAnswered | None, windows: SplitWindows) -> dict[str, str]:
    """The run's drift lineage: the drift it answers and how many of its training days are
    from the alert day on (none: the model cannot have learned the drifted world)."""
    if drift is None:
        return {}
    drifted = min(max(0, (windows.train_end - drift.alert_day).days + 1), windows.train_days)
    return {
        DRIFT_ALERT_DAY_TAG: drift.alert_day.isoformat(),
        DRIFT_COLUMNS_TAG: ",".join(drift.columns),
        DRIFTED_TRAINING_DAYS_TAG: str(drifted),
        WINDOW_CONTAINS_DRIFT_TAG: "true" if drifted else "false",
    }


def build_dataset(
    settings: Settings,
    test_end: dt.date,
    *,
    reason: str = "manual",
    service: str = FEATURE_SERVICE,
    drift: DriftAnswered | None = None,
) -> steps.RunFolder:
    """Build the four periods through Feast, open the MLflow run, log the data lineage and the
    whylogs reference profile. Returns ``{"run_id", "workdir"}``.

    ``drift``: the drift this run answers (a monitor-triggered retrain); tagged with whether
    the training window holds days from its alert day on (``drift_lineage_tags``)."""

    windows = split_for(settings, test_end)
    data = dataset.build_protocol_data(settings, windows, service)
    fingerprint = data.fingerprint()
    tags = {
        **windows.as_tags(),
        **windows.validation().as_tags("validation_"),
        "feature_service": service,
        "dataset_fingerprint": fingerprint,
        "git_commit": tracking.git_commit(),
        "lock_hash": tracking.lock_hash(),
        "reason": reason,
        "model_name": settings.model_name,
        **drift_lineage_tags(drift, windows),
    }
    run_id = tracking.start_run(settings, f"train-{windows.key}", tags)
    workdir = workdir_of(settings, run_id)
    dataset.save(data, workdir / "data")
    summary = data.summary()
    tracking.log_params(
        settings,
        run_id,
        {
            **{k: v for k, v in summary.items() if k != "inputs"},
            "inputs": ",".join(data.inputs),
            "train_days": windows.train_days,
            "test_days": windows.test_days,
            "delay_days": windows.delay_days,
        },
    )
    _log_reference_profile(settings, run_id, data, workdir)
    log.info("training run %s: %s in %s", run_id, windows.key, workdir)
    return steps.RunFolder(run_id=run_id, workdir=str(workdir))


def _log_reference_profile(settings: Settings, run_id: str, data: Any, workdir: Path) -> None:
    """whylogs profile of the training inputs, as float64 like the model (and serving's
    prediction log) receives them: the reference drift monitoring compares served inputs to."""

    inputs = data.frames["train"][data.inputs].astype("float64")
    path = write_profile(inputs, workdir / "reference_profile.bin")
    tracking.client(settings).log_artifact(run_id, str(path), "monitoring")


# --- step 2: search -------------------------------------------------------------------------


def tune_model(
    settings: Settings,
    run_id: str,
    workdir: Path,
    *,
    n_trials: int | None = None,
    timeout_seconds: float | None = None,
    callbacks: tuple = (),
    workers: int = 1,
) -> steps.Tuning:
    """Run or resume the Optuna study; writes ``tuning.json`` (the chosen configurations).
    ``workers > 1``: the trials run in that many processes sharing the study storage."""

    workdir = Path(workdir)
    data = dataset.load(workdir / "data")
    result = tune_workers.run_study(
        settings,
        data,
        n_trials=n_trials,
        timeout_seconds=timeout_seconds,
        parent_run_id=run_id,
        top_k=ensemble.ENSEMBLE_TRIALS,
        callbacks=callbacks,
        workers=workers,
        data_folder=workdir / "data",
    )
    study = tune.open_study(settings, result.study_name)
    trials = study.get_trials(deepcopy=False)
    values = [
        t.value if t.value is not None else (max(t.intermediate_values.values(), default=None))
        for t in trials
    ]
    plot = plot_search_history(
        [t.number for t in trials],
        values,
        [t.state.name for t in trials],
        workdir / "optuna_history.png",
    )
    c = tracking.client(settings)
    c.log_artifact(run_id, str(plot), "plots")
    tracking.set_tags(
        settings,
        run_id,
        {"study_name": result.study_name, "study_storage": _redacted(settings.study_storage)},
    )
    tracking.log_params(
        settings, run_id, {f"best_{k}": v for k, v in result.best.spec.as_params().items()}
    )
    tracking.log_metrics(
        settings,
        run_id,
        {
            "validation_average_precision": result.best.value,
            "study_finished_trials": result.finished_trials,
            "study_trials_this_call": result.trials_this_call,
            "tuning_seconds": result.seconds,
            "tuning_workers": workers,
        },
    )
    payload: steps.Tuning = {
        "study_name": result.study_name,
        "finished_trials": result.finished_trials,
        "trials_this_call": result.trials_this_call,
        "best_value": result.best.value,
        "seconds": result.seconds,
        "workers": workers,
        "members": [
            {
                "trial": t.number,
                "value": t.value,
                "params": t.spec.as_params(),
                "epochs": t.best_epoch,
                "threshold": t.threshold,
            }
            for t in result.top
        ],
    }
    return steps.write(workdir, steps.Tuning, payload)


def _redacted(url: str) -> str:
    # A database URL may carry a password: keep scheme, host and path only.
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url


# --- step 3: final model --------------------------------------------------------------------


def train_final(
    settings: Settings, run_id: str, workdir: Path, *, processes: int = 1
) -> steps.FinalModel:
    """Train the ensemble on the training period, save it and log it to MLflow (signature,
    input example, explicit requirements, pickle serialization). Writes ``final.json``.

    ``processes > 1``: the ensemble is trained under ``torchrun`` by that many local ranks
    with DistributedDataParallel (gloo), ``torch_threads / processes`` threads each."""

    configure_threads(settings.torch_threads)
    workdir = Path(workdir)
    data = dataset.load(workdir / "data")
    tuning = steps.read(workdir, steps.Tuning)
    train = data.frames["train"]
    threshold = ensemble.ensemble_threshold(tuning)
    started = time.monotonic()
    extra: dict[str, Any] = {}
    if processes > 1:
        outcome = distributed.launch(
            workdir, processes, threads=max(1, settings.torch_threads // processes)
        )
        scorer, histories = outcome.scorer, outcome.histories
        extra = {"world_size": outcome.world_size, "rows_per_rank": outcome.rows_per_rank}
    else:
        members, histories = ensemble.train_ensemble(data, tuning["members"], ensemble.fit_here)
        scorer = FraudScorer(data.inputs, members, threshold).eval()
    seconds = time.monotonic() - started
    for prefix, history in histories.items():
        for record in history:
            tracking.log_metrics(settings, run_id, record.as_metrics(prefix), step=record.epoch)

    example = train[data.inputs].head(5).astype("float64")
    model_uri, model_id = _log_model(settings, run_id, scorer, example, data.service)
    tracking.log_params(
        settings,
        run_id,
        {
            "ensemble_trials": ",".join(str(m["trial"]) for m in tuning["members"]),
            "seeds_per_trial": ensemble.SEEDS_PER_TRIAL,
            "ensemble_members": len(scorer.members),
            "threshold": threshold,
            "final_world_size": extra.get("world_size", 1),
        },
    )
    tracking.log_metrics(settings, run_id, {"final_training_seconds": seconds})
    payload: steps.FinalModel = {
        "model_uri": model_uri,
        "model_id": model_id,
        "members": len(scorer.members),
        "threshold": threshold,
        "signature_inputs": list(example.columns),
        "world_size": extra.get("world_size", 1),
        "seconds": seconds,
        **({"rows_per_rank": extra["rows_per_rank"]} if extra else {}),
    }
    return steps.write(workdir, steps.FinalModel, payload)


def _log_model(
    settings: Settings, run_id: str, scorer: Any, example: Any, service: str
) -> tuple[str, str]:

    tracking.use_tracking(settings)
    output = scorer.score_frame(example)
    signature = infer_signature(example, output)
    requirements = [f"{name}=={md.version(name).split('+')[0]}" for name in REQUIREMENTS]
    with mlflow.start_run(run_id=run_id):
        info = mlflow.pytorch.log_model(
            scorer,
            name=MODEL_ARTIFACT,
            # Pickle: ~1 s cold load instead of ~4 s for torch.export's pt2 (measured). The class
            # lives in the installed project package (pipelines.training.model).
            serialization_format="pickle",
            signature=signature,
            input_example=example,
            # Explicit: inferring them costs ~10 s of import scanning.
            pip_requirements=requirements,
            metadata={
                "inputs": scorer.inputs,
                "threshold": scorer.threshold,
                "feature_service": service,
                "output": "fraud probability",
            },
        )
    return info.model_uri, info.model_id


# --- step 4: assessment ---------------------------------------------------------------------


def score_with(model: Any, frame: Any) -> Any:
    """Fraud probabilities of ``frame`` by an MLflow pyfunc model (or its URI)."""

    if isinstance(model, str):
        model = mlflow.pyfunc.load_model(model)
    inputs = [c.name for c in model.metadata.get_input_schema().inputs]
    prediction = model.predict(frame[inputs].astype("float64"))
    return np.asarray(prediction, dtype=np.float64).ravel()


def evaluate(settings: Settings, run_id: str, workdir: Path) -> steps.Evaluation:
    """Score the test period with the model *as logged in MLflow*, log the metrics and the ROC
    and PR plots. Writes ``evaluation.json``."""

    workdir = Path(workdir)
    data = dataset.load(workdir / "data")
    final = steps.read(workdir, steps.FinalModel)
    tracking.use_tracking(settings)
    model = mlflow.pyfunc.load_model(final["model_uri"])
    results: dict[str, dict[str, float]] = {}
    for period in ("validation", "test"):
        frame = data.frames[period]
        scores = score_with(model, frame)
        results[period] = assess(
            frame.tx_day, frame.customer_id, frame[dataset.LABEL], scores, final["threshold"]
        )
        if period == "test":
            np.save(workdir / TEST_SCORES, scores)  # what the gate compares with the champion
            labels = frame[dataset.LABEL].to_numpy()
            c = tracking.client(settings)
            for plot in (
                plot_roc(labels, scores, results[period]["roc_auc"], workdir / "roc_test.png"),
                plot_precision_recall(
                    labels,
                    scores,
                    results[period]["average_precision"],
                    workdir / "pr_test.png",
                ),
            ):
                c.log_artifact(run_id, str(plot), "plots")
    # The validation period is the final model's own training week (cards known compromised
    # removed): an in-sample figure, logged for reference under its own prefix.
    metrics = {f"test_{k}": v for k, v in results["test"].items()}
    metrics |= {f"in_sample_{k}": v for k, v in results["validation"].items()}
    tracking.log_metrics(settings, run_id, metrics)
    payload: steps.Evaluation = {"model_uri": final["model_uri"], "metrics": metrics}
    return steps.write(workdir, steps.Evaluation, payload)


# --- steps 5 and 6: registry and gate -------------------------------------------------------


def register(settings: Settings, run_id: str, workdir: Path) -> steps.Registration:
    """Register the logged model as ``settings.model_name`` with its lineage tags. Idempotent:
    a retry finds the version of this run instead of registering a second one."""

    workdir = Path(workdir)
    evaluation = steps.read(workdir, steps.Evaluation)
    final = steps.read(workdir, steps.FinalModel)
    data = dataset.load(workdir / "data")
    run = tracking.client(settings).get_run(run_id)
    metrics = evaluation["metrics"]
    test_metrics = {k.removeprefix("test_"): v for k, v in metrics.items() if k.startswith("test_")}
    train = data.frames["train"][data.inputs].astype("float64")
    w = data.windows
    tags = {
        **{k: v for k, v in run.data.tags.items() if not k.startswith("mlflow.")},
        # Full precision (repr): the gate compares these values exactly (a tie rule).
        **{f"test_{k}": repr(float(v)) for k, v in test_metrics.items()},
        # What serving reads (serving/model.py): inputs in order, metrics, window, baseline.
        **{f"metric.{k}": repr(float(v)) for k, v in test_metrics.items()},
        "model_inputs": json.dumps(final["signature_inputs"]),
        "signature_inputs": ",".join(final["signature_inputs"]),
        "data_window": f"train {w.train_start}..{w.train_end}, delay {w.delay_days} d, "
        f"test {w.test_start}..{w.test_end}",
        "input_baseline": json.dumps({c: float(v) for c, v in train.median().fillna(0.0).items()}),
        "threshold": repr(float(final["threshold"])),
        "run_id": run_id,
        "promotion_metric": settings.promotion_metric,
    }
    version = versions.register_version(settings, final["model_uri"], run_id, tags)
    payload: steps.Registration = {"version": version}
    return steps.write(workdir, steps.Registration, payload)


def gate(settings: Settings, run_id: str, workdir: Path) -> steps.GateVerdict:
    """Compare with the champion on this run's test window and move the aliases."""

    workdir = Path(workdir)
    version = steps.read(workdir, steps.Registration)["version"]
    evaluation = steps.read(workdir, steps.Evaluation)
    metric = settings.promotion_metric
    candidate_value = float(evaluation["metrics"][f"test_{metric}"])
    data = dataset.load(workdir / "data")

    def paired_scores(champion_uri: str) -> promotion.PairedScores:
        frame = data.frames["test"]
        return promotion.PairedScores(
            days=frame.tx_day.to_numpy(),
            cards=frame.customer_id.to_numpy(),
            labels=frame[dataset.LABEL].to_numpy(),
            candidate=np.load(workdir / TEST_SCORES),
            champion=score_with(champion_uri, frame),
        )

    decision = promotion.gate_version(
        settings, version, candidate_value, data.windows, paired_scores
    )
    tracking.set_tags(
        settings,
        run_id,
        {
            "registered_version": version,
            "gate_decision": decision.alias,
            "gate_reason": decision.reason,
        },
    )
    payload = cast(steps.GateVerdict, decision.as_dict())
    return steps.write(workdir, steps.GateVerdict, payload)


def finish_run(settings: Settings, run_id: str, succeeded: bool = True) -> None:
    tracking.client(settings).set_terminated(run_id, "FINISHED" if succeeded else "FAILED")


# --- everything ----------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainingOutcome:
    run_id: str
    workdir: Path
    study: steps.Tuning
    metrics: dict[str, float]
    version: str
    gate: steps.GateVerdict | None  # None: not registered
    seconds: float


def run_training(
    settings: Settings,
    test_end: dt.date,
    *,
    n_trials: int | None = None,
    timeout_seconds: float | None = None,
    reason: str = "manual",
    register_model: bool = True,
    workers: int = 1,
    processes: int = 1,
    drift: DriftAnswered | None = None,
) -> TrainingOutcome:
    """Every step in this process (what the DAG runs task by task); ``workers`` and
    ``processes`` scale the search and the final training out (see ``tune_model`` and
    ``train_final``)."""
    started = time.monotonic()
    ids = build_dataset(settings, test_end, reason=reason, drift=drift)
    run_id, workdir = ids["run_id"], Path(ids["workdir"])
    try:
        study = tune_model(
            settings,
            run_id,
            workdir,
            n_trials=n_trials,
            timeout_seconds=timeout_seconds,
            workers=workers,
        )
        train_final(settings, run_id, workdir, processes=processes)
        metrics = evaluate(settings, run_id, workdir)["metrics"]
        version, decision = "", None
        if register_model:
            version = register(settings, run_id, workdir)["version"]
            decision = gate(settings, run_id, workdir)
    except BaseException:
        finish_run(settings, run_id, succeeded=False)
        raise
    finish_run(settings, run_id)
    return TrainingOutcome(
        run_id, workdir, study, metrics, version, decision, time.monotonic() - started
    )
