"""The docker-compose deployment checked on a real Docker engine: ``make compose-check``.

``run_compose_check`` builds the images (Docker's layer cache makes an unchanged image cost
seconds), starts the stack with ``up -d``, waits for every health check, then walks the user's
journey against the containers and takes the stack down with its volumes:

1. the Airflow login (the generated password, read from the containers' shared home) and the
   REST API behind it;
2. the catchup that starts by itself: ingests, then ``build_features``, then the first
   ``train_model``, then ``deploy_model``, each phase timed;
3. the deployed Bento answering ``/score`` (with the API key) as model version 1, and
   ``model_info`` naming that Bento;
4. a DAG run triggered over REST (``monitor_drift`` of the newest day: whylogs in the
   containers) that succeeds;
5. the registered model in MLflow's PostgreSQL database, the online features in Redis.

It needs a Docker engine and compose (v2 ``docker compose`` or v1 ``docker-compose``); without
an engine it raises ``ComposeCheckError`` before anything else. The env file compose reads is
rendered from ``.env.example`` with fresh secrets in place of every ``change-me`` and with every
``${NAME}`` resolved (compose v1 does not interpolate inside an env file).
"""

from __future__ import annotations

import datetime as dt
import io
import json
import secrets
import shutil
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from dotenv import dotenv_values

from pipelines.config import PROJECT_ROOT
from pipelines.platform.airflow import Login, failure_report, rest_client

PLACEHOLDER = "change-me"
COMPOSE_FILE = PROJECT_ROOT / "docker-compose.yml"
LOCAL_IMAGES_FILE = PROJECT_ROOT / "deploy" / "compose.local-images.yml"
ENV_EXAMPLE = PROJECT_ROOT / ".env.example"
# Inside the containers: the shared volume's Airflow home (FRAUD_HOME=/var/fraud).
PASSWORDS_FILE = "/var/fraud/airflow/simple_auth_manager_passwords.json.generated"
# The journey, in the order the DAGs run it by themselves.
JOURNEY_DAGS = ("ingest_transactions", "build_features", "train_model", "deploy_model")


class ComposeCheckError(RuntimeError):
    """The stack or the journey failed; the message says where and what to look at."""


