"""Versions of the registered model: registration, lookups by alias, the promotion history.

Aliases of ``settings.model_name`` (names in ``pipelines.contracts``): ``champion`` is what
serving loads, ``challenger`` the latest version the gate did not promote,
``previous_champion`` the champion before the current one. Aliases move in
``pipelines.registry.promotion`` (the gate, rollback); this module only reads them and
registers versions. Every promotion and rollback is appended to the registered model's
``champion_history`` tag.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
from typing import TYPE_CHECKING, Any

from mlflow.exceptions import MlflowException

from pipelines.config import Settings
from pipelines.contracts import CHAMPION_ALIAS
from pipelines.registry import tracking

if TYPE_CHECKING:
    from mlflow.entities.model_registry import ModelVersion

log = logging.getLogger(__name__)

HISTORY_TAG = "champion_history"
HISTORY_LENGTH = 20  # entries kept in the tag (MLflow tag values are size-limited)


class RegistryError(RuntimeError):
    """A registry operation that cannot be carried out (e.g. nothing to roll back to)."""


def now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def version_by_alias(settings: Settings, alias: str) -> ModelVersion | None:
    try:
        return tracking.client(settings).get_model_version_by_alias(settings.model_name, alias)
    except MlflowException:
        return None


def champion(settings: Settings) -> ModelVersion | None:
    return version_by_alias(settings, CHAMPION_ALIAS)


def _ensure_registered_model(settings: Settings) -> None:
    c = tracking.client(settings)
    try:
        c.get_registered_model(settings.model_name)
    except MlflowException:
        try:
            c.create_registered_model(
                settings.model_name,
                description="Card-fraud scorer: fraud probability from the feature service "
                "inputs. Serve models:/<name>@champion.",
            )
        except MlflowException:  # created meanwhile by another process
            c.get_registered_model(settings.model_name)


def logged_model_id(model_uri: str) -> str | None:
    """``m-<id>`` of a ``models:/m-<id>`` URI (a logged model of MLflow 3), else None."""
    match = re.fullmatch(r"models:/(m-[0-9a-f]+)", model_uri)
    return match.group(1) if match else None


def register_version(
    settings: Settings, model_uri: str, run_id: str | None, tags: dict[str, Any]
) -> str:
    """Register ``model_uri`` under ``settings.model_name`` with ``tags``; returns the version.

    Idempotent per run: if a version of ``run_id`` exists already (a retried task), it is
    returned instead of registering a duplicate.
    """
    # tracking.client also points the process-wide URIs at the store: MLflow resolves a
    # ``models:/m-<id>`` source through them, not through the client.
    c = tracking.client(settings)
    _ensure_registered_model(settings)
    if run_id is not None:
        existing = c.search_model_versions(
            f"name = '{settings.model_name}' and run_id = '{run_id}'"
        )
        if existing:
            return str(max(int(v.version) for v in existing))
    version = c.create_model_version(
        settings.model_name,
        source=model_uri,
        run_id=run_id,
        tags={k: str(v) for k, v in tags.items()},
        # A tracking server (unlike a local store) refuses a models:/m-<id> source unless
        # the logged model it names is given as well.
        model_id=logged_model_id(model_uri),
    )
    log.info("registered %s version %s from %s", settings.model_name, version.version, model_uri)
    return str(version.version)


def append_history(settings: Settings, event: dict[str, Any]) -> None:
    c = tracking.client(settings)
    model = c.get_registered_model(settings.model_name)
    history = json.loads(model.tags.get(HISTORY_TAG, "[]"))
    history = [*history, event][-HISTORY_LENGTH:]
    c.set_registered_model_tag(settings.model_name, HISTORY_TAG, json.dumps(history))


def describe(settings: Settings) -> dict[str, Any]:
    """Aliases, versions with their gate outcome and test metrics, and the history."""
    c = tracking.client(settings)
    try:
        model = c.get_registered_model(settings.model_name)
    except MlflowException:
        return {"name": settings.model_name, "aliases": {}, "versions": [], "history": []}
    versions = sorted(
        c.search_model_versions(f"name = '{settings.model_name}'"), key=lambda v: int(v.version)
    )
    return {
        "name": model.name,
        "aliases": dict(model.aliases),
        "versions": [
            {
                "version": str(v.version),
                "run_id": v.run_id,
                "created": v.creation_timestamp,
                "tags": dict(v.tags),
            }
            for v in versions
        ],
        "history": json.loads(model.tags.get(HISTORY_TAG, "[]")),
    }
