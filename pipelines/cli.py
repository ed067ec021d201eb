"""Command line of every stage: ``python -m pipelines --help`` (or the ``fraud`` script).

Each command runs without Airflow; the DAGs call the same functions.
"""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn
from rich.table import Table

from pipelines.config import get_settings, load_settings
from pipelines.lake import utc_today

app = typer.Typer(help="Card-fraud platform: every pipeline stage from the command line.")
ingest_app = typer.Typer(help="Write transactions and labels into the raw lake.")
lake_app = typer.Typer(help="Inspect the raw lake.")
features_app = typer.Typer(help="Build features: dbt marts, Spark job, Feast apply/materialize.")
traffic_app = typer.Typer(help="The payment network: send the simulator's payments to /score.")
app.add_typer(ingest_app, name="ingest")
app.add_typer(lake_app, name="lake")
app.add_typer(features_app, name="features")
app.add_typer(traffic_app, name="traffic")


def _add_stage_apps() -> None:
    """Command groups that live beside their stage (imported lazily by typer only when used)."""
    from pipelines.experiment.cli import experiment_app
    from pipelines.monitoring.cli import monitor_app
    from pipelines.platform.cli import services_app
    from pipelines.training.cli import registry_app, train_app

    app.add_typer(train_app, name="train")
    app.add_typer(registry_app, name="registry")
    app.add_typer(monitor_app, name="monitor")
    app.add_typer(experiment_app, name="experiment")
    app.add_typer(services_app, name="services")


_add_stage_apps()
console = Console()


@app.callback()
def _main(verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging.")) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per poll is noise


def _progress() -> Progress:
    return Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )


def _days(first: dt.date, last: dt.date) -> list[dt.date]:
    if last < first:
        raise typer.BadParameter(f"end {last} is before start {first}")
    from pipelines.lake import days_between

    return days_between(first, last)


@app.command()
def simulate(
    start: dt.datetime = typer.Option(..., formats=["%Y-%m-%d"], help="First day."),
    end: dt.datetime = typer.Option(..., formats=["%Y-%m-%d"], help="Last day (inclusive)."),
    out: Path = typer.Option(..., help="Parquet file to write (labels included)."),
) -> None:
    """Simulate a range of days into one Parquet file, outside the lake."""
    import pyarrow as pa

    from pipelines.lake import write_parquet_atomic
    from pipelines.simulate import SimulationConfig, TransactionSimulator

    sim = TransactionSimulator(SimulationConfig.from_settings(get_settings()))
    days = _days(start.date(), end.date())
    frames = []
    with _progress() as progress:
        task = progress.add_task("simulating", total=len(days))
        for _, frame in sim.iter_days(days[0], days[-1]):
            frames.append(pa.Table.from_pandas(frame, preserve_index=False))
            progress.advance(task)
    table = pa.concat_tables(frames)
    write_parquet_atomic(table, out)
    frauds = sum(f.column("tx_fraud").to_numpy().sum() for f in frames)
    console.print(f"{table.num_rows:,} transactions, {frauds:,} frauds -> {out}")


@ingest_app.command("day")
def ingest_day(
    day: dt.datetime = typer.Argument(..., formats=["%Y-%m-%d"], help="Day to ingest."),
) -> None:
    """Ingest one day (the simulator's, or a live day's scored payments) and the labels that
    arrive that day."""
    from pipelines.ingest.daily import ingest_day

    try:
        r = ingest_day(day.date(), get_settings())
    except ValueError as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(1) from exc
    console.print(f"{r.day}: {r.transactions:,} {r.source} transactions -> {r.transactions_path}")
    if r.labels_path:
        console.print(f"labels of {r.labels_day}: {r.labels:,} -> {r.labels_path}")


@traffic_app.command("replay")
def traffic_replay(
    day: dt.datetime = typer.Option(
        None, formats=["%Y-%m-%d"], help="Day to replay (default: today, UTC)."
    ),
    speed: float = typer.Option(
        1.0, min=0, help="Time compression: 3600 replays a day in 24 s; 0 = as fast as answered."
    ),
    follow: bool = typer.Option(
        False, "--follow", help="Replay the live days in real time, day after day (make up)."
    ),
    concurrency: int = typer.Option(8, min=1, help="Most requests in flight."),
) -> None:
    """Send a day's payments to the scoring API at their simulated times, one per request."""
    from pipelines.traffic import follow as follow_live
    from pipelines.traffic import replay_day

    def say(message: str) -> None:
        console.print(f"{dt.datetime.now():%H:%M:%S} {message}", highlight=False, soft_wrap=True)

    if follow:
        follow_live(say)
        return
    settings = get_settings()
    target = day.date() if day else dt.datetime.now(dt.UTC).date()
    say(f"replaying {target} at speed {speed:g} to {settings.serving_host}:{settings.serving_port}")
    report = replay_day(
        settings, target, speed=speed, concurrency=concurrency, on_progress=lambda r: say(r.line())
    )
    say(report.summary())
    if report.errors:
        raise typer.Exit(1)


