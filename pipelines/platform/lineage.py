"""Lineage and definitions where users look for them: the dbt docs site and the Feast UI.

Both run as tracked local processes beside Airflow, MLflow and the scoring API (``make up``):

* ``DbtDocsSite`` serves ``<home>/dbt-docs/`` — the site the ``dbt_docs`` task of
  ``build_features`` publishes after each dbt build (``generate_docs``) — with Python's static
  file server. Until the first build it serves a page saying so, never a 404.
* ``FeastUI`` runs ``feast ui`` over the feature repository and the ``feature_store.yaml``
  rendered from the settings. It only reads the registry (re-read every ``cache_ttl_seconds``),
  so it starts on an empty registry before the first ``feast apply`` and shows the feature
  views and services once one ran — no restart needed.

The docker-compose entry points (``python -m pipelines.platform.cli dbt-docs | feast-ui``) run
the same commands in the foreground.
"""

from __future__ import annotations

import html
import os
import sys
from pathlib import Path

from pipelines.config import PROJECT_ROOT, Settings
from pipelines.featurestore.repo import FEATURE_REPO, write_config
from pipelines.lake import write_text_atomic
from pipelines.platform.mlflow import healthy
from pipelines.platform.process import ManagedProcess, wait_until
from pipelines.transform.mart import docs_dir

PLACEHOLDER_MARK = "<!-- fraud-platform: dbt docs not generated yet -->"


def _bin(name: str) -> str:
    return str(Path(sys.executable).parent / name)


# --- dbt docs -----------------------------------------------------------------------------
def docs_server_command(directory: Path, host: str, port: int) -> list[str]:
    # A static server is all the docs need: index.html fetches manifest.json and catalog.json
    # next to it. `dbt docs serve` would want the project and profile just to serve files.
    return [
        sys.executable,
        "-m",
        "http.server",
        "--directory",
        str(directory),
        "--bind",
        host,
        str(port),
    ]


def write_placeholder(site: Path) -> bool:
    """Put a "no docs yet" index.html in ``site`` unless a generated site is there.

    Returns True if it wrote one. ``generate_docs`` replaces it on the first build.
    """
    index = site / "index.html"
    if index.exists():
        return False
    site.mkdir(parents=True, exist_ok=True)
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>dbt docs: not generated yet</title>
<meta http-equiv="refresh" content="30"></head>
<body style="font-family: sans-serif; max-width: 40em; margin: 3em auto">
{PLACEHOLDER_MARK}
<h1>dbt docs appear after the first <code>build_features</code> run</h1>
<p>The <code>dbt_docs</code> task of the Airflow DAG <code>build_features</code> publishes the
dbt documentation (models, columns, tests and the lineage graph) here after each dbt build.
The first run starts by itself once the history ingest has landed data; this page reloads
every 30 seconds.</p>
<p>Published into <code>{html.escape(str(site))}</code>.</p>
</body></html>
"""
    write_text_atomic(index, page)
    return True


class DbtDocsSite:
    """The dbt docs site (lineage graph, model and column docs) on ``dbt_docs_port``."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @property
    def url(self) -> str:
        return f"http://{self.settings.serving_host}:{self.settings.dbt_docs_port}"

    @property
    def directory(self) -> Path:
        return docs_dir(self.settings)

    def process(self) -> ManagedProcess:
        s = self.settings
        command = docs_server_command(self.directory, s.serving_host, s.dbt_docs_port)
        return ManagedProcess("dbt-docs", command, s.home / "run", s.home / "logs")

    def published(self) -> bool:
        """True once a dbt docs site (not the placeholder) is in place."""
        return (self.directory / "manifest.json").exists()

    def up(self, timeout: float = 30.0) -> None:
        """Serve the site (the placeholder until the first build) and wait until it answers."""
        write_placeholder(self.directory)
        proc = self.process()
        proc.start(dict(os.environ), cwd=self.directory)
        _wait_alive(proc, f"{self.url}/", timeout, "dbt docs server")

    def down(self) -> bool:
        return self.process().stop()


# --- Feast UI -----------------------------------------------------------------------------
def feast_ui_command(feature_store_yaml: Path, host: str, port: int) -> list[str]:
    return [
        _bin("feast"),
        "--chdir",
        str(FEATURE_REPO),
        "--feature-store-yaml",
        str(feature_store_yaml),
        "ui",
        "--host",
        host,
        "--port",
        str(port),
    ]


class FeastUI:
    """``feast ui`` on ``feast_ui_port``: entities, feature views, feature services, lineage."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @property
    def url(self) -> str:
        return f"http://{self.settings.serving_host}:{self.settings.feast_ui_port}"

    @property
    def feature_store_yaml(self) -> Path:
        return self.settings.feast_dir / "feature_store.yaml"

    def process(self) -> ManagedProcess:
        s = self.settings
        command = feast_ui_command(self.feature_store_yaml, s.serving_host, s.feast_ui_port)
        return ManagedProcess("feast-ui", command, s.home / "run", s.home / "logs")

    def up(self, timeout: float = 120.0) -> None:
        """Render feature_store.yaml, start the UI and wait for its ``/health`` (~10-40 s:
        it imports the whole of Feast)."""
        write_config(self.settings)  # the same file `feast apply` and the DAG tasks render
        proc = self.process()
        proc.start(self.env(), cwd=PROJECT_ROOT)
        _wait_alive(proc, f"{self.url}/health", timeout, "feast ui")

    def env(self) -> dict[str, str]:
        return {**os.environ, "FRAUD_HOME": str(self.settings.home)}

    def down(self) -> bool:
        return self.process().stop()


def _wait_alive(proc: ManagedProcess, url: str, timeout: float, what: str) -> None:
    """Wait until ``url`` answers 200; fail fast with the log tail if the process died."""

    def alive_or_dead() -> bool:
        if not proc.is_running():
            tail = proc.log_file.read_text(errors="replace").splitlines()[-15:]
            raise RuntimeError(f"{what} exited; last log lines:\n" + "\n".join(tail))
        return healthy(url)

    if not wait_until(alive_or_dead, timeout=timeout, interval=1.0):
        raise RuntimeError(f"{what} not answering at {url} after {timeout:.0f}s: {proc.log_file}")
