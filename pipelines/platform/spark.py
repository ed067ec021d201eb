"""A Spark standalone cluster (one master, one worker) from the pyspark installation.

pyspark ships ``bin/spark-class``, which runs any Spark JVM class with the bundled jars: no
separate Spark download. ``SparkStandalone`` starts ``org.apache.spark.deploy.master.Master``
and ``org.apache.spark.deploy.worker.Worker`` as tracked processes (PID files) and waits until
the master's web UI reports the worker ALIVE. The feature job then runs unchanged with
``FRAUD_SPARK_MASTER=spark://127.0.0.1:<port>``.

The docker-compose services run the very same commands (``master_command``/``worker_command``)
through ``python -m pipelines.platform.cli spark-master|spark-worker``.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

import httpx

from pipelines.platform.process import ManagedProcess, wait_until

MASTER_CLASS = "org.apache.spark.deploy.master.Master"
WORKER_CLASS = "org.apache.spark.deploy.worker.Worker"
_LOOPBACK = {"127.0.0.1", "localhost"}


def spark_home() -> Path:
    """The pyspark package folder: it is a complete SPARK_HOME (bin/, jars/)."""
    spec = importlib.util.find_spec("pyspark")  # locate without importing (py4j, JVM glue)
    if spec is None or spec.origin is None:
        raise RuntimeError("pyspark is not installed in this interpreter")
    return Path(spec.origin).parent


def spark_class() -> str:
    return str(spark_home() / "bin" / "spark-class")


def master_command(host: str, port: int, webui_port: int) -> list[str]:
    return [
        spark_class(),
        MASTER_CLASS,
        "--host",
        host,
        "--port",
        str(port),
        "--webui-port",
        str(webui_port),
    ]


def worker_command(
    master_url: str,
    *,
    host: str | None,
    port: int,
    webui_port: int,
    cores: int,
    memory: str,
    work_dir: Path,
) -> list[str]:
    # No host: Spark advertises the machine's address, which lets several identical workers
    # (e.g. ``docker compose up --scale spark-worker=3``) each advertise their own.
    bind = ["--host", host] if host else []
    return [
        spark_class(),
        WORKER_CLASS,
        *bind,
        "--port",
        str(port),
        "--webui-port",
        str(webui_port),
        "--cores",
        str(cores),
        "--memory",
        memory,
        # Executors' scratch space and logs; the default is inside the pyspark package.
        "--work-dir",
        str(work_dir),
        master_url,
    ]


def daemon_env(host: str | None, base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment of the master/worker JVMs."""
    env = dict(os.environ if base is None else base)
    env["SPARK_HOME"] = str(spark_home())
    # Daemon heap: the master and worker only coordinate; executors get their own JVMs.
    env.setdefault("SPARK_DAEMON_MEMORY", "512m")
    # The master's REST submission server (cluster deploy mode) takes a fixed port (6066) and
    # accepts unauthenticated submissions; jobs here are submitted in client mode only.
    env.setdefault("SPARK_MASTER_OPTS", "-Dspark.master.rest.enabled=false")
    if host in _LOOPBACK:
        # Bind everything (including the executors the worker launches) to loopback: no
        # hostname lookup warnings, no port exposed beyond this machine.
        env["SPARK_LOCAL_IP"] = "127.0.0.1"
    return env


def master_status(webui_url: str, timeout: float = 5.0) -> dict | None:
    """The master's JSON status (``/json/``: url, status, workers, aliveworkers) or None."""
    try:
        # trust_env=False: a proxy configured for the outside world must not see internal calls.
        response = httpx.get(f"{webui_url.rstrip('/')}/json/", timeout=timeout, trust_env=False)
        response.raise_for_status()
        return response.json()
    except (httpx.HTTPError, ValueError):
        return None


def alive_workers(status: dict | None) -> list[dict]:
    if not status or status.get("status") != "ALIVE":
        return []
    return [w for w in status.get("workers", []) if w.get("state") == "ALIVE"]


@dataclass(frozen=True)
class SparkStandalone:
    """One master and one worker on this machine, tracked by PID files under ``home``."""

    home: Path
    master_port: int = 7077
    master_webui_port: int = 8081
    worker_port: int = 7078
    worker_webui_port: int = 8082
    worker_cores: int = 1
    worker_memory: str = "1g"
    host: str = "127.0.0.1"

    @property
    def master_url(self) -> str:
        return f"spark://{self.host}:{self.master_port}"

    @property
    def webui_url(self) -> str:
        return f"http://{self.host}:{self.master_webui_port}"

    def processes(self) -> list[ManagedProcess]:
        run_dir, log_dir = self.home / "run", self.home / "logs"
        master = master_command(self.host, self.master_port, self.master_webui_port)
        worker = worker_command(
            self.master_url,
            host=self.host,
            port=self.worker_port,
            webui_port=self.worker_webui_port,
            cores=self.worker_cores,
            memory=self.worker_memory,
            work_dir=self.home / "spark" / "work",
        )
        return [
            ManagedProcess("spark-master", master, run_dir, log_dir),
            ManagedProcess("spark-worker", worker, run_dir, log_dir),
        ]

    def up(self, timeout: float = 90.0) -> None:
        """Start whatever is not running and wait until the master has an ALIVE worker."""
        env = daemon_env(self.host)
        (self.home / "spark" / "work").mkdir(parents=True, exist_ok=True)
        master, worker = self.processes()
        master.start(env, cwd=self.home)
        # A worker that registers before the master is elected leader is ignored and retries
        # only ~10 s later: start it once the master reports ALIVE.
        wait_until(self._master_alive_or_dead, timeout=timeout, interval=0.5)
        worker.start(env, cwd=self.home)
        if not wait_until(self._ready_or_dead, timeout=timeout, interval=0.5):
            raise RuntimeError(
                f"Spark master {self.master_url} has no ALIVE worker after {timeout:.0f}s: "
                f"{master_status(self.webui_url)}; see the logs in {self.home / 'logs'}"
            )

    def _raise_if_dead(self, procs: list[ManagedProcess]) -> None:
        for proc in procs:
            if not proc.is_running():
                tail = proc.log_file.read_text(errors="replace").splitlines()[-15:]
                raise RuntimeError(f"{proc.name} exited; last log lines:\n" + "\n".join(tail))

    def _master_alive_or_dead(self) -> bool:
        self._raise_if_dead(self.processes()[:1])
        return (master_status(self.webui_url) or {}).get("status") == "ALIVE"

    def _ready_or_dead(self) -> bool:
        self._raise_if_dead(self.processes())
        return self.ready()

    def ready(self) -> bool:
        return len(alive_workers(master_status(self.webui_url))) >= 1

    def down(self) -> list[str]:
        """Stop the worker first (it would otherwise retry the master), then the master."""
        return [p.name for p in reversed(self.processes()) if p.stop()]