@ingest_app.command("range")
def ingest_range(
    start: dt.datetime = typer.Option(..., formats=["%Y-%m-%d"], help="First day."),
    end: dt.datetime = typer.Option(..., formats=["%Y-%m-%d"], help="Last day (inclusive)."),
) -> None:
    """Ingest a range of simulated days, as a backfill of the daily DAG would."""
    from pipelines.ingest.daily import ingest_days

    settings = get_settings()
    days = _days(start.date(), end.date())
    with _progress() as progress:
        task = progress.add_task("ingesting", total=len(days))
        results = ingest_days(days[0], days[-1], settings, on_day=lambda _: progress.advance(task))
    total = sum(r.transactions for r in results)
    console.print(f"{len(days)} days, {total:,} transactions -> {settings.raw_transactions_dir}")


@ingest_app.command("landing")
def ingest_landing_files() -> None:
    """Validate and ingest the files waiting in the landing folder."""
    from pipelines.ingest.landing import ingest_landing

    settings = get_settings()
    report = ingest_landing(settings)
    for name, rows in report.ingested.items():
        console.print(f"[green]ingested[/] {name}: {rows:,} rows")
    for name, problems in report.quarantined.items():
        console.print(f"[red]quarantined[/] {name}: {'; '.join(problems)}")
    if not report.ingested and not report.quarantined:
        console.print(f"no files in {settings.landing_dir}")


@lake_app.command("status")
def lake_status() -> None:
    """Partitions, rows and gaps of the raw lake tables."""
    from pipelines.lake import table_status

    s = get_settings()
    table = Table("table", "partitions", "rows", "first day", "last day", "missing days")
    for name, folder in (("transactions", s.raw_transactions_dir), ("labels", s.raw_labels_dir)):
        st = table_status(folder, name)
        missing = ", ".join(map(str, st.missing_days[:5])) + (
            " …" if len(st.missing_days) > 5 else ""
        )
        table.add_row(
            name, str(st.partitions), f"{st.rows:,}", str(st.first), str(st.last), missing
        )
    console.print(table)
    console.print(f"lake: {s.lake_dir}")


@features_app.command("dbt")
def features_dbt() -> None:
    """dbt build: staging and marts over the raw lake, with their tests."""
    from pipelines.transform.dbt import run_dbt_build

    r = run_dbt_build(get_settings())
    console.print(
        f"dbt: {r.models} models, {r.tests_passed} tests passed, {r.tests_warned} warned "
        f"in {r.elapsed_seconds:.1f}s -> {r.mart_path}"
    )


@features_app.command("spark")
def features_spark() -> None:
    """Run the Spark feature job (spark-submit on FRAUD_SPARK_MASTER)."""
    from pipelines.features.runner import run_feature_job

    with console.status("spark-submit feature job…"):
        r = run_feature_job(get_settings())
    tables = ", ".join(f"{name} {table.rows_written:,}" for name, table in r.tables.items())
    console.print(f"spark: {r.input_rows:,} transactions -> {tables} rows in {r.wall_seconds:.1f}s")


@features_app.command("apply")
def features_apply(
    force: bool = typer.Option(False, help="Apply even if the registry holds these definitions."),
) -> None:
    """feast apply: register feature_repo/ in the registry (skipped when unchanged)."""
    from pipelines.featurestore.store import apply

    applied = apply(get_settings(), force=force)
    console.print("feast apply: " + ("applied" if applied else "skipped, definitions unchanged"))


@features_app.command("docs")
def features_docs() -> None:
    """dbt docs generate: publish the docs site (lineage graph) that `make up` serves."""
    from pipelines.transform.dbt import generate_docs

    r = generate_docs(get_settings())
    console.print(f"dbt docs: {r.nodes} nodes in {r.elapsed_seconds:.1f}s -> {r.path}")


@features_app.command("materialize")
def features_materialize() -> None:
    """Load the online store up to the newest feature row."""
    from pipelines.featurestore.store import materialize_latest

    latest = materialize_latest(get_settings())
    console.print(f"online store loaded up to {latest}" if latest else "no features to load")


