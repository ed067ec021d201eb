"""The MLflow tracking server (tracking + model registry + proxied artifacts) as a process.

The production profile puts the backend store on PostgreSQL and lets the server proxy artifact
uploads to its ``--artifacts-destination`` (a volume here, object storage on a cluster), so
clients need nothing but ``FRAUD_MLFLOW_TRACKING_URI=http://…``. The docker-compose ``mlflow``
service runs ``server_command`` through ``python -m pipelines.platform.cli mlflow-server``;
the production tests start the same command natively with ``MlflowServer``.

The server's own inputs are not platform settings (only the server reads them), so they come
from the environment: ``MLFLOW_BACKEND_STORE_URI`` and ``MLFLOW_ARTIFACTS_DESTINATION``.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import httpx

from pipelines.platform.process import ManagedProcess, wait_until

BACKEND_ENV = "MLFLOW_BACKEND_STORE_URI"
ARTIFACTS_ENV = "MLFLOW_ARTIFACTS_DESTINATION"


def mlflow_executable() -> str:
    return str(Path(sys.executable).parent / "mlflow")


def server_command(
    backend_store_uri: str,
    artifacts_destination: str,
    *,
    host: str = "127.0.0.1",
    port: int = 5000,
    allowed_hosts: str | None = None,
) -> list[str]:
    command = [
        mlflow_executable(),
        "server",
        "--backend-store-uri",
        backend_store_uri,
        # Clients upload through the server: no shared filesystem or cloud credentials needed
        # on the training and serving side.
        "--serve-artifacts",
        "--artifacts-destination",
        artifacts_destination,
        "--host",
        host,
        "--port",
        str(port),
        # One worker: ~0.55 GB and enough for a team; scale with replicas behind a balancer.
        "--workers",
        "1",
    ]
    if allowed_hosts:
        # Host-header check (DNS rebinding): by default only localhost and private IPs pass,
        # so a service name such as "mlflow:5000" must be listed.
        command += ["--allowed-hosts", allowed_hosts]
    return command


def server_env(base: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ if base is None else base)
    # The job runner (GenAI evaluation jobs) forks extra workers we do not use.
    env.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    env.setdefault("NO_PROXY", "*")
    return env


def healthy(url: str, timeout: float = 5.0) -> bool:
    """True when ``url`` answers 200 (``/health`` of MLflow, ``/readyz`` of BentoML)."""
    try:
        # trust_env=False: a proxy configured for the outside world must not see internal calls.
        return httpx.get(url, timeout=timeout, trust_env=False).status_code == 200
    except httpx.HTTPError:
        return False


@dataclass(frozen=True)
class MlflowServer:
    """A tracked ``mlflow server`` process with PID file and log under ``home``."""

    home: Path
    backend_store_uri: str
    artifacts_destination: str
    host: str = "127.0.0.1"
    port: int = 5000

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def process(self) -> ManagedProcess:
        command = server_command(
            self.backend_store_uri, self.artifacts_destination, host=self.host, port=self.port
        )
        return ManagedProcess("mlflow-server", command, self.home / "run", self.home / "logs")

    def up(self, timeout: float = 120.0) -> None:
        """Start the server unless it runs (it creates its tables) and wait for ``/health``;
        a server that does not get there is stopped before the ``RuntimeError``."""
        proc = self.process()
        pid = proc.start(server_env(), cwd=self.home)
        try:
            self._wait_ready(proc, timeout)
        except BaseException:
            proc.stop(pid=pid)
            raise

    def _wait_ready(self, proc: ManagedProcess, timeout: float) -> None:
        def ready_or_dead() -> bool:
            if not proc.is_running():
                tail = proc.log_file.read_text(errors="replace").splitlines()[-15:]
                raise RuntimeError("mlflow server exited; last log lines:\n" + "\n".join(tail))
            return healthy(f"{self.url}/health")

        if not wait_until(ready_or_dead, timeout=timeout, interval=1.0):
            raise RuntimeError(f"mlflow server not healthy after {timeout:.0f}s: {proc.log_file}")
        # /health answers before the backend store exists: the first store call creates the
        # schema of an empty database (~10 s on PostgreSQL). Pay it here, not in a client.
        store = httpx.get(
            f"{self.url}/api/2.0/mlflow/experiments/get-by-name",
            params={"experiment_name": "Default"},
            timeout=timeout,
        )
        if store.status_code != 200:
            raise RuntimeError(f"mlflow backend store not ready: {store.status_code} {store.text}")

    def down(self) -> bool:
        return self.process().stop()
