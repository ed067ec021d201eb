"""docker-compose.yml, its local-images override, Dockerfile and .env.example checked without
Docker.

The deployment is checked statically against the code it runs: the compose file parses;
every file, script and entry point it names exists; each service command parses with the CLI
it calls; ports, host names and databases agree across services, .env.example, the init
script and the Settings fields.
"""

from __future__ import annotations

import importlib.util
import re
import shlex
from urllib.parse import urlsplit

import pytest
import typer
import yaml
from dotenv import dotenv_values

from pipelines.config import PROJECT_ROOT, Settings
from pipelines.platform.airflow import COMPONENTS, AirflowServices
from pipelines.platform.cli import services_app

COMPOSE_FILE = PROJECT_ROOT / "docker-compose.yml"
ENV_EXAMPLE = PROJECT_ROOT / ".env.example"
DOCKERFILE = PROJECT_ROOT / "Dockerfile"
INIT_SQL = PROJECT_ROOT / "deploy" / "postgres" / "init.sql"
LOCAL_IMAGES = PROJECT_ROOT / "deploy" / "compose.local-images.yml"
PLACEHOLDER = "change-me"
PG_URL_VARS = (
    "FRAUD_AIRFLOW_DATABASE_URL",
    "FRAUD_FEAST_REGISTRY_URL",
    "FRAUD_OPTUNA_STORAGE",
    "MLFLOW_BACKEND_STORE_URI",
)
SETTINGS_VARS = {f"FRAUD_{name.upper()}" for name in Settings.model_fields}
_VAR = re.compile(r"\$\$|\$\{(?P<name>\w+)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's interpolation: ${VAR}, ${VAR:-default}, ${VAR:?error}, $$ for a literal $."""

    def replace(match: re.Match) -> str:
        if match.group(0) == "$$":
            return "$"
        name, op, arg = match["name"], match["op"], match["arg"]
        if env.get(name):
            return env[name]
        if op in (":-", "-"):
            return arg
        raise AssertionError(f"${{{name}}} is not set by .env.example ({arg or 'no default'})")

    return _VAR.sub(replace, value)


def _render(node: object, env: dict[str, str]) -> object:
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, list):
        return [_render(item, env) for item in node]
    if isinstance(node, dict):
        return {key: _render(value, env) for key, value in node.items()}
    return node


@pytest.fixture(scope="module")
def raw_compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def env_example() -> dict[str, str]:
    values = dotenv_values(ENV_EXAMPLE)  # interpolates ${POSTGRES_PASSWORD} as compose does
    assert all(v is not None for v in values.values()), values
    return dict(values)


@pytest.fixture(scope="module")
def compose(raw_compose, env_example) -> dict:
    """The compose file as `docker compose config` would see it with .env = .env.example."""
    return _render(raw_compose, env_example)


@pytest.fixture(scope="module")
def services(compose) -> dict[str, dict]:
    return compose["services"]


def _app_services(services: dict) -> dict[str, dict]:
    return {name: s for name, s in services.items() if s.get("image") == "fraud-platform:latest"}


def _env(service: dict) -> dict[str, str]:
    return {k: str(v) for k, v in (service.get("environment") or {}).items()}


