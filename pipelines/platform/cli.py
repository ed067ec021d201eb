"""The platform's service processes, one command tree: ``python -m pipelines services``.

``up``, ``down`` and ``status`` start, stop and list the whole local stack in the background
(what ``make up`` / ``make down`` / ``make status`` call); the other commands are the entry
points of the deployed services, what each docker-compose service runs.

Every long-running entry point *replaces* this Python process (``exec``) with the exact
command the native code starts as a tracked process (``AirflowServices``, ``MlflowServer``,
``SparkStandalone``, ``DbtDocsSite``, ``FeastUI``), so a container runs what the test suite runs
natively, and signals from the container runtime reach the service itself. The ``*-health``
commands are the containers' healthchecks; they exit 0 when healthy, 1 otherwise.

    python -m pipelines services --help
    python -m pipelines.platform.cli --help     # the same app (docker-compose calls this)
"""

from __future__ import annotations

import os
from pathlib import Path

import typer
from rich.console import Console

from pipelines.config import get_settings

services_app = typer.Typer(
    help="The platform's services: start, stop and list the local stack (up, down, status), "
    "the entry points and healthchecks each docker-compose service runs, and a local Spark "
    "standalone cluster.",
    no_args_is_help=True,
)
console = Console()

# Which entry of Airflow's /monitor/health answers for which component. The API server has no
# entry of its own: that it answers with a healthy metadata DB is its health.
AIRFLOW_HEALTH_KEY = {
    "api-server": "metadatabase",
    "scheduler": "scheduler",
    "dag-processor": "dag_processor",
    "triggerer": "triggerer",
}


def _exec(command: list[str], env: dict[str, str]) -> None:
    console.print(" ".join(command), style="dim", highlight=False)
    os.execve(command[0], command, env)


def _component(name: str) -> str:
    if name not in AIRFLOW_HEALTH_KEY:
        raise typer.BadParameter(f"unknown component {name!r}; one of {list(AIRFLOW_HEALTH_KEY)}")
    return name


# --- The local stack (make up / make down / make status) -----------------------------------
def _stack(settings):
    from pipelines.platform.airflow import AirflowServices
    from pipelines.platform.lineage import DbtDocsSite, FeastUI
    from pipelines.platform.mlflow import MlflowServer
    from pipelines.platform.scoring import ScoringService
    from pipelines.platform.traffic import PaymentNetwork

    mlflow = MlflowServer(
        home=settings.home,
        backend_store_uri=settings.tracking_uri,
        artifacts_destination=str(settings.mlflow_dir / "artifacts"),
        port=settings.mlflow_ui_port,
    )
    lineage = (DbtDocsSite(settings), FeastUI(settings))
    scoring = ScoringService(settings)
    return AirflowServices(settings), mlflow, scoring, lineage, PaymentNetwork(settings)


@services_app.command("up")
def services_up() -> None:
    """Initialise ./var, start Airflow, the MLflow UI, the scoring API, the dbt docs site and
    the Feast UI; print the URLs."""
    from pipelines.platform.runtime import initialise

    settings = initialise(get_settings())
    settings.mlflow_dir.mkdir(parents=True, exist_ok=True)
    airflow, mlflow, scoring, (docs, feast_ui), traffic = _stack(settings)
    with console.status("starting Airflow (api-server, scheduler, dag-processor, triggerer)…"):
        airflow.up()
    with console.status("starting the MLflow UI…"):
        mlflow.up()
    with console.status("starting the scoring API (serving.serve)…"):
        serving = scoring.up()
    with console.status("starting the dbt docs site and the Feast UI…"):
        docs.up()
        feast_ui.up()
    replaying = traffic.up()
    login = airflow.login()
    console.print(
        f"[green]Airflow[/]      {airflow.base_url}   login: {login.username} / {login.password}"
    )
    console.print(f"[green]MLflow UI[/]    {mlflow.url}")
    ready = f"serving {serving}" if scoring.ready() else "waiting for the first deploy"
    console.print(f"[green]Scoring API[/]  {scoring.url}/score   ({ready})")
    docs_state = "lineage graph" if docs.published() else "after the first build_features run"
    console.print(f"[green]dbt docs[/]     {docs.url}   ({docs_state})")
    console.print(f"[green]Feast UI[/]     {feast_ui.url}")
    console.print(f"history: the daily ingest backfills from {settings.history_start_date}")
    if replaying:
        console.print(
            f"live traffic: from {settings.live_start} the simulator's payments go to /score at "
            f"their times (log: {traffic.process().log_file}; FRAUD_LIVE_TRAFFIC=false: off)"
        )
    console.print(f"logs: {settings.home / 'logs'}   stop: make down")


