"""The champion model as serving sees it, and the watcher that swaps it when the alias moves.

A version is loaded and smoke-tested *off* the request path (in the watcher thread); only a
version that loads and scores a known example becomes current, by one reference assignment.
A failing new version is refused and the old one keeps serving; an unreachable registry keeps
the current model and marks the service degraded.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)
ALIAS = "champion"


@dataclass
class LoadedModel:
    name: str
    version: str
    alias: str
    inputs: list[str]
    feature_service: str
    predictor: Any  # mlflow.pyfunc.PyFuncModel
    metrics: dict[str, float] = field(default_factory=dict)
    training_window: str | None = None
    baseline: dict[str, float] = field(default_factory=dict)
    loaded_at: str = field(default_factory=lambda: dt.datetime.now(dt.UTC).isoformat())

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        out = self.predictor.predict(frame[self.inputs])
        values = out.to_numpy() if hasattr(out, "to_numpy") else np.asarray(out)
        return values.reshape(len(frame), -1)[:, -1].astype("float64")

    def explain(self, frame: pd.DataFrame, top: int = 5) -> list[dict[str, float]]:
        """Occlusion: how much each input moves the score when set to its training baseline."""
        base = self.predict(frame)
        effects = np.zeros((len(frame), len(self.inputs)))
        for j, column in enumerate(self.inputs):
            if column not in self.baseline:
                continue
            occluded = frame.copy()
            occluded[column] = self.baseline[column]
            effects[:, j] = base - self.predict(occluded)
        out = []
        for row in effects:
            order = np.argsort(-np.abs(row))[:top]
            out.append({self.inputs[j]: round(float(row[j]), 6) for j in order})
        return out


def decide(probability: float, review: float, block: float) -> str:
    """approve / review / block by the configured thresholds (same online and in batch)."""
    if probability >= block:
        return "block"
    if probability >= review:
        return "review"
    return "approve"


def load_champion(tracking_uri: str, name: str) -> LoadedModel:
    """The version the champion alias points at, loaded and smoke-tested."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    version = client.get_model_version_by_alias(name, ALIAS).version
    model = load_version(client, name, str(version), ALIAS)
    smoke_test(model)
    return model


def _json_tag(tags: dict[str, str], key: str, default: Any) -> Any:
    try:
        return json.loads(tags[key])
    except (KeyError, ValueError):
        return default


def load_version(client: Any, name: str, version: str, alias: str) -> LoadedModel:
    """Load one registered version and everything serving needs from its tags."""
    import mlflow.pyfunc

    mv = client.get_model_version(name, version)
    tags = dict(mv.tags)
    inputs = _json_tag(tags, "model_inputs", None)
    if not inputs:
        raise ValueError(f"{name} v{version} has no model_inputs tag")
    predictor = mlflow.pyfunc.load_model(f"models:/{name}/{version}")
    metrics = {
        k.removeprefix("metric."): float(v) for k, v in tags.items() if k.startswith("metric.")
    }
    return LoadedModel(
        name=name,
        version=str(version),
        alias=alias,
        inputs=list(inputs),
        feature_service=tags.get("feature_service", "fraud_model_v1"),
        predictor=predictor,
        metrics=metrics,
        training_window=tags.get("data_window"),
        baseline=_json_tag(tags, "input_baseline", {}),
    )


def smoke_test(model: LoadedModel) -> None:
    """A model that cannot score a plain transaction must never serve."""
    example = pd.DataFrame([{c: model.baseline.get(c, 0.0) for c in model.inputs}])
    example["tx_amount"] = 42.0
    score = model.predict(example)
    if score.shape != (1,) or not np.isfinite(score).all() or not 0 <= score[0] <= 1:
        raise ValueError(f"smoke prediction gave {score!r}")


class ChampionWatcher:
    """Follows ``models:/<name>@champion``; ``current`` is what requests use."""

    def __init__(self, tracking_uri: str, name: str, poll_seconds: float) -> None:
        from mlflow import MlflowClient

        self.client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        self.name = name
        self.poll_seconds = poll_seconds
        self.current: LoadedModel | None = None
        self.registry_status = "ok"
        self.last_error: str | None = None
        self._lock = threading.Lock()  # one reload at a time (poll thread and reload endpoint)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def check(self) -> bool:
        """Load the aliased version if it differs from the current one; True if swapped."""
        with self._lock:
            try:
                mv = self.client.get_model_version_by_alias(self.name, ALIAS)
            except Exception as exc:  # registry down, alias missing: keep what we have
                self.registry_status = "unreachable" if not _is_missing(exc) else "ok"
                self.last_error = f"alias lookup failed: {exc}"
                log.warning("champion lookup failed: %s", exc)
                return False
            self.registry_status = "ok"
            if self.current is not None and self.current.version == str(mv.version):
                return False
            try:
                candidate = load_version(self.client, self.name, str(mv.version), ALIAS)
                smoke_test(candidate)
            except Exception as exc:
                self.last_error = f"version {mv.version} refused: {exc}"
                log.error("refusing %s v%s: %s", self.name, mv.version, exc)
                return False
            previous = self.current.version if self.current else None
            self.current = candidate  # the swap: one reference assignment
            self.last_error = None
            log.info("now serving %s v%s (was %s)", self.name, mv.version, previous)
            return True

    def start(self) -> None:
        self.check()
        self._thread = threading.Thread(target=self._run, name="champion-watcher", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            self.check()

    def stop(self) -> None:
        self._stop.set()


def _is_missing(exc: Exception) -> bool:
    text = str(exc)
    return "RESOURCE_DOES_NOT_EXIST" in text or "not found" in text.lower()
