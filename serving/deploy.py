"""Deploying a model version: build its Bento, smoke-test that Bento as a real server, then
have the running service roll its workers onto it; the Bento that was tested is what serves.

``<home>/serving/deployed.json`` records what was deployed, newest last. The running server
(``serving/serve.py``) follows it: it rolls its workers onto the newest without dropping a request
and reports the outcome, which ``deploy`` waits for. ``make up`` serves the newest. The Bento
store keeps the ``FRAUD_BENTOS_KEPT`` newest deployed ones.
"""

from __future__ import annotations

import argparse
import json
import time

import httpx

from pipelines.config import PROJECT_ROOT, Settings, get_settings
from pipelines.demo import sample_transactions
from pipelines.platform.scoring import (
    BentoProcess,
    bento_exists,
    bentoml_cli,
    bentoml_env,
    deployed_bentos,
    record_deployed,
    roll_status_file,
    running_server,
)
from pipelines.registry.promotion import rollback
from serving.bento import BENTO_NAME, bento_tag, bento_version, model_version_of

BENTOFILE = PROJECT_ROOT / "serving" / "bentofile.yaml"


def build_bento(settings: Settings, model_version: str) -> str:
    """``bentoml build``; returns the Bento tag (``fraud_scoring:model-v<version>``).

    Idempotent: a Bento of the same tag (a retried task, a redeploy) is replaced, so the tag
    always holds the code of the latest build.
    """
    bentoml_cli(settings, "delete", "--yes", bento_tag(model_version), check=False)
    out = bentoml_cli(
        settings,
        "build",
        "-f",
        str(BENTOFILE),
        "--version",
        bento_version(model_version),
        "--output",
        "tag",
        str(PROJECT_ROOT),
    )
    return out.strip().splitlines()[-1].removeprefix("__tag__:")


def smoke_test_bento(settings: Settings, tag: str, sample: dict, timeout: float = 180) -> dict:
    """Serve the Bento on a spare port, score ``sample`` and check the answer: it must be the
    version the tag pins.

    The server's log stays in ``<home>/logs/`` (named after the tag) for a refused deploy.
    """
    env = bentoml_env(settings)
    headers = settings.serving_client_headers  # the Bento's server checks the key too
    with BentoProcess(tag, env, settings.home / "logs", timeout=timeout) as bento:
        response = httpx.post(
            f"{bento.url}/score", json={"transactions": [sample]}, headers=headers, timeout=30
        )
        info = httpx.post(f"{bento.url}/model_info", json={}, headers=headers, timeout=30)
        info = info.json()
    if response.status_code != 200:
        raise RuntimeError(f"smoke score failed: {response.status_code} {response.text}")
    score = response.json()[0]
    if (info["bento"], score["model_version"]) != (tag, model_version_of(tag)):
        raise RuntimeError(f"{tag} served v{score['model_version']} from {info['bento']}")
    return score


def prune_bentos(settings: Settings) -> list[str]:
    """Delete the store's Bentos of this service but the ``bentos_kept`` newest deployed
    ones; returns the deleted tags."""
    listing = json.loads(bentoml_cli(settings, "list", BENTO_NAME, "-o", "json") or "[]")
    kept = set(deployed_bentos(settings)[-settings.bentos_kept :])
    deleted = [b["tag"] for b in listing if b["tag"] not in kept]
    for tag in deleted:
        bentoml_cli(settings, "delete", "--yes", tag)
    return deleted


def _wait_for_roll(settings: Settings, tag: str, since: float) -> list[dict]:
    """The running server's outcome of rolling onto ``tag`` (requested at ``since``)."""
    deadline = time.monotonic() + settings.serving_roll_timeout_seconds + 60
    while time.monotonic() < deadline:
        try:
            outcome = json.loads(roll_status_file(settings).read_text())
        except (FileNotFoundError, ValueError):
            outcome = {}
        if outcome.get("tag") == tag and outcome["at"] >= since:
            if "error" in outcome:
                raise RuntimeError(f"roll onto {tag} failed: {outcome['error']}")
            return outcome["workers"]
        if running_server(settings) is None:
            raise RuntimeError(f"the scoring server stopped before rolling onto {tag}")
        time.sleep(0.5)
    raise RuntimeError(f"the scoring server did not roll onto {tag} in time")


def deploy(settings: Settings, tag: str) -> list[dict] | None:
    """Deploy ``tag`` (a built, smoke-tested Bento): record it as the newest deployed, wait
    until the running server has rolled its workers onto it, prune old Bentos. Returns the new
    workers (None: no server is running; the next `make up` serves it). A failed roll puts the
    record back and raises: the previous Bento keeps serving."""
    before = deployed_bentos(settings)
    since = time.time()
    record_deployed(settings, [*(t for t in before if t != tag), tag])
    if running_server(settings) is None:
        workers = None
    else:
        try:
            workers = _wait_for_roll(settings, tag, since)
        except RuntimeError:
            record_deployed(settings, before)
            raise
    prune_bentos(settings)
    return workers


def deploy_version(settings: Settings, model_version: str) -> tuple[str, list[dict] | None]:
    """Deploy a registry version: its Bento (built and smoke-tested unless the store still
    has it), then ``deploy``. What ``registry rollback`` uses to serve the previous champion."""

    tag = bento_tag(model_version)
    if not bento_exists(settings, tag):
        tag = build_bento(settings, model_version)
        smoke_test_bento(settings, tag, sample_transactions(settings, 1)[0])
    return tag, deploy(settings, tag)


def main() -> None:
    """``python -m serving.deploy version <N>`` | ``python -m serving.deploy rollback``."""

    parser = argparse.ArgumentParser(prog="python -m serving.deploy", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    version = commands.add_parser("version", help="deploy a registry version's Bento")
    version.add_argument("model_version")
    back = commands.add_parser(
        "rollback", help="champion alias back to the previous champion, and serve its Bento"
    )
    back.add_argument("--reason", default="manual rollback")
    args = parser.parse_args()
    settings = get_settings()
    if args.command == "rollback":
        before, after = rollback(settings, args.reason)
        print(f"{settings.model_name}: champion v{before} -> v{after}")
        target = after
    else:
        target = args.model_version
    tag, workers = deploy_version(settings, target)
    where = "no service running: `make up` serves it" if workers is None else workers
    print(f"deployed {tag}: {where}")


if __name__ == "__main__":
    main()