@services_app.command("down")
def services_down() -> None:
    """Stop what `up` started (by PID file)."""
    airflow, mlflow, scoring, (docs, feast_ui), traffic = _stack(get_settings())
    stopped = ["traffic-replay"] if traffic.down() else []  # first: it calls the scoring API
    stopped += [*airflow.down(), *(["mlflow-server"] if mlflow.down() else [])]
    stopped += ["bentoml-serve"] if scoring.down() else []
    stopped += ["dbt-docs"] if docs.down() else []
    stopped += ["feast-ui"] if feast_ui.down() else []
    console.print(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")


@services_app.command("status")
def services_status() -> None:
    """Which services run, and Airflow's health."""
    airflow, mlflow, scoring, lineage, traffic = _stack(get_settings())
    others = [mlflow.process(), scoring.process(), *(ui.process() for ui in lineage)]
    others.append(traffic.process())
    for proc in [*airflow.processes(), *others]:
        pid = proc.pid()
        console.print(f"{proc.name:24} {f'running (pid {pid})' if pid else 'stopped'}")
    console.print(f"airflow health: {airflow.health()}")
    console.print(f"scoring API ready: {scoring.ready()}")


# --- Airflow -------------------------------------------------------------------------------
@services_app.command("airflow-init")
def airflow_init() -> None:
    """One-shot: pin the history start, create the secrets and login, migrate the metadata DB.

    Run it once before the components start (compose: ``service_completed_successfully``), so
    that they never race to generate the shared secrets.
    """
    from pipelines.platform.airflow import AirflowServices
    from pipelines.platform.runtime import initialise

    settings = initialise(get_settings())
    airflow = AirflowServices(settings)
    airflow.migrate()
    login = airflow.login()
    console.print(f"Airflow metadata DB migrated; UI {airflow.base_url}")
    console.print(
        f"login: {login.username} (password in "
        f"{settings.airflow_home / 'simple_auth_manager_passwords.json.generated'})"
    )


@services_app.command("airflow-component")
def airflow_component(
    name: str = typer.Argument(..., callback=_component, help="api-server, scheduler, ..."),
) -> None:
    """Run one Airflow component in the foreground, configured as ``AirflowServices`` does."""
    from pipelines.platform.airflow import AirflowServices

    airflow = AirflowServices(get_settings())
    (proc,) = [p for p in airflow.processes() if p.name == f"airflow-{name}"]
    _exec(proc.command, airflow.env())


@services_app.command("airflow-health")
def airflow_health(
    name: str = typer.Argument(..., callback=_component, help="api-server, scheduler, ..."),
) -> None:
    """Exit 0 if the API server reports this component healthy."""
    from pipelines.platform.airflow import AirflowServices

    health = AirflowServices(get_settings()).health() or {}
    status = (health.get(AIRFLOW_HEALTH_KEY[name]) or {}).get("status")
    console.print(f"{name}: {status or 'unreachable'}")
    if status != "healthy":
        raise typer.Exit(1)


# --- MLflow --------------------------------------------------------------------------------
@services_app.command("mlflow-server")
def mlflow_server(
    backend_store_uri: str = typer.Option(
        ..., envvar="MLFLOW_BACKEND_STORE_URI", help="SQLAlchemy URL of the tracking DB."
    ),
    artifacts_destination: str = typer.Option(
        ..., envvar="MLFLOW_ARTIFACTS_DESTINATION", help="Where proxied artifacts are stored."
    ),
    host: str = typer.Option("127.0.0.1", help="Address to bind (0.0.0.0 in a container)."),
    port: int = typer.Option(5000),
    allowed_hosts: str | None = typer.Option(
        None, envvar="MLFLOW_SERVER_ALLOWED_HOSTS", help="Host headers accepted, e.g. mlflow:*."
    ),
) -> None:
    """Run the MLflow tracking server in the foreground (as ``MlflowServer`` starts it)."""
    from pipelines.platform.mlflow import server_command, server_env

    command = server_command(
        backend_store_uri, artifacts_destination, host=host, port=port, allowed_hosts=allowed_hosts
    )
    _exec(command, server_env())


@services_app.command("http-ok")
def http_ok(url: str = typer.Argument(..., help="e.g. http://127.0.0.1:5000/health")) -> None:
    """Exit 0 if ``url`` answers 200 (healthcheck of MLflow and BentoML)."""
    from pipelines.platform.mlflow import healthy

    if not healthy(url):
        console.print(f"{url}: not healthy")
        raise typer.Exit(1)


# --- BentoML --------------------------------------------------------------------------------
@services_app.command("scoring-server")
def scoring_server(
    host: str = typer.Option("127.0.0.1", help="Address to bind (0.0.0.0 in a container)."),
    port: int = typer.Option(3000),
) -> None:
    """Serve the newest deployed Bento in the foreground and follow later deploys (as
    ``ScoringService`` starts it); before the first deploy, hold the port with no model."""
    from pipelines.platform.scoring import serve_command, serve_target

    target, env = serve_target(get_settings())
    _exec(serve_command(target, host, port), env)


# --- Lineage UIs ----------------------------------------------------------------------------
@services_app.command("dbt-docs")
def dbt_docs(
    host: str | None = typer.Option(None, help="Address to bind; default FRAUD_SERVING_HOST."),
    port: int | None = typer.Option(None, help="Port; default FRAUD_DBT_DOCS_PORT."),
) -> None:
    """Serve the dbt docs site (<home>/dbt-docs) in the foreground, as ``DbtDocsSite`` does.

    Until the first build_features run it serves a page saying the docs come with it.
    """
    from pipelines.platform.lineage import DbtDocsSite, docs_server_command, write_placeholder

    settings = get_settings()
    site = DbtDocsSite(settings).directory
    write_placeholder(site)
    command = docs_server_command(
        site, host or settings.serving_host, port or settings.dbt_docs_port
    )
    os.chdir(site)
    _exec(command, dict(os.environ))


@services_app.command("feast-ui")
def feast_ui(
    host: str | None = typer.Option(None, help="Address to bind; default FRAUD_SERVING_HOST."),
    port: int | None = typer.Option(None, help="Port; default FRAUD_FEAST_UI_PORT."),
) -> None:
    """Run the Feast UI in the foreground over the rendered feature_store.yaml (``FeastUI``)."""
    from pipelines.featurestore.repo import write_config
    from pipelines.platform.lineage import FeastUI, feast_ui_command

    settings = get_settings()
    ui = FeastUI(settings)
    command = feast_ui_command(
        write_config(settings), host or settings.serving_host, port or settings.feast_ui_port
    )
    _exec(command, ui.env())


@services_app.command("dbt-docs-generate")
def dbt_docs_generate() -> None:
    """One-shot: ``dbt docs generate`` over the built warehouse, published to <home>/dbt-docs."""
    from pipelines.transform.dbt import generate_docs

    r = generate_docs(get_settings())
    console.print(
        f"dbt docs: {r.nodes} nodes, {r.sources} sources in {r.elapsed_seconds:.1f}s -> {r.path}"
    )


# --- Spark standalone ----------------------------------------------------------------------
@services_app.command("spark-master")
def spark_master(
    host: str = typer.Option("127.0.0.1", help="Address/name the master binds and advertises."),
    port: int = typer.Option(7077),
    webui_port: int = typer.Option(8081),
) -> None:
    """Run a Spark standalone master in the foreground (pyspark's spark-class)."""
    from pipelines.platform.spark import daemon_env, master_command

    _exec(master_command(host, port, webui_port), daemon_env(host))


@services_app.command("spark-worker")
def spark_worker(
    master_url: str = typer.Argument(..., help="spark://host:port"),
    host: str | None = typer.Option(
        "127.0.0.1", help="Address/name to bind and advertise; empty = this machine's address."
    ),
    port: int = typer.Option(7078),
    webui_port: int = typer.Option(8082),
    cores: int = typer.Option(1, help="Cores offered to executors."),
    memory: str = typer.Option("1g", help="Memory offered to executors."),
    work_dir: Path | None = typer.Option(None, help="Executor scratch; default <home>/spark."),
) -> None:
    """Run a Spark standalone worker in the foreground, registered with ``master_url``."""
    from pipelines.platform.spark import daemon_env, worker_command

    work = work_dir or get_settings().home / "spark" / "work"
    work.mkdir(parents=True, exist_ok=True)
    command = worker_command(
        master_url,
        host=host or None,
        port=port,
        webui_port=webui_port,
        cores=cores,
        memory=memory,
        work_dir=work,
    )
    _exec(command, daemon_env(host or None))


@services_app.command("spark-health")
def spark_health(
    webui_url: str = typer.Option("http://127.0.0.1:8081", help="The master's web UI."),
    min_workers: int = typer.Option(0, help="ALIVE workers required."),
) -> None:
    """Exit 0 if the master is ALIVE with at least ``min_workers`` ALIVE workers."""
    from pipelines.platform.spark import alive_workers, master_status

    status = master_status(webui_url)
    workers = len(alive_workers(status))
    console.print(f"master: {(status or {}).get('status', 'unreachable')}, workers: {workers}")
    if not status or status.get("status") != "ALIVE" or workers < min_workers:
        raise typer.Exit(1)


@services_app.command("spark-up")
def spark_up(
    port: int = typer.Option(7077),
    webui_port: int = typer.Option(8081),
    worker_port: int = typer.Option(7078),
    worker_webui_port: int = typer.Option(8082),
    cores: int = typer.Option(1, help="Cores the worker offers."),
    memory: str = typer.Option("1g", help="Memory the worker offers."),
) -> None:
    """Start a local standalone master + worker in the background (PID files in <home>/run)."""
    from pipelines.platform.spark import SparkStandalone

    cluster = SparkStandalone(
        home=get_settings().home,
        master_port=port,
        master_webui_port=webui_port,
        worker_port=worker_port,
        worker_webui_port=worker_webui_port,
        worker_cores=cores,
        worker_memory=memory,
    )
    with console.status("starting Spark master and worker…"):
        cluster.up()
    console.print(f"[green]Spark standalone ready[/]  master {cluster.master_url}")
    console.print(f"  UI: {cluster.webui_url}   use it: FRAUD_SPARK_MASTER={cluster.master_url}")


@services_app.command("spark-down")
def spark_down() -> None:
    """Stop the local standalone cluster ``spark-up`` started (found by its PID files)."""
    from pipelines.platform.spark import SparkStandalone

    stopped = SparkStandalone(home=get_settings().home).down()
    console.print(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")


# --- docker compose -------------------------------------------------------------------------
@services_app.command("compose-check")
def compose_check(
    local_images: bool = typer.Option(
        False, help="Also deploy/compose.local-images.yml (PostgreSQL and Redis from Debian)."
    ),
    set_: list[str] = typer.Option(
        [], "--set", help="KEY=VALUE over .env.example's value (repeatable)."
    ),
    keep: bool = typer.Option(False, help="Leave the stack running (no `down -v`)."),
    timeout: float = typer.Option(3600, help="Seconds the catchup may take to a first model."),
) -> None:
    """Build and start the compose stack on a Docker engine, drive the user's journey in the
    containers (Airflow login, catchup, first model, /score, a REST trigger), then `down -v`.
    Fails (exit 1) when no Docker engine answers."""
    from pipelines.platform.compose import ComposeCheckError, run_compose_check

    overrides = {}
    for item in set_:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise typer.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="--set")
        overrides[name] = value

    def say(line: str) -> None:
        console.print(line, markup=False, highlight=False, soft_wrap=True)

    try:
        report = run_compose_check(
            say,
            local_images=local_images,
            overrides=overrides,
            state_dir=get_settings().home / "compose",
            keep=keep,
            timeout=timeout,
        )
    except ComposeCheckError as error:
        console.print("[red]compose-check failed:[/]", end=" ")
        console.print(str(error), markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    console.print(report.table(), markup=False, highlight=False, soft_wrap=True)
    console.print("[green]compose-check passed[/]")


if __name__ == "__main__":
    services_app(prog_name="python -m pipelines.platform.cli")