@features_app.command("build")
def features_build(
    full: bool = typer.Option(False, help="Rebuild every day, whatever changed."),
    since: dt.datetime | None = typer.Option(
        None, formats=["%Y-%m-%d"], help="Rebuild the days from this one on."
    ),
) -> None:
    """All of it, in order: dbt, Spark, feast apply, materialize (what build_features runs),
    for the days that changed in the raw lake since the last build."""
    from pipelines.featurestore.build import build_features

    with console.status("building features…") as status:
        built = build_features(
            get_settings(),
            full=full,
            since=since.date() if since else None,
            on_step=lambda name: status.update(f"{name}…"),
        )
    console.print(f"plan: {built.plan.reason}")
    if built.spark is None or built.dbt is None:
        return
    steps = ", ".join(f"{name} {seconds:.1f}s" for name, seconds in built.seconds.items())
    written = sum(table.rows_written for table in built.spark.tables.values())
    console.print(
        f"features: {built.spark.input_rows:,} transactions read, {written:,} feature rows "
        f"written, {built.dbt.tests_passed} dbt tests passed; online store loaded up to "
        f"{built.online_until} ({steps})"
    )


@app.command("score-day")
def score_day_cmd(
    day: dt.datetime = typer.Argument(..., formats=["%Y-%m-%d"], help="Day to score."),
) -> None:
    """Batch-score one day of the mart with the champion (same features as online)."""
    from serving.batch import score_day

    r = score_day(get_settings(), day.date())
    console.print(f"{r.day}: {r.rows:,} scored by v{r.model_version} {r.decisions} -> {r.path}")


@app.command()
def demo(
    count: int = typer.Option(5, min=1, max=100, help="Newest mart transactions to score."),
    drift: str | None = typer.Option(
        None, help="Switch a drift scenario on from today: spending, new_fraud or geo."
    ),
) -> None:
    """Score a few transactions on the running endpoint; --drift starts the retraining loop.

    With --drift: the scenario on from today; on a live day, the rest of today's payments sent
    to /score at once (drifted); then ingest today, build features, monitor today; then watch
    monitor_drift -> train_model -> deploy_model in the Airflow UI.
    """
    from pipelines import demo as d

    settings = get_settings()
    if drift is not None and drift not in d.DRIFT_SWITCHES:
        raise typer.BadParameter(f"one of {sorted(d.DRIFT_SWITCHES)}", param_hint="--drift")
    transactions = d.sample_transactions(settings, count)
    scores = d.score(settings, transactions)
    table = Table("transaction", "customer", "amount", "fraud prob.", "decision", "model")
    for t, s in zip(transactions, scores, strict=True):
        unknown = " (unknown)" if s["unknown_customer"] else ""
        table.add_row(
            str(t["transaction_id"]),
            f"{t['customer_id']}{unknown}",
            f"{t['tx_amount']:.2f}",
            f"{s['fraud_probability']:.4f}",
            s["decision"],
            f"{s['model_name']} v{s['model_version']}",
        )
    console.print(table)
    if drift is None:
        return

    from pipelines.platform.airflow import AirflowServices

    today = utc_today()
    console.print(f"drift switched on: {d.switch_drift_on(settings, drift, today)}")
    if settings.is_live(today):
        report = d.fast_forward_today(load_settings(), say=console.print)
        console.print(f"today's remaining payments through /score: {report.summary()}")
    airflow = AirflowServices(settings)
    with airflow.client() as api:
        run_id = d.trigger(api, "ingest_transactions", {"day": today.isoformat()})
        console.print(f"ingesting {today} (drifted): {run_id}")
        if d.wait_for_run(api, "ingest_transactions", run_id) != "success":
            raise typer.Exit(1)
        started = api.get(f"/dags/ingest_transactions/dagRuns/{run_id}").json()["start_date"]
        with console.status("build_features (woken by the ingest's Asset event)…"):
            state = d.wait_for_features_after(api, started)
        if state != "success":
            console.print("[red]build_features failed[/]: see the Airflow UI")
            raise typer.Exit(1)
        run_id = d.trigger(api, "monitor_drift", {"day": today.isoformat()})
    console.print(f"monitor_drift started for {today}: {run_id}")
    console.print(
        f"watch it: {airflow.base_url}/dags/monitor_drift (retrain branch) -> "
        f"{airflow.base_url}/dags/train_model -> {airflow.base_url}/dags/deploy_model; "
        f"then `python -m pipelines demo` again shows the new model version."
    )
    if settings.retrain_policy == "label-aware":
        console.print(
            "retrain policy label-aware: an input-drift retrain is a train_model run queued "
            "until its training window holds the drifted days with their labels (its note and "
            "run_after say when); FRAUD_RETRAIN_POLICY=first-alert in .env retrains at once."
        )
