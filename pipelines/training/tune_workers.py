"""Parallel search: the study's trials in worker processes sharing its storage.

With ``workers > 1`` the study (``tune``) runs in that many worker processes
(``python -m pipelines train tune-worker``, one per worker, each optimizing its share of the
remaining trials) sharing the study through its storage. Use a server database
(``FRAUD_OPTUNA_STORAGE=postgresql+psycopg2://...``): the workers may as well run on other
machines with the same command. Each worker seeds its sampler differently and TPE runs with
the "constant liar" so that concurrent workers do not draw the same configuration
(``tune.open_study(worker=...)``).

``run_study`` is the search's entry point: it runs the remaining trials in this process or in
the worker processes.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import optuna

from pipelines.config import Settings
from pipelines.training import dataset, tune
from pipelines.training.dataset import ProtocolData
from pipelines.training.model import configure_threads

log = logging.getLogger(__name__)

WORKER_LOG_DIR = "tuning_workers"


def run_study(
    settings: Settings,
    data: ProtocolData,
    *,
    n_trials: int | None = None,
    timeout_seconds: float | None = None,
    parent_run_id: str | None = None,
    top_k: int = 1,
    callbacks: Sequence[Callable[[optuna.Study, optuna.trial.FrozenTrial], None]] = (),
    workers: int = 1,
    data_folder: Path | None = None,
) -> tune.TuningResult:
    """Run (or resume) the study of ``data``'s windows until it has ``n_trials`` finished
    trials (default ``settings.tuning_trials``) or ``timeout_seconds`` pass (default
    ``settings.tuning_timeout_seconds``). Returns the best ``top_k`` completed trials.

    ``workers > 1`` runs the remaining trials in that many worker processes, which read the
    dataset ``data`` was saved to (``data_folder``); ``callbacks`` run in-process only."""
    if workers > 1 and data_folder is None:
        raise ValueError("a parallel search needs data_folder: the workers load the dataset")
    if workers > 1 and callbacks:
        raise ValueError("callbacks cannot run in worker processes: use workers=1")
    call = tune.start_call(settings, data, n_trials=n_trials, timeout_seconds=timeout_seconds)
    study = call.study
    if call.remaining > 0 and workers > 1:
        run_worker_processes(
            settings,
            Path(data_folder),  # type: ignore[arg-type]  # checked above
            worker_shares(call.remaining, workers),
            timeout_seconds=call.timeout,
            parent_run_id=parent_run_id,
        )
        study = tune.open_study(settings, call.name)  # sees the workers' trials
    elif call.remaining > 0:
        tune.optimize(
            settings,
            data,
            study,
            n_trials=call.remaining,
            timeout=call.timeout,
            parent_run_id=parent_run_id,
            callbacks=callbacks,
        )
    return tune.finish_call(call, study, top_k=top_k, workers=workers)


def worker_shares(remaining: int, workers: int) -> list[int]:
    """Split ``remaining`` trials over at most ``workers`` workers (no worker gets zero):
    the study ends with exactly the requested count unless trials fail."""
    count = max(1, min(workers, remaining))
    return [remaining // count + (1 if i < remaining % count else 0) for i in range(count)]


def run_worker(
    settings: Settings,
    data_folder: Path,
    *,
    n_trials: int,
    worker: int,
    timeout_seconds: float | None = None,
    parent_run_id: str | None = None,
) -> int:
    """One worker of a parallel search (``python -m pipelines train tune-worker``): run
    ``n_trials`` trials of the study of the dataset in ``data_folder``, sharing the study with
    the other workers through ``settings.study_storage``. Returns the trials it ran."""

    configure_threads(settings.torch_threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    data = dataset.load(Path(data_folder))
    study = tune.open_study(settings, tune.study_name(settings, data), worker=worker)
    ran = tune.optimize(
        settings,
        data,
        study,
        n_trials=n_trials,
        timeout=timeout_seconds,
        parent_run_id=parent_run_id,
    )
    log.info("worker %d (pid %d): %d trials", worker, os.getpid(), ran)
    return ran


def _worker_environment(settings: Settings, threads: int) -> dict[str, str]:
    """The worker's settings as FRAUD_* variables: what it must share with this process (the
    same study, MLflow experiment and epochs), whatever the settings were built from."""
    env = dict(os.environ)
    env |= {
        "FRAUD_HOME": str(settings.home),
        "FRAUD_OPTUNA_STORAGE": settings.study_storage,
        "FRAUD_MLFLOW_TRACKING_URI": settings.tracking_uri,
        "FRAUD_MLFLOW_EXPERIMENT": settings.mlflow_experiment,
        "FRAUD_MODEL_NAME": settings.model_name,
        "FRAUD_MAX_EPOCHS": str(settings.max_epochs),
        "FRAUD_TORCH_THREADS": str(threads),
        # One BLAS/OpenMP pool per core: more threads than cores only contend.
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
    }
    return env


def run_worker_processes(
    settings: Settings,
    data_folder: Path,
    shares: Sequence[int],
    *,
    timeout_seconds: float | None = None,
    parent_run_id: str | None = None,
    log_dir: Path | None = None,
) -> None:
    """Start one ``tune-worker`` process per share, wait for all; raise if any failed (with
    the tail of its log). The workers are stopped if this process is interrupted."""
    if settings.study_storage.startswith("sqlite"):
        log.warning(
            "parallel search on SQLite storage: concurrent writers may hit 'database is "
            "locked'; use a server database (FRAUD_OPTUNA_STORAGE=postgresql+psycopg2://...)"
        )
    log_dir = Path(log_dir or Path(data_folder).parent / WORKER_LOG_DIR)
    log_dir.mkdir(parents=True, exist_ok=True)
    threads = max(1, settings.torch_threads // len(shares))
    env = _worker_environment(settings, threads)
    processes: list[tuple[int, subprocess.Popen, Path]] = []
    try:
        for worker, share in enumerate(shares):
            command = [
                sys.executable, "-m", "pipelines", "train", "tune-worker",
                "--data", str(data_folder),
                "--trials", str(share),
                "--worker", str(worker),
            ]  # fmt: skip
            if timeout_seconds is not None:
                command += ["--timeout", str(int(timeout_seconds))]
            if parent_run_id is not None:
                command += ["--parent-run-id", parent_run_id]
            path = log_dir / f"worker-{worker}.log"
            with path.open("a") as out:  # a resumed search appends to the same log
                process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
            processes.append((worker, process, path))
        failed = []
        for worker, process, path in processes:
            if process.wait() != 0:
                failed.append(f"worker {worker} exited {process.returncode}:\n{_tail(path)}")
        if failed:
            raise RuntimeError("parallel search failed: " + "\n".join(failed))
    finally:
        for _, process, _ in processes:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()


def _tail(path: Path, lines: int = 30) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
