"""`make compose-check` without a Docker engine: the env file it renders, how it judges the
containers' states, and that it fails loudly (never skips) when no engine answers."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import httpx
import pytest
from dotenv import dotenv_values

from pipelines.platform import compose
from pipelines.platform.compose import (
    ENV_EXAMPLE,
    PLACEHOLDER,
    ComposeCheckError,
    docker_engine,
    render_env_file,
    wait_healthy,
)


def test_the_env_file_has_fresh_secrets_and_no_unresolved_reference(tmp_path):
    target = tmp_path / "compose.env"
    values = render_env_file(ENV_EXAMPLE, target, {"FRAUD_HISTORY_DAYS": "40"})
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert dotenv_values(target, interpolate=False) == values
    assert PLACEHOLDER not in "".join(values.values())
    assert "${" not in "".join(values.values())
    assert values["FRAUD_HISTORY_DAYS"] == "40"
    password = values["POSTGRES_PASSWORD"]
    assert f":{password}@postgres:5432/mlflow" in values["MLFLOW_BACKEND_STORE_URI"]
    again = render_env_file(ENV_EXAMPLE, tmp_path / "again.env")
    assert again["POSTGRES_PASSWORD"] != password  # a new stack, new secrets
    assert again["FRAUD_SERVING_API_KEY"] != values["FRAUD_SERVING_API_KEY"]


def test_no_docker_engine_is_an_error_not_a_skip(monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    if subprocess.run(["which", "docker"], capture_output=True).returncode == 0:
        with pytest.raises(ComposeCheckError, match="no Docker engine answers"):
            docker_engine()
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(ComposeCheckError, match="not on PATH"):
        docker_engine()


def test_the_command_exits_1_and_says_why_without_an_engine(tmp_path):
    env = {
        **os.environ,
        "DOCKER_HOST": "unix:///nonexistent/docker.sock",
        "FRAUD_HOME": str(tmp_path),
    }
    done = subprocess.run(
        [sys.executable, "-m", "pipelines.platform.cli", "compose-check"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    assert "compose-check failed: no Docker engine" in " ".join(done.stdout.split())
    assert not (tmp_path / "compose").exists()  # nothing rendered, built or started


class FakeStack:
    """Stands in for a compose project: a sequence of `states()` answers."""

    def __init__(self, answers):
        self.answers = list(answers)

    def states(self):
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]

    def logs(self, service, lines=60):
        return f"<log of {service}>"


@pytest.fixture(autouse=True)
def no_sleep(monkeypatch):
    monkeypatch.setattr(compose.time, "sleep", lambda seconds: None)


def test_waits_until_every_service_is_healthy_and_the_init_exited_0():
    starting = {
        "postgres": ("running", "starting", 0),
        "airflow-init": ("running", "-", 0),
        "spark-master": ("running", "healthy", 0),
    }
    done = {
        "postgres": ("running", "healthy", 0),
        "airflow-init": ("exited", "-", 0),
        "spark-master": ("running", "healthy", 0),
    }
    said = []
    stack = FakeStack([{}, starting, starting, done])
    assert wait_healthy(stack, said.append, timeout=60) == [
        "airflow-init",
        "postgres",
        "spark-master",
    ]
    assert stack.answers == [done]  # it kept asking until all were done


@pytest.mark.parametrize(
    ("service", "state", "message"),
    [
        ("postgres", ("running", "unhealthy", 0), "postgres is unhealthy"),
        ("airflow-init", ("exited", "-", 3), "airflow-init exited 3"),
        ("mlflow", ("exited", "starting", 137), "mlflow is exited"),
    ],
)
def test_a_failing_container_fails_the_wait_at_once_with_its_log(service, state, message):
    stack = FakeStack([{service: state, "redis": ("running", "starting", 0)}])
    with pytest.raises(ComposeCheckError, match=message) as error:
        wait_healthy(stack, lambda line: None, timeout=3600)
    assert f"<log of {service}>" in str(error.value)


def test_a_stack_that_never_gets_healthy_times_out_naming_what_it_waited_for(monkeypatch):
    clock = iter(range(0, 10_000, 10))
    monkeypatch.setattr(compose.time, "monotonic", lambda: next(clock))
    stack = FakeStack([{"bentoml": ("running", "starting", 0)}])
    said = []
    with pytest.raises(ComposeCheckError, match="not healthy after 100 s: bentoml"):
        wait_healthy(stack, said.append, timeout=100)
    assert any("waiting for: bentoml" in line for line in said)  # progress while it waits


def _airflow(runs_by_poll):
    """A REST API whose DAG runs move on to the next entry of ``runs_by_poll`` each request."""
    polls = {"n": -1}

    def handler(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path.endswith("/taskInstances"):
            ti = {"task_id": "train", "state": "failed", "try_number": 1}
            return httpx.Response(200, json={"task_instances": [ti]})
        if "/logs/" in path:
            error = {"exc_type": "RestException", "exc_value": "INVALID_PARAMETER_VALUE"}
            content = [{"event": "in train"}, {"event": "failed", "error_detail": [error]}]
            return httpx.Response(200, json={"content": content})
        dag_id = path.split("/")[-2]
        polls["n"] += 1
        states = runs_by_poll[min(polls["n"], len(runs_by_poll) - 1)].get(dag_id, [])
        runs = [{"dag_run_id": f"{dag_id}-{i}", "state": s} for i, s in enumerate(states)]
        return httpx.Response(200, json={"dag_runs": runs})

    return httpx.Client(base_url="http://airflow/api/v2", transport=httpx.MockTransport(handler))


def test_the_journey_waits_for_each_dag_in_order():
    polls = [
        {"ingest_transactions": ["running"]},
        {"ingest_transactions": ["success", "running"], "build_features": ["running"]},
        {
            "ingest_transactions": ["success"] * 3,
            "build_features": ["success"],
            "train_model": ["success"],
            "deploy_model": ["success"],
        },
    ]
    with _airflow(polls) as api:
        reached = compose.wait_for_journey(api, lambda line: None, timeout=3600)
    assert list(reached) == list(compose.JOURNEY_DAGS)


def test_a_failed_run_of_the_awaited_dag_fails_the_journey():
    polls = [{"ingest_transactions": ["success"], "build_features": ["failed", "running"]}]
    with _airflow(polls) as api, pytest.raises(ComposeCheckError, match="build_features run"):
        compose.wait_for_journey(api, lambda line: None, timeout=3600)
    with _airflow(polls) as api, pytest.raises(ComposeCheckError) as error:
        compose.wait_for_journey(api, lambda line: None, timeout=3600)
    assert "- train: failed (try 1)" in str(error.value)  # the failed task and its log's end
    assert "RestException: INVALID_PARAMETER_VALUE" in str(error.value)
