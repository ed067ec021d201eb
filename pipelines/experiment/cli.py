"""``experiment`` commands: analyse the running A/B or shadow experiment.

Wired into the main CLI as ``python -m pipelines experiment ...``; the same function as the
``analyze_experiment`` DAG.
"""

from __future__ import annotations

import datetime as dt
import json

import typer
from rich.console import Console
from rich.table import Table

from pipelines.config import get_settings

experiment_app = typer.Typer(help="A/B and shadow experiments: analysis and decision.")
console = Console()


@experiment_app.callback()
def _group() -> None:
    """A/B and shadow experiments: analysis and decision."""
    # A callback keeps ``analyze`` a sub-command even while it is the only one.


def _fmt(value: float | None, spec: str = ".4f") -> str:
    return "" if value is None else format(value, spec)


@experiment_app.command("analyze")
def analyze(
    day: dt.datetime | None = typer.Option(
        None, "--day", formats=["%Y-%m-%d"], help="Last day of the window (default today)."
    ),
    window_days: int | None = typer.Option(
        None,
        "--window-days",
        min=1,
        help="Days of the window (default FRAUD_EXPERIMENT_WINDOW_DAYS).",
    ),
    apply: bool = typer.Option(
        True, "--apply/--dry-run", help="Act on the decision (ship moves the champion alias)."
    ),
    mode: str | None = typer.Option(None, help="ab or shadow (default: as the log shows)."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Compare challenger and champion on labelled outcomes; record ship / iterate / kill."""
    from pipelines.experiment.analysis import analyze as run

    if mode not in (None, "ab", "shadow"):
        raise typer.BadParameter("mode must be ab or shadow")
    result = run(get_settings(), day.date() if day else None, window_days, apply=apply, mode=mode)
    if result is None:
        console.print("no experiment: the registry has no champion and challenger pair")
        raise typer.Exit(0)
    if as_json:
        print(json.dumps(result.to_dict(), indent=2, default=str))
        return
    table = Table(title=f"{result.mode or '?'} experiment {result.first_day}..{result.last_day}")
    for column in ("arm", "version", "rows", "labelled", "frauds", "AP", "CP@k", "k"):
        table.add_column(column)
    table.add_column("p95 ms")
    table.add_column("errors")
    for arm in result.arms.values():
        table.add_row(
            arm.variant,
            arm.model_version,
            str(arm.rows),
            str(arm.labelled),
            str(arm.frauds),
            _fmt(arm.average_precision),
            _fmt(arm.card_precision_at_k),
            str(arm.k),
            _fmt(arm.latency_p95_ms, ".2f"),
            _fmt(arm.error_rate, ".2%"),
        )
    console.print(table)
    for g in result.guardrails:
        console.print(f"guardrail {g.name}: {'ok' if g.passed else 'FAILED'} ({g.note})")
    console.print(f"[bold]decision: {result.decision}[/bold]")
    for reason in result.reasons:
        console.print(f"  - {reason}")
    console.print(f"action: {result.action}")
    console.print(f"record: {result.record}")