def render_env_file(
    example: Path, target: Path, overrides: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Write ``example``'s variables to ``target`` with every placeholder replaced by a fresh
    secret, ``overrides`` applied, and every ``${NAME}`` resolved; returns the values."""
    raw = dotenv_values(example, interpolate=False)
    lines = []
    for name, value in raw.items():
        if overrides and name in overrides:
            value = overrides[name]
        elif value == PLACEHOLDER:
            value = secrets.token_urlsafe(18)  # URL-safe: it goes into database URLs
        lines.append(f"{name}={value}")
    # python-dotenv resolves ${NAME} from the values above it first, then from os.environ.
    values = {k: v or "" for k, v in dotenv_values(stream=io.StringIO("\n".join(lines))).items()}
    target.parent.mkdir(parents=True, exist_ok=True)
    target.touch(mode=0o600)
    target.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
    return values


def docker_engine() -> str:
    """The engine's version; raises when no Docker engine answers."""
    if shutil.which("docker") is None:
        raise ComposeCheckError("no Docker engine: the `docker` command is not on PATH")
    info = subprocess.run(
        ["docker", "info", "--format", "{{.ServerVersion}}"],
        capture_output=True,
        text=True,
        check=False,
    )
    version = info.stdout.strip()
    if info.returncode != 0 or not version:
        reason = (info.stderr.strip() or info.stdout.strip()).splitlines()[-1:]
        raise ComposeCheckError(
            f"no Docker engine answers ({' '.join(reason) or 'docker info failed'}): start one "
            "(dockerd, or Docker Desktop) or point DOCKER_HOST at it"
        )
    return version


def compose_command() -> list[str]:
    """``docker compose`` (v2) where it exists, else ``docker-compose`` (v1)."""
    for command in (["docker", "compose"], ["docker-compose"]):
        if shutil.which(command[0]) is None:
            continue
        probe = subprocess.run([*command, "version"], capture_output=True, check=False)
        if probe.returncode == 0:
            return command
    raise ComposeCheckError("neither `docker compose` (v2) nor `docker-compose` (v1) is installed")


@dataclass
class Phase:
    name: str
    seconds: float
    detail: str


@dataclass
class ComposeStack:
    """One compose project: its files, its rendered env file, and the commands on it."""

    compose: list[str]
    files: Sequence[Path]
    env_file: Path
    env: dict[str, str]
    project_dir: Path = PROJECT_ROOT

    def command(self, *args: str) -> list[str]:
        files = [arg for path in self.files for arg in ("-f", str(path))]
        return [
            *self.compose,
            "--project-directory",
            str(self.project_dir),
            "--env-file",
            str(self.env_file),
            *files,
            *args,
        ]

    def run(self, *args: str, capture: bool = False, check: bool = True) -> str:
        done = subprocess.run(
            self.command(*args),
            cwd=self.project_dir,
            capture_output=capture,
            text=True,
            check=False,
        )
        if check and done.returncode != 0:
            detail = (done.stderr or "")[-2000:] if capture else ""
            raise ComposeCheckError(f"`{' '.join(args)}` exited {done.returncode}\n{detail}")
        return done.stdout if capture else ""

    def exec(self, service: str, *command: str) -> str:
        return self.run("exec", "-T", service, *command, capture=True)

    def states(self) -> dict[str, tuple[str, str, int]]:
        """Service name → (state, health, exit code) of each container of the project."""
        ids = self.run("ps", "-q", capture=True).split()
        if not ids:
            return {}
        fmt = (
            '{{index .Config.Labels "com.docker.compose.service"}} {{.State.Status}} '
            "{{if .State.Health}}{{.State.Health.Status}}{{else}}-{{end}} {{.State.ExitCode}}"
        )
        out = subprocess.run(
            ["docker", "inspect", "--format", fmt, *ids],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        states = {}
        for line in out.splitlines():
            service, state, health, code = line.split()
            states[service] = (state, health, int(code))
        return states

    def logs(self, service: str, lines: int = 60) -> str:
        return self.run("logs", "--no-color", "--tail", str(lines), service, capture=True)


@dataclass
class JourneyReport:
    engine: str
    compose: str
    phases: list[Phase] = field(default_factory=list)

    def table(self) -> str:
        width = max(len(p.name) for p in self.phases)
        rows = [f"{p.name:<{width}}  {p.seconds:8.1f} s  {p.detail}" for p in self.phases]
        total = sum(p.seconds for p in self.phases)
        return "\n".join([*rows, f"{'total':<{width}}  {total:8.1f} s"])


def wait_healthy(
    stack: ComposeStack,
    say: Callable[[str], None],
    timeout: float,
    one_shot: Sequence[str] = ("airflow-init",),
) -> list[str]:
    """Wait until every long-running container is healthy (or running, if it has no health
    check) and every one-shot container exited 0; returns the services. Fails at once on an
    unhealthy container or a failed one-shot, with the end of its log."""
    start = time.monotonic()
    last_report = 0.0
    while True:
        states = stack.states()
        pending = []
        for service, (state, health, code) in sorted(states.items()):
            if service in one_shot:
                if state == "exited" and code != 0:
                    raise ComposeCheckError(f"{service} exited {code}:\n{stack.logs(service)}")
                if state != "exited":
                    pending.append(service)
            elif health == "unhealthy" or state in ("exited", "dead"):
                raise ComposeCheckError(
                    f"{service} is {health if health == 'unhealthy' else state}:\n"
                    f"{stack.logs(service)}"
                )
            elif health not in ("healthy", "-") or state != "running":
                pending.append(service)
        if states and not pending:
            return sorted(states)
        elapsed = time.monotonic() - start
        if elapsed > timeout:
            raise ComposeCheckError(f"not healthy after {timeout:.0f} s: {', '.join(pending)}")
        if elapsed - last_report >= 15:
            say(f"  {elapsed:5.0f} s  waiting for: {', '.join(pending) or 'the containers'}")
            last_report = elapsed
        time.sleep(3)


def _runs(api: httpx.Client, dag_id: str) -> list[dict]:
    response = api.get(f"/dags/{dag_id}/dagRuns", params={"limit": 100, "order_by": "-start_date"})
    response.raise_for_status()
    return response.json()["dag_runs"]


def _states(runs: list[dict]) -> str:
    counts = Counter(r["state"] for r in runs)
    return ", ".join(f"{n} {state}" for state, n in sorted(counts.items())) or "no run yet"


def wait_for_journey(
    api: httpx.Client, say: Callable[[str], None], timeout: float
) -> dict[str, float]:
    """Wait for the first successful run of each DAG of the journey, in order; returns the
    seconds from the call to each. A failed run of the DAG being waited for fails the check."""
    start = time.monotonic()
    reached: dict[str, float] = {}
    last_report = 0.0
    for dag_id in JOURNEY_DAGS:
        while True:
            runs = _runs(api, dag_id)
            if any(r["state"] == "success" for r in runs):
                reached[dag_id] = time.monotonic() - start
                say(f"  {reached[dag_id]:5.0f} s  first {dag_id} run succeeded")
                break
            failed = [r["dag_run_id"] for r in runs if r["state"] == "failed"]
            if failed:
                raise ComposeCheckError(f"failed: {failure_report(api, dag_id, failed[0])}")
            elapsed = time.monotonic() - start
            if elapsed > timeout:
                raise ComposeCheckError(f"no {dag_id} run succeeded within {timeout:.0f} s")
            if elapsed - last_report >= 30:
                progress = {d: _states(_runs(api, d)) for d in JOURNEY_DAGS}
                runs_so_far = "; ".join(f"{d}: {states}" for d, states in progress.items())
                say(f"  {elapsed:5.0f} s  waiting for {dag_id} ({runs_so_far})")
                last_report = elapsed
            time.sleep(5)
    return reached


def trigger_and_wait(api: httpx.Client, dag_id: str, conf: dict, timeout: float) -> str:
    """Trigger ``dag_id`` as the UI's Trigger button does and wait for the run to end."""
    response = api.post(f"/dags/{dag_id}/dagRuns", json={"logical_date": None, "conf": conf})
    response.raise_for_status()
    run_id = response.json()["dag_run_id"]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = api.get(f"/dags/{dag_id}/dagRuns/{run_id}").json()["state"]
        if state in ("success", "failed"):
            if state == "failed":
                raise ComposeCheckError(f"failed: {failure_report(api, dag_id, run_id)}")
            return run_id
        time.sleep(5)
    raise ComposeCheckError(f"{dag_id} run {run_id} did not end within {timeout:.0f} s")


def score_one(url: str, api_key: str) -> dict:
    """POST one payment of the simulated world's first card, made now, to ``/score``."""
    payment = {
        "transaction_id": 10**12,
        "customer_id": 0,
        "terminal_id": 0,
        "tx_amount": 42.5,
        "tx_datetime": dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat(),
    }
    response = httpx.post(
        f"{url}/score",
        json={"transactions": [payment]},
        headers={"X-API-Key": api_key},
        timeout=60,
        trust_env=False,
    )
    if response.status_code != 200:
        raise ComposeCheckError(f"/score answered {response.status_code}: {response.text[:500]}")
    return response.json()[0]


def _wait_http(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=5, trust_env=False).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(3)
    raise ComposeCheckError(f"{url} did not answer 200 within {timeout:.0f} s")


def run_compose_check(
    say: Callable[[str], None],
    *,
    local_images: bool = False,
    overrides: Mapping[str, str] | None = None,
    state_dir: Path,
    keep: bool = False,
    timeout: float = 3600.0,
) -> JourneyReport:
    """Build, start, check and (unless ``keep``) take down the compose stack; see the module."""
    engine = docker_engine()  # first: no engine, no check
    compose = compose_command()
    version = subprocess.run([*compose, "version", "--short"], capture_output=True, text=True)
    report = JourneyReport(engine=engine, compose=version.stdout.strip())
    say(f"Docker engine {engine}, compose {report.compose} ({' '.join(compose)})")
    files = [COMPOSE_FILE, *([LOCAL_IMAGES_FILE] if local_images else [])]
    env_file = state_dir / "compose.env"
    env = render_env_file(ENV_EXAMPLE, env_file, overrides)
    stack = ComposeStack(compose, files, env_file, env)
    say(f"env file: {env_file} (fresh secrets)")

    def phase(name: str, started: float, detail: str) -> None:
        report.phases.append(Phase(name, time.monotonic() - started, detail))
        say(f"[{name}] {report.phases[-1].seconds:.1f} s  {detail}")

    t = time.monotonic()
    say("building the images (cached layers are reused)…")
    stack.run("build")
    phase("build", t, "images built")
    up_started = time.monotonic()
    try:
        say("starting the stack (up -d)…")
        stack.run("up", "-d")
        services = wait_healthy(stack, say, timeout=900)
        phase("up", up_started, f"{len(services)} containers healthy: {', '.join(services)}")
        _journey(stack, say, phase, timeout)
    finally:
        if keep:
            say(f"kept running; stop it with: {' '.join(stack.command('down', '-v'))}")
        else:
            t = time.monotonic()
            stack.run("down", "-v", check=False)
            phase("down", t, "containers and volumes removed")
    return report


def _journey(stack: ComposeStack, say, phase, timeout: float) -> None:
    port = stack.env.get("FRAUD_AIRFLOW_PORT", "8080")
    airflow_url = f"http://127.0.0.1:{port}"
    t = time.monotonic()
    passwords = json.loads(stack.exec("airflow-api-server", "cat", PASSWORDS_FILE))
    user = stack.env.get("FRAUD_AIRFLOW_USER", "admin")
    with rest_client(airflow_url, Login(user, passwords[user])) as api:
        dags = api.get("/dags", params={"limit": 100}).json()["dags"]
        paused = [d["dag_id"] for d in dags if d["is_paused"]]
        phase("login", t, f"{user} logged in; {len(dags)} DAGs, paused: {paused or 'none'}")
        t = time.monotonic()
        reached = wait_for_journey(api, say, timeout)
        phase("catchup → first model", t, ", ".join(f"{d} +{s:.0f} s" for d, s in reached.items()))
        t = time.monotonic()
        serving = f"http://127.0.0.1:{stack.env.get('FRAUD_SERVING_PORT', '3000')}"
        _wait_http(f"{serving}/readyz", timeout=600)
        key = stack.env["FRAUD_SERVING_API_KEY"]
        score = score_one(serving, key)
        info = httpx.post(
            f"{serving}/model_info", json={}, headers={"X-API-Key": key}, timeout=30,
            trust_env=False,
        ).json()  # fmt: skip
        if str(score["model_version"]) != "1" or str(info.get("version")) != "1":
            raise ComposeCheckError(f"expected model version 1: /score {score}, info {info}")
        if not (info.get("bento") or "").endswith("model-v1"):
            raise ComposeCheckError(f"the served model is not the deployed Bento: {info}")
        phase(
            "first prediction",
            t,
            f"/score: p={score['fraud_probability']:.4f} {score['decision']} "
            f"v{score['model_version']} from Bento {info['bento']}",
        )
        t = time.monotonic()
        day = _newest_ingested_day(api)
        run_id = trigger_and_wait(api, "monitor_drift", {"day": day}, timeout=1200)
        phase("REST trigger", t, f"monitor_drift {run_id} (day {day}) succeeded")
    t = time.monotonic()
    user_pg = stack.env.get("POSTGRES_USER", "fraud")
    versions = stack.exec(
        "postgres", "psql", "-h", "127.0.0.1", "-U", user_pg, "-d", "mlflow", "-tAc",
        "select name || ' v' || version from model_versions order by version",
    ).split()  # fmt: skip
    keys = int(stack.exec("redis", "redis-cli", "dbsize").strip() or 0)
    if not versions or keys == 0:
        raise ComposeCheckError(f"MLflow versions {versions}, Redis keys {keys}")
    phase("stores", t, f"MLflow on PostgreSQL: {' '.join(versions)}; Redis: {keys} keys")


def _newest_ingested_day(api: httpx.Client) -> str:
    runs = [r for r in _runs(api, "ingest_transactions") if r["state"] == "success"]
    newest = max(r["data_interval_start"] for r in runs)
    return newest[:10]
