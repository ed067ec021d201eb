"""Airflow 3 on this machine: configuration by environment, components as tracked processes.

``AirflowServices(settings).up()`` migrates the metadata DB, starts the API server (UI), the
scheduler, the dag-processor and the triggerer, and waits until the health endpoint reports
every component healthy. The same class runs Airflow for ``make up``, for the end-to-end tests
(on a temporary home and port) and inside the docker-compose services.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import sqlite3
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
from cryptography.fernet import Fernet

from pipelines.config import PROJECT_ROOT, Settings
from pipelines.platform.process import ManagedProcess, wait_until

log = logging.getLogger(__name__)
COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
HEALTH_KEYS = ("metadatabase", "scheduler", "dag_processor", "triggerer")


@dataclass(frozen=True)
class Login:
    username: str
    password: str


class AirflowServices:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.home: Path = settings.airflow_home
        self.bin_dir = Path(sys.executable).parent

    # --- configuration --------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        return f"http://{self.settings.airflow_host}:{self.settings.airflow_port}"

    @property
    def sqlite_path(self) -> Path:
        return self.home / "airflow.db"

    @property
    def database_url(self) -> str:
        # A 30 s busy timeout instead of 5 s: on 2 busy cores the scheduler, the API server
        # and the task workers otherwise see "database is locked" (the UI gets a 500).
        return self.settings.airflow_database_url or f"sqlite:///{self.sqlite_path}?timeout=30"

    @property
    def async_database_url(self) -> str | None:
        """The async URL Airflow 3 opens beside the sync one (None: Airflow derives it).

        For PostgreSQL Airflow would derive ``postgresql+asyncpg``, a driver the lock does not
        carry; psycopg 3 (installed with feast[postgres]) speaks async as well.
        """
        scheme, rest = self.database_url.split(":", 1)
        if scheme.split("+")[0] in ("postgresql", "postgres"):
            return f"postgresql+psycopg:{rest}"
        return None

    def _secrets(self) -> dict[str, str]:
        """API/JWT/Fernet secrets, generated once per home and shared by every component."""
        path = self.home / "platform-secrets.json"
        if path.exists():
            return json.loads(path.read_text())
        self.home.mkdir(parents=True, exist_ok=True)
        values = {
            "jwt_secret": secrets.token_urlsafe(64),
            "secret_key": secrets.token_urlsafe(32),
            "fernet_key": Fernet.generate_key().decode(),
        }
        path.touch(mode=0o600)
        path.write_text(json.dumps(values))
        return values

    def login(self) -> Login:
        """The UI/API login; the password is generated on first use and kept in the home."""
        path = self.home / "simple_auth_manager_passwords.json.generated"
        user = self.settings.airflow_user
        passwords = json.loads(path.read_text()) if path.exists() else {}
        if user not in passwords:
            self.home.mkdir(parents=True, exist_ok=True)
            passwords[user] = secrets.token_urlsafe(12)
            path.touch(mode=0o600)
            path.write_text(json.dumps(passwords))
        return Login(user, passwords[user])

    def env(self) -> dict[str, str]:
        """The full process environment of every Airflow component."""
        s, keys = self.settings, self._secrets()
        env = dict(os.environ)
        env.update(
            {
                "PATH": f"{self.bin_dir}{os.pathsep}{env.get('PATH', '')}",
                "AIRFLOW_HOME": str(self.home),
                "FRAUD_HOME": str(s.home),
                "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT_ROOT / "dags"),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                # LocalExecutor with the tasks' libraries imported before it forks its workers
                # (pipelines/platform/executor.py): a task starts in 0.4 s instead of ~10 s.
                "AIRFLOW__CORE__EXECUTOR": "pipelines.platform.executor.PreloadedLocalExecutor",
                "AIRFLOW__CORE__PARALLELISM": str(s.airflow_parallelism),
                # Scheduled DAGs run from the first start, without a click in the UI.
                "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
                "AIRFLOW__CORE__FERNET_KEY": keys["fernet_key"],
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{s.airflow_user}:admin",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.base_url}/execution/",
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": self.database_url,
                "AIRFLOW__API__HOST": s.airflow_host,
                "AIRFLOW__API__PORT": str(s.airflow_port),
                "AIRFLOW__API__WORKERS": "1",
                "AIRFLOW__API__SECRET_KEY": keys["secret_key"],
                "AIRFLOW__API_AUTH__JWT_SECRET": keys["jwt_secret"],
                "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(s.airflow_worker_log_port),
                "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(s.airflow_trigger_log_port),
                "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "10",
                "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "True",
                "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
                "NO_PROXY": "*",
            }
        )
        if self.async_database_url:
            env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC"] = self.async_database_url
        return env

    # --- processes ------------------------------------------------------------------------
    def processes(self) -> list[ManagedProcess]:
        run_dir, log_dir = self.settings.home / "run", self.settings.home / "logs"
        airflow = str(self.bin_dir / "airflow")
        return [ManagedProcess(f"airflow-{c}", [airflow, c], run_dir, log_dir) for c in COMPONENTS]

    def migrate(self) -> None:
        self.login()  # the password file must exist before the API server reads it
        done = subprocess.run(
            [str(self.bin_dir / "airflow"), "db", "migrate"],
            env=self.env(),
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            tail = "\n".join((done.stderr or done.stdout).splitlines()[-20:])
            raise RuntimeError(f"airflow db migrate failed ({self.database_url}):\n{tail}")
        if self.settings.airflow_database_url is None:
            # WAL lets readers (UI, API) proceed while a writer commits; it persists in the file.
            with contextlib.closing(sqlite3.connect(self.sqlite_path)) as db:
                db.execute("pragma journal_mode=wal")

    def up(self, timeout: float = 180.0) -> None:
        """Start whatever is not running yet and wait until Airflow is healthy."""
        if not all(p.is_running() for p in self.processes()):
            self.migrate()
        env = self.env()
        for proc in self.processes():
            proc.start(env, cwd=PROJECT_ROOT)
        if not wait_until(self._healthy_or_dead, timeout=timeout, interval=2.0):
            raise RuntimeError(
                f"Airflow did not become healthy within {timeout:.0f}s: {self.health()}; "
                f"see the logs in {self.settings.home / 'logs'}"
            )

    def _healthy_or_dead(self) -> bool:
        """True when healthy; raises at once if a component died (e.g. its port was taken)."""
        for proc in self.processes():
            if not proc.is_running():
                tail = proc.log_file.read_text(errors="replace").splitlines()[-15:]
                raise RuntimeError(f"{proc.name} exited; last log lines:\n" + "\n".join(tail))
        return self.healthy()

    def down(self) -> list[str]:
        """Stop exactly the processes this home started, all at once (each drains on its own,
        up to its stop timeout); returns the names stopped."""
        processes = self.processes()
        with ThreadPoolExecutor(len(processes)) as pool:
            stopped = list(pool.map(ManagedProcess.stop, processes))
        return [p.name for p, ran in zip(processes, stopped, strict=True) if ran]

    def health(self) -> dict | None:
        try:
            return httpx.get(f"{self.base_url}/api/v2/monitor/health", timeout=5).json()
        except (httpx.HTTPError, ValueError):
            return None

    def healthy(self) -> bool:
        health = self.health() or {}
        return all((health.get(k) or {}).get("status") == "healthy" for k in HEALTH_KEYS)

    # --- REST client ----------------------------------------------------------------------
    def client(self) -> httpx.Client:
        """An authenticated client of the REST API (as the UI's login would give)."""
        return rest_client(self.base_url, self.login())


def rest_client(base_url: str, login: Login) -> httpx.Client:
    """A client of Airflow's REST API at ``base_url``, logged in as the UI's login form does
    (``POST /auth/token``)."""
    token = httpx.post(
        f"{base_url}/auth/token",
        json={"username": login.username, "password": login.password},
        timeout=30,
        trust_env=False,
    )
    token.raise_for_status()
    headers = {"Authorization": f"Bearer {token.json()['access_token']}"}
    return httpx.Client(base_url=f"{base_url}/api/v2", headers=headers, timeout=30, trust_env=False)


def failure_report(api: httpx.Client, dag_id: str, run_id: str, tail: int = 25) -> str:
    """The unsuccessful tasks of a run with the last lines of their latest try's log."""
    tis = api.get(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances").json()["task_instances"]
    lines = [f"{dag_id} run {run_id}:"]
    for ti in tis:
        if ti["state"] in ("success", "skipped"):
            continue
        lines.append(f"- {ti['task_id']}: {ti['state']} (try {ti['try_number']})")
        if ti["state"] not in ("failed", "up_for_retry") or not ti["try_number"]:
            continue
        log = api.get(
            f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{ti['task_id']}/logs/{ti['try_number']}"
        )
        if log.status_code != 200:
            lines.append(f"    (log unavailable: HTTP {log.status_code})")
            continue
        content = log.json().get("content", [])
        for entry in content[-tail:]:
            event = entry.get("event", entry) if isinstance(entry, dict) else entry
            lines.append(f"    {event}")
            # The exception itself travels in the structured entry, not in its event text.
            errors = (entry.get("error_detail") or []) if isinstance(entry, dict) else []
            for error in errors:
                lines.append(f"      {error.get('exc_type')}: {error.get('exc_value')}")
    return "\n".join(lines)
