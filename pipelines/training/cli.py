"""Command line of training and the registry (wired into ``python -m pipelines``):

python -m pipelines train run --test-end 2018-08-14 [--trials 30] [--timeout 600]
    [--workers 2] [--processes 2]
python -m pipelines train tune-worker --data <workdir>/data --trials 10 [--worker 1]
python -m pipelines registry show
python -m pipelines registry rollback [--reason "..."]
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from pipelines.config import get_settings

train_app = typer.Typer(help="Train, assess, register and gate the fraud model.")
registry_app = typer.Typer(help="Inspect the model registry; roll the champion back.")
console = Console()

_METRICS = ("test_roc_auc", "test_average_precision", "test_card_precision_at_100")


@train_app.command("run")
def train_run(
    test_end: dt.datetime = typer.Option(
        ..., formats=["%Y-%m-%d"], help="Last day of the test period (inclusive)."
    ),
    trials: int | None = typer.Option(
        None, min=1, help="Finished trials the study should reach (default FRAUD_TUNING_TRIALS)."
    ),
    timeout: int | None = typer.Option(
        None, min=1, help="Search time budget in seconds (default FRAUD_TUNING_TIMEOUT_SECONDS)."
    ),
    reason: str = typer.Option("manual", help="Why this training runs (recorded on the run)."),
    workers: int = typer.Option(
        1, min=1, help="Search worker processes sharing the study (use a server storage)."
    ),
    processes: int = typer.Option(
        1, min=1, help="Final training processes: > 1 runs it under torchrun with DDP (gloo)."
    ),
) -> None:
    """Dataset from Feast, Optuna search, final model, test assessment, registry and gate."""
    from pipelines.training.dataset import LabelsNotAvailable
    from pipelines.training.train import run_training

    settings = get_settings()
    try:
        outcome = run_training(
            settings,
            test_end.date(),
            n_trials=trials,
            timeout_seconds=timeout,
            reason=reason,
            workers=workers,
            processes=processes,
        )
    except (LabelsNotAvailable, FileNotFoundError, ValueError) as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(1) from exc
    table = Table("metric (test period)", "value")
    for key, value in outcome.metrics.items():
        if key.startswith("test_"):
            table.add_row(key.removeprefix("test_"), f"{value:.4f}")
    console.print(table)
    console.print(
        f"study {outcome.study['study_name']}: {outcome.study['finished_trials']} trials "
        f"({outcome.study['trials_this_call']} this run), best validation AP "
        f"{outcome.study['best_value']:.4f}"
    )
    console.print(f"MLflow run {outcome.run_id} in {outcome.seconds:.0f}s; files {outcome.workdir}")
    gate = outcome.gate
    if gate is not None:
        console.print(
            f"{settings.model_name} v{outcome.version} -> [bold]{gate['alias']}[/]: "
            f"{gate['reason']}"
        )


@train_app.command("tune-worker")
def train_tune_worker(
    data: Path = typer.Option(
        ..., exists=True, file_okay=False, help="Dataset folder written by the dataset step."
    ),
    trials: int = typer.Option(..., min=1, help="Trials this worker runs."),
    worker: int = typer.Option(0, min=0, help="Worker index (separates the sampler seeds)."),
    timeout: int | None = typer.Option(None, min=1, help="Time budget of this worker (s)."),
    parent_run_id: str | None = typer.Option(
        None, help="MLflow training run the trials are logged under (child runs)."
    ),
) -> None:
    """One worker of a parallel search: trials of the dataset's study, shared with the other
    workers through FRAUD_OPTUNA_STORAGE (run it on as many processes or hosts as wanted)."""
    from pipelines.training.tune_workers import run_worker

    ran = run_worker(
        get_settings(),
        data,
        n_trials=trials,
        worker=worker,
        timeout_seconds=timeout,
        parent_run_id=parent_run_id,
    )
    console.print(f"worker {worker}: {ran} trials")


def gate_evidence(tags: dict[str, str]) -> str:
    """The gate's rule and the challenger - champion difference with its interval, from a
    version's ``gate_*`` tags; empty when no comparison was made."""
    rule, interval = tags.get("gate_rule"), tags.get("gate_interval")
    if not rule or not interval:
        return ""
    low, high = json.loads(interval)
    difference = float(tags["gate_candidate_value"]) - float(tags["gate_champion_value"])
    margin = float(tags.get("gate_margin") or 0.0)
    bound = f", margin {margin:.3f}" if rule == "non-inferiority" else ""
    return f"{rule}{bound}: {difference:+.3f} [{low:+.3f}, {high:+.3f}]"


@registry_app.command("show")
def registry_show(
    as_json: bool = typer.Option(False, "--json", help="Print the raw description as JSON."),
) -> None:
    """Versions, aliases, gate outcomes and test metrics of the registered model."""
    from pipelines.registry.versions import describe

    info = describe(get_settings())
    if as_json:
        console.print_json(json.dumps(info, default=str))
        return
    by_version: dict[str, list[str]] = {}
    for alias, version in info["aliases"].items():
        by_version.setdefault(str(version), []).append(alias)
    table = Table(
        "version", "aliases", "test window", "AUC", "AP", "CP@100", "gate: rule, difference", "gate"
    )
    for v in info["versions"]:
        tags = v["tags"]
        table.add_row(
            str(v["version"]),
            ", ".join(sorted(by_version.get(str(v["version"]), []))),
            f"{tags.get('test_start', '?')}..{tags.get('test_end', '?')}",
            *(tags.get(m, "")[:6] for m in _METRICS),
            gate_evidence(tags),
            tags.get("gate_reason", ""),
        )
    console.print(f"[bold]{info['name']}[/]")
    console.print(table)
    if not info["versions"]:
        console.print("no registered version yet: python -m pipelines train run --test-end ...")


@registry_app.command("rollback")
def registry_rollback(
    reason: str = typer.Option("manual rollback", help="Recorded on both versions."),
) -> None:
    """Give the champion alias back to the version the current champion replaced."""
    from pipelines.registry.promotion import rollback
    from pipelines.registry.versions import RegistryError

    settings = get_settings()
    try:
        before, after = rollback(settings, reason)
    except RegistryError as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(1) from exc
    console.print(f"{settings.model_name}: champion v{before} -> v{after}")
