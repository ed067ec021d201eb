"""MLflow plumbing: experiment with an explicit artifact location, child runs, lineage tags.

Runs are addressed by id through an explicit ``MlflowClient`` (not the fluent "active run"),
so the DAG's tasks, each in its own process, can keep logging into the run an earlier task
created.
"""

from __future__ import annotations

import functools
import hashlib
import os
import subprocess
import time
from typing import Any

import mlflow
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag

from pipelines.config import PROJECT_ROOT, Settings

LOCK_FILE = PROJECT_ROOT / "requirements.lock"


@functools.cache
def _client(tracking_uri: str) -> MlflowClient:

    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def client(settings: Settings) -> MlflowClient:
    """The client of the settings' store; also points MLflow's process-wide URIs at it, since
    ``models:/`` URIs and the fluent API ignore the client (an Airflow task is a fresh process
    whose default would be ./mlflow.db)."""

    if settings.tracking_uri.startswith("sqlite:///"):
        settings.mlflow_dir.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(settings.tracking_uri)
    mlflow.set_registry_uri(settings.tracking_uri)
    return _client(settings.tracking_uri)


def use_tracking(settings: Settings) -> None:
    """Point the fluent API (``mlflow.log_*``, ``log_model``) at the settings' server."""
    client(settings)


def artifact_root(settings: Settings) -> str:
    return (settings.mlflow_dir / "artifacts").as_uri()


def experiment_id(settings: Settings) -> str:
    """The experiment's id, created with an explicit artifact location on first use (MLflow's
    default is ``./mlruns`` relative to whatever the working directory happens to be)."""
    c = client(settings)
    found = c.get_experiment_by_name(settings.mlflow_experiment)
    if found is not None:
        return found.experiment_id
    try:
        return c.create_experiment(
            settings.mlflow_experiment, artifact_location=artifact_root(settings)
        )
    except Exception:  # created concurrently by another process: use theirs
        found = c.get_experiment_by_name(settings.mlflow_experiment)
        if found is None:
            raise
        return found.experiment_id


def start_run(settings: Settings, name: str, tags: dict[str, str]) -> str:
    run = client(settings).create_run(
        experiment_id(settings), run_name=name, tags={k: str(v) for k, v in tags.items()}
    )
    return run.info.run_id


def log_params(settings: Settings, run_id: str, params: dict[str, Any]) -> None:
    """Log params; a retried step that arrives at another value (MLflow params are immutable)
    records it as a ``retried_param.<key>`` tag instead of failing."""

    c = client(settings)
    logged = c.get_run(run_id).data.params
    new = {k: str(v) for k, v in params.items() if k not in logged}
    changed = {k: str(v) for k, v in params.items() if k in logged and logged[k] != str(v)}
    c.log_batch(
        run_id,
        params=[Param(k, v) for k, v in new.items()],
        tags=[RunTag(f"retried_param.{k}", v) for k, v in changed.items()],
    )


def log_metrics(settings: Settings, run_id: str, metrics: dict[str, float], step: int = 0) -> None:

    now = int(time.time() * 1000)
    batch = [Metric(k, float(v), now, step) for k, v in metrics.items() if v is not None]
    client(settings).log_batch(run_id, metrics=batch)


def set_tags(settings: Settings, run_id: str, tags: dict[str, Any]) -> None:

    client(settings).log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])


def start_child_run(
    settings: Settings, parent_run_id: str | None, trial_number: int, params: dict[str, Any]
) -> str | None:
    """A child run for one Optuna trial (None when there is no parent: nothing is logged)."""
    if parent_run_id is None:
        return None
    run_id = (
        client(settings)
        .create_run(
            experiment_id(settings),
            run_name=f"trial-{trial_number}",
            tags={"mlflow.parentRunId": parent_run_id, "optuna_trial": str(trial_number)},
        )
        .info.run_id
    )
    log_params(settings, run_id, params)
    return run_id


def end_child_run(
    settings: Settings, run_id: str | None, state: str, metrics: dict[str, float]
) -> None:
    if run_id is None:
        return
    if metrics:
        log_metrics(settings, run_id, metrics)
    set_tags(settings, run_id, {"optuna_state": state})
    client(settings).set_terminated(run_id, "FAILED" if state == "FAIL" else "FINISHED")


def git_commit() -> str:
    """HEAD of the project checkout, "+dirty" if tracked files changed ("unknown" outside git).

    ``GIT_OPTIONAL_LOCKS=0``: ``git status`` must not rewrite the index of a checkout it only
    reads.
    """
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, check=True
        ).stdout.strip()

    try:
        head = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{head}+dirty" if dirty else head


def lock_hash() -> str:
    """sha256 of requirements.lock: the exact environment the model was trained in."""
    try:
        return hashlib.sha256(LOCK_FILE.read_bytes()).hexdigest()
    except OSError:
        return "unknown"
