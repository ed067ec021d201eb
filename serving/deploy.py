"""Deploying a new champion: build a Bento tagged with the model version, smoke-test it as a
real server, then tell the running service to switch (its hot-swap does the rest)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx

from pipelines.config import PROJECT_ROOT, Settings

BENTOFILE = PROJECT_ROOT / "serving" / "bentofile.yaml"
BENTO_NAME = "fraud_scoring"  # the service name in serving/service.py


def _bin(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def _env() -> dict[str, str]:
    from pipelines.config import load_settings

    return {
        **os.environ,
        # bentoml build looks for uv on PATH; the venv's bin has it.
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "BENTOML_DO_NOT_TRACK": "True",
        # The Bento store is runtime state of this home, not of the user's ~/bentoml.
        "BENTOML_HOME": str(load_settings().home / "bentoml"),
    }


def build_bento(model_version: str) -> str:
    """``bentoml build``; returns the Bento tag (``fraud_scoring:model-v<version>``).

    Idempotent: a Bento of the same tag (a retried task, a redeploy) is replaced, so the tag
    always holds the code of the latest build.
    """
    subprocess.run(
        [_bin("bentoml"), "delete", "--yes", f"{BENTO_NAME}:model-v{model_version}"],
        env=_env(),
        capture_output=True,
        check=False,  # absent: nothing to replace
    )
    out = subprocess.run(
        [
            _bin("bentoml"),
            "build",
            "-f",
            str(BENTOFILE),
            "--version",
            f"model-v{model_version}",
            "--output",
            "tag",
            str(PROJECT_ROOT),
        ],
        cwd=PROJECT_ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"bentoml build failed: {out.stderr[-2000:] or out.stdout[-2000:]}")
    tag = out.stdout.strip().splitlines()[-1].removeprefix("__tag__:")
    return tag


def smoke_test_bento(tag: str, sample: dict, timeout: float = 180) -> dict:
    """Serve the Bento on a spare port, score ``sample`` and check the answer.

    The server's log stays in ``<home>/logs/`` (named after the tag) for a refused deploy.
    """
    from pipelines.config import load_settings
    from pipelines.platform.scoring import BentoProcess

    log_dir = load_settings().home / "logs"
    with BentoProcess(tag, _env(), log_dir, timeout=timeout) as bento:
        response = httpx.post(f"{bento.url}/score", json={"transactions": [sample]}, timeout=30)
    if response.status_code != 200:
        raise RuntimeError(f"smoke score failed: {response.status_code} {response.text}")
    return response.json()[0]


def switch_running_service(settings: Settings) -> dict | None:
    """Ask the running service to reload the champion; None if no service is running."""
    url = f"http://{settings.serving_host}:{settings.serving_port}"
    headers = {"X-API-Key": settings.serving_api_key} if settings.serving_api_key else {}
    try:
        response = httpx.post(f"{url}/reload", json={}, headers=headers, timeout=120)
    except httpx.ConnectError:
        return None
    response.raise_for_status()
    return response.json()