def _option(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


def _healthcheck_argv(service: dict) -> list[str]:
    test = service["healthcheck"]["test"]
    if test[0] == "CMD-SHELL":
        return shlex.split(test[1])
    assert test[0] == "CMD", test
    return test[1:]


def _init_databases() -> set[str]:
    return set(re.findall(r"CREATE DATABASE (\w+)", INIT_SQL.read_text(), flags=re.IGNORECASE))


# --- the files ---------------------------------------------------------------------------
def test_compose_names_every_expected_service(services):
    expected = {
        "postgres",
        "redis",
        "airflow-init",
        *(f"airflow-{c}" for c in COMPONENTS),
        "mlflow",
        "bentoml",
        "spark-master",
        "spark-worker",
    }
    assert set(services) == expected


def test_every_referenced_file_exists(services):
    for name, service in services.items():
        build = service.get("build")
        if build:
            context = PROJECT_ROOT / build["context"]
            assert (context / build.get("dockerfile", "Dockerfile")).is_file(), name
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith((".", "/")):  # a bind mount, not a named volume
                assert (PROJECT_ROOT / source).exists(), (name, source)
    assert INIT_SQL.is_file()


def test_dockerfile_builds_from_the_lock_with_java(compose):
    text = DOCKERFILE.read_text()
    for line in text.splitlines():
        if line.startswith("COPY ") and "--from" not in line:
            for source in line.split()[1:-1]:
                assert source == "." or (PROJECT_ROOT / source).exists(), line
    assert "requirements.lock" in text and "uv pip install" in text
    assert "openjdk-17-jre-headless" in text  # Spark's JVM
    assert "--no-deps -e ." in text  # the project itself, editable: PROJECT_ROOT stays /app
    # The image's home is the shared volume's mount point.
    (home,) = re.findall(r"^ENV FRAUD_HOME=(\S+)$", text, flags=re.MULTILINE)
    for name, service in _app_services(compose["services"]).items():
        assert _env(service)["FRAUD_HOME"] == home, name
        assert f"fraud-home:{home}" in service["volumes"], name
    assert "fraud-home" in compose["volumes"]


def test_no_secret_is_committed(raw_compose, env_example):
    text = COMPOSE_FILE.read_text()
    secret_names = [n for n in env_example if re.search(r"PASSWORD|API_KEY|SECRET", n)]
    assert set(secret_names) == {"POSTGRES_PASSWORD", "FRAUD_SERVING_API_KEY"}
    for name in secret_names:
        assert env_example[name] == PLACEHOLDER, name
        # Compose takes it from .env or refuses to start; no default value in the file.
        assert f"{name}: ${{{name}:?" in text, name
    for ignore in (".gitignore", ".dockerignore"):
        assert ".env" in (PROJECT_ROOT / ignore).read_text().splitlines(), ignore


# --- entry points ------------------------------------------------------------------------
def _check_python_module_command(argv: list[str], env: dict[str, str]) -> None:
    assert argv[:2] == ["python", "-m"], argv
    module, args = argv[2], argv[3:]
    assert importlib.util.find_spec(module) is not None, module
    assert module == "pipelines.platform.cli", f"unexpected entry point {module}"
    commands = typer.main.get_command(services_app).commands
    assert args[0] in commands, f"no command {args[0]!r} in services_app"
    command = commands[args[0]]
    # Parses (option names, types, argument count, callbacks, options read from the service's
    # environment) without running the command.
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        command.make_context(args[0], list(args[1:]))


def test_every_service_command_is_a_known_entry_point(services):
    for service in _app_services(services).values():
        _check_python_module_command(service["command"], _env(service))


def test_every_app_healthcheck_is_a_known_entry_point(services):
    for name, service in _app_services(services).items():
        if name == "airflow-init":
            assert "healthcheck" not in service and service["restart"] == "no"
            continue
        _check_python_module_command(_healthcheck_argv(service), _env(service))


def test_bentoml_serves_the_deployed_bento(services, tmp_path, monkeypatch):
    """The serving service runs ``scoring-server``: ``serving/serve.py`` on the newest
    deployed Bento, or on the source tree awaiting the first deploy when none is."""
    from typer.testing import CliRunner

    from pipelines.platform import cli, scoring

    argv = services["bentoml"]["command"]
    assert argv[3] == "scoring-server"
    execs: list[tuple[list[str], dict[str, str]]] = []
    monkeypatch.setattr(cli.os, "execve", lambda path, command, env: execs.append((command, env)))
    monkeypatch.setenv("FRAUD_HOME", str(tmp_path))
    cli.get_settings.cache_clear()
    try:
        assert CliRunner().invoke(services_app, argv[3:]).exit_code == 0
        scoring.record_deployed(cli.get_settings(), ["fraud_scoring:model-v1"])
        monkeypatch.setattr(scoring, "bento_exists", lambda settings, tag: True)
        assert CliRunner().invoke(services_app, argv[3:]).exit_code == 0
    finally:
        cli.get_settings.cache_clear()
    (before, before_env), (after, after_env) = execs
    tail = ["--host", "0.0.0.0", "--port", "3000"]
    assert before[1:] == ["-m", "serving.serve", scoring.SERVICE, *tail]
    assert before_env["FRAUD_SERVING_AWAIT_DEPLOY"] == "true"
    assert after[1:] == ["-m", "serving.serve", "fraud_scoring:model-v1", *tail]
    assert "FRAUD_SERVING_AWAIT_DEPLOY" not in after_env
    assert after_env["BENTOML_HOME"] == str(tmp_path / "bentoml")  # the shared volume's store


def test_no_top_level_name_key(raw_compose, env_example):
    # compose v1 rejects `name:`; the project name is COMPOSE_PROJECT_NAME in .env.
    assert "name" not in raw_compose
    assert env_example["COMPOSE_PROJECT_NAME"] == "fraud-platform"


def test_local_images_override_builds_postgres_and_redis(services, env_example):
    override = _render(yaml.safe_load(LOCAL_IMAGES.read_text()), env_example)
    assert set(override["services"]) == {"postgres", "redis"}
    for name, service in override["services"].items():
        context = PROJECT_ROOT / service["build"]["context"]
        assert (context / "Dockerfile").is_file(), name
        assert service["build"]["args"]["BASE_IMAGE"] == env_example["DEBIAN_IMAGE"]
        assert service["image"].endswith(":local"), name
    # The init script and healthcheck of the base file work against the local PostgreSQL: it
    # runs /docker-entrypoint-initdb.d/*.sql and trusts loopback, as the official image does.
    entrypoint = (PROJECT_ROOT / "deploy" / "postgres" / "entrypoint.sh").read_text()
    assert "/docker-entrypoint-initdb.d/*.sql" in entrypoint
    assert "host all all 127.0.0.1/32 trust" in entrypoint
    # Its own data volume: Debian bookworm's PostgreSQL 15 cannot open a 16 data directory.
    (volume,) = override["services"]["postgres"]["volumes"]
    assert volume.split(":")[1] == services["postgres"]["volumes"][0].split(":")[1]
    assert volume.split(":")[0] in override["volumes"]


def test_airflow_services_run_every_component(services):
    for component in COMPONENTS:
        argv = services[f"airflow-{component}"]["command"]
        assert argv[-2:] == ["airflow-component", component]
        health = _healthcheck_argv(services[f"airflow-{component}"])
        assert health[-2:] == ["airflow-health", component]


# --- configuration -------------------------------------------------------------------------
def test_every_fraud_variable_is_a_settings_field(raw_compose, env_example):
    used = set(env_example)
    for service in raw_compose["services"].values():
        used |= set(service.get("environment") or {})
    used |= set(re.findall(r"\$\{(\w+)", COMPOSE_FILE.read_text()))
    fraud = {v for v in used if v.startswith("FRAUD_")}
    assert fraud, "no FRAUD_* variable found"
    assert fraud <= SETTINGS_VARS, sorted(fraud - SETTINGS_VARS)


def test_env_example_and_compose_agree(raw_compose, env_example):
    """Every variable compose reads (from either file) is in .env.example and a default never
    contradicts it."""
    text = COMPOSE_FILE.read_text() + LOCAL_IMAGES.read_text()
    for match in _VAR.finditer(text):
        if match.group(0) == "$$":
            continue
        name, op, arg = match["name"], match["op"], match["arg"]
        assert name in env_example, f"{name} is read by compose but not in .env.example"
        if op == ":-":
            assert env_example[name] == arg, (name, env_example[name], arg)
    # And each .env.example variable reaches a service (none is dead configuration).
    for name in env_example.keys() - {"COMPOSE_PROJECT_NAME"}:  # compose itself reads that
        assert f"${{{name}" in text, f"{name} in .env.example is not used by compose"


def test_the_production_values_are_valid_settings(compose, tmp_path, monkeypatch):
    env = _env(compose["services"]["airflow-scheduler"])
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("FRAUD_HOME", str(tmp_path))  # /var/fraud does not exist here
    settings = Settings(_env_file=None)
    assert settings.feast_online_store == "redis"
    assert settings.spark_master.startswith("spark://")
    airflow = AirflowServices(settings).env()
    # The scheduler's task processes reach the API server by its service name...
    assert airflow["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == (
        f"http://airflow-api-server:{settings.airflow_port}/execution/"
    )
    # ...and Airflow's async engine uses an installed driver (psycopg 3, not asyncpg).
    assert airflow["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC"].startswith("postgresql+psycopg:")


def test_postgres_urls_match_the_server_and_the_init_script(services, env_example):
    databases = _init_databases()
    used = set()
    for var in PG_URL_VARS:
        url = urlsplit(env_example[var])
        assert (url.hostname, url.port) == ("postgres", 5432), var
        assert url.username == env_example["POSTGRES_USER"], var
        assert url.password == env_example["POSTGRES_PASSWORD"], var
        database = url.path.lstrip("/")
        assert database in databases, f"{var} names {database}, not created by the init script"
        used.add(database)
    assert used == databases  # and the script creates nothing nobody uses
    postgres = services["postgres"]
    assert postgres["environment"]["POSTGRES_USER"] == env_example["POSTGRES_USER"]
    assert _option(_healthcheck_argv(postgres), "-d") in databases
    assert any(
        v.endswith("/docker-entrypoint-initdb.d/10-databases.sql:ro") for v in postgres["volumes"]
    )


def test_ports_and_host_names_agree(services, env_example):
    def container_ports(service: dict) -> set[int]:
        return {int(str(p).split(":")[-1]) for p in service.get("ports", [])}

    # Airflow: the API server binds FRAUD_AIRFLOW_HOST, which is its service name.
    assert env_example["FRAUD_AIRFLOW_HOST"] == "airflow-api-server"
    assert container_ports(services["airflow-api-server"]) == {
        int(env_example["FRAUD_AIRFLOW_PORT"])
    }

    # MLflow: the tracking URI names the service and the port its command binds.
    mlflow_argv = services["mlflow"]["command"]
    uri = urlsplit(env_example["FRAUD_MLFLOW_TRACKING_URI"])
    port = int(_option(mlflow_argv, "--port"))
    assert (uri.hostname, uri.port) == ("mlflow", port)
    assert container_ports(services["mlflow"]) == {port}
    assert f"mlflow:{port}" in _option(mlflow_argv, "--allowed-hosts").split(",")
    assert f":{port}/health" in _healthcheck_argv(services["mlflow"])[-1]
    assert env_example["MLFLOW_ARTIFACTS_DESTINATION"].startswith(
        _env(services["mlflow"])["FRAUD_HOME"]
    )  # artifacts on the persistent volume

    # Spark: FRAUD_SPARK_MASTER is the master's service and port; the worker registers there.
    master_argv = services["spark-master"]["command"]
    master_url = f"spark://spark-master:{_option(master_argv, '--port')}"
    assert _option(master_argv, "--host") == "spark-master"
    assert env_example["FRAUD_SPARK_MASTER"] == master_url
    assert master_url in services["spark-worker"]["command"]
    webui = int(_option(master_argv, "--webui-port"))
    assert container_ports(services["spark-master"]) == {webui}
    for name in ("spark-master", "spark-worker"):
        health = _healthcheck_argv(services[name])
        assert urlsplit(_option(health, "--webui-url")).port == webui, name

    # Redis: the online store's connection string names the redis service.
    assert env_example["FRAUD_FEAST_REDIS_URL"].split(",")[0] == "redis:6379"

    # BentoML: the published port is the one it serves, is checked on, and clients use.
    bento_argv = services["bentoml"]["command"]
    bento_port = int(_option(bento_argv, "--port"))
    assert env_example["FRAUD_SERVING_HOST"] == "bentoml"
    assert int(env_example["FRAUD_SERVING_PORT"]) == bento_port
    assert container_ports(services["bentoml"]) == {bento_port}
    # Alive before the first deploy (ready only once a model is loaded): nothing waits on it.
    assert f":{bento_port}/livez" in _healthcheck_argv(services["bentoml"])[-1]

    # No host port is published twice.
    published = [str(p).split(":")[0] for s in services.values() for p in s.get("ports", [])]
    assert len(published) == len(set(published)), published


def test_start_order_is_sound(services):
    long_running = {n for n, s in services.items() if s.get("restart") != "no"}
    for name in long_running:
        assert "healthcheck" in services[name], f"{name} has no healthcheck"
    for name, service in services.items():
        for dependency, spec in (service.get("depends_on") or {}).items():
            assert dependency in services, (name, dependency)
            if spec["condition"] == "service_healthy":
                assert "healthcheck" in services[dependency], (name, dependency)
            else:
                assert spec["condition"] == "service_completed_successfully"
                assert services[dependency].get("restart") == "no", (name, dependency)
    for component in COMPONENTS:
        deps = services[f"airflow-{component}"]["depends_on"]
        assert deps["airflow-init"]["condition"] == "service_completed_successfully"

    # No cycle: a topological order exists.
    remaining = {n: set(s.get("depends_on") or {}) for n, s in services.items()}
    while remaining:
        ready = [n for n, deps in remaining.items() if not deps & remaining.keys()]
        assert ready, f"dependency cycle among {sorted(remaining)}"
        for n in ready:
            del remaining[n]
