"""``monitor`` commands: profile a day, run the drift check of a day, show the metrics table.

Wired into the main CLI as ``python -m pipelines monitor ...``; runs without Airflow, through the
same functions as the ``monitor_drift`` DAG.
"""

from __future__ import annotations

import datetime as dt
import json

import typer
from rich.console import Console
from rich.table import Table

from pipelines.config import get_settings

monitor_app = typer.Typer(help="Drift monitoring: whylogs profiles, drift scores, decisions.")
console = Console()

_DAY = typer.Option(..., "--day", formats=["%Y-%m-%d"], help="Monitored day (YYYY-MM-DD).")


def _fmt(value: float | None, spec: str = ".3f") -> str:
    return "" if value is None else format(value, spec)


@monitor_app.command("profile")
def profile(
    day: dt.datetime = _DAY,
    kind: list[str] = typer.Option(
        None, "--kind", help="transactions and/or predictions (default: both)."
    ),
) -> None:
    """Profile a day (transactions from the mart, the prediction log) into the profile store."""
    from pipelines.monitoring.profiles import KINDS, profile_day

    kinds = kind or list(KINDS)
    unknown = set(kinds) - set(KINDS)
    if unknown:
        raise typer.BadParameter(f"unknown kind(s) {sorted(unknown)}; use {list(KINDS)}")
    for name, path in profile_day(get_settings(), day.date(), kinds).items():
        console.print(f"{name}: {path if path else 'no data that day'}")


@monitor_app.command("drift")
def drift(
    day: dt.datetime = _DAY,
    reference_start: dt.datetime | None = typer.Option(
        None, formats=["%Y-%m-%d"], help="Force the reference window (first day)."
    ),
    reference_end: dt.datetime | None = typer.Option(
        None, formats=["%Y-%m-%d"], help="Force the reference window (last day)."
    ),
    report: bool = typer.Option(True, help="Write the whylogs HTML drift report."),
    show_all: bool = typer.Option(False, "--all", help="Show every column, not only alerts."),
    as_json: bool = typer.Option(False, "--json", help="Print the scores and decision as JSON."),
) -> None:
    """Profile the day, score drift against the reference, decide, and record the run."""
    from pipelines.monitoring.monitor import NoDataForDay, run_monitor

    if (reference_start is None) != (reference_end is None):
        raise typer.BadParameter("give both --reference-start and --reference-end, or neither")
    window = (reference_start.date(), reference_end.date()) if reference_start else None
    try:
        result = run_monitor(
            get_settings(), day.date(), reference_window=window, write_reports=report
        )
    except NoDataForDay as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from exc
    if as_json:
        print(
            json.dumps(
                {"scores": result.scores.to_dict(), "decision": result.decision.to_dict()},
                default=str,
            )
        )
        return
    scores = result.scores
    table = Table(title=f"drift of {scores.day}")
    for header in ("kind", "column", "test", "p-value", "PSI", "shift", "Hellinger", "severity"):
        table.add_column(header)
    for c in scores.columns:
        if show_all or c.severity != "none":
            table.add_row(
                c.kind,
                c.column + ("" if c.policy else " (not in policy)"),
                c.test or "",
                _fmt(c.p_value, ".1e"),
                _fmt(c.psi),
                _fmt(c.shift),
                _fmt(c.hellinger),
                c.severity,
            )
    console.print(table)
    for r in scores.references:
        console.print(f"reference ({r.kind}): {r.describe()}")
    for q in scores.quality:
        console.print(f"data quality: {q.kind}.{q.column}: {q.detail}")
    for p in scores.performance:
        console.print(
            f"performance {p.metric}: {p.current:.4f} vs champion {_fmt(p.champion, '.4f')} "
            f"({p.severity})"
        )
    for note in scores.notes:
        console.print(f"[dim]{note}[/dim]")
    d = result.decision
    console.print(f"decision: [bold]{d.action}[/bold]")
    for reason in d.reasons:
        console.print(f"  - {reason}")
    for kind, path in result.reports.items():
        console.print(f"{kind} report: {path}")
    console.print(f"metrics: {result.metrics_path}")


@monitor_app.command("report")
def report(
    start: dt.datetime | None = typer.Option(None, formats=["%Y-%m-%d"], help="First day."),
    end: dt.datetime | None = typer.Option(None, formats=["%Y-%m-%d"], help="Last day."),
    column: str | None = typer.Option(None, help="Show this column's metrics over time."),
    metric: str = typer.Option("psi", help="Metric shown with --column."),
) -> None:
    """The drift-metrics table over time: one line per monitored day (its latest run)."""
    from pipelines.monitoring.metrics_table import metrics_dir, read_metrics
    from pipelines.monitoring.report import reports_dir

    settings = get_settings()
    frame = read_metrics(settings, start.date() if start else None, end.date() if end else None)
    if frame.empty:
        console.print(f"no monitor run recorded under {metrics_dir(settings)}")
        raise typer.Exit(0)
    table = Table(title="monitor runs")
    for header in ("day", "action", "drifted columns", column and f"{column} {metric}", "report"):
        if header:
            table.add_column(header)
    for day, rows in frame.groupby("date", sort=True):
        decision = rows[rows["kind"] == "decision"]
        action = decision["action"].iloc[0] if len(decision) else ""
        drifted = decision["column"].iloc[0] if len(decision) else ""
        cells = [str(day), action, drifted]
        if column:
            hit = rows[(rows["column"] == column) & (rows["metric"] == metric)]
            cells.append(
                ", ".join(f"{k}:{v:.3f}" for k, v in zip(hit["kind"], hit["value"], strict=True))
            )
        latest = sorted((reports_dir(settings) / f"date={day}").glob("*-latest.html"))
        cells.append(" ".join(str(p) for p in latest))
        table.add_row(*cells)
    console.print(table)
    console.print(f"table: {metrics_dir(settings)} (Parquet, hive-partitioned by date)")
