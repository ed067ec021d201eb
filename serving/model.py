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
import warnings
from dataclasses import dataclass, field
from typing import Any, ClassVar

import mlflow.pyfunc
import numpy as np
import pandas as pd
import torch
from mlflow import MlflowClient

from pipelines.contracts import CHAMPION_ALIAS

log = logging.getLogger(__name__)


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
    # The unwrapped network (None: score through pyfunc), set up once at load time.
    direct: Any = field(default=None, init=False, repr=False, compare=False)

    # Serving scores a handful of rows per call: intra-op threads only add OpenMP hand-offs,
    # whose spin-waits cost ~20 ms of CPU per request on 2 shared cores (measured: 22 ms of
    # server CPU per request with 2 threads, 4.5 ms with 1).
    TORCH_THREADS: ClassVar[int] = 1

    def __post_init__(self) -> None:
        self.direct = self._unwrap()

    def _unwrap(self) -> Any:
        """The pyfunc's torch module, used only if it scores a probe exactly as pyfunc does.

        pyfunc's ``predict`` enforces the signature with pandas (~0.5 ms a call) and then runs
        ``module(tensor(frame.to_numpy(float32)))`` under ``no_grad``; the fast path runs the
        same module on the same float32 matrix. Any other flavour keeps pyfunc.
        """
        if getattr(self.predictor, "loader_module", None) != "mlflow.pytorch":
            return None
        impl = getattr(self.predictor, "_model_impl", None)
        if getattr(impl, "_is_forecasting_model", True) or str(getattr(impl, "device", "")) != (
            "cpu"
        ):
            return None

        module = self.predictor.get_raw_model()
        if not isinstance(module, torch.nn.Module):
            return None
        probe = self._probe()
        _limit_threads(self.TORCH_THREADS)  # both paths with the same kernels
        expected = self._predict_pyfunc(pd.DataFrame(probe, columns=self.inputs))
        got = _run_module(module, probe, self.TORCH_THREADS)
        if got.shape != expected.shape or not np.array_equal(got, expected, equal_nan=True):
            log.warning("%s v%s: unwrapped model disagrees with pyfunc", self.name, self.version)
            return None
        return self._compiled(module, probe)

    def _compiled(self, module: Any, probe: np.ndarray) -> Any:
        """``module`` traced and frozen by TorchScript, if it scores exactly as ``module`` on
        the probe at every batch size tried; else ``module``.

        The ensemble's forward is ~55 small module calls: TorchScript runs the same operators
        without Python's per-call overhead (measured on the champion ``make up`` trains, 6
        members, 4 rows: 0.61 ms -> 0.29 ms of CPU per forward).
        """

        try:
            with torch.no_grad(), warnings.catch_warnings():
                # TorchScript is deprecated in favour of torch.compile, which compiles with a C
                # toolchain at load time; the trace also bakes each member's "has binned
                # encodings" branch in as a constant, which it is (the check below proves the
                # scores equal).
                warnings.simplefilter("ignore")
                example = torch.from_numpy(np.ascontiguousarray(probe[:4], dtype=np.float32))
                compiled = torch.jit.freeze(torch.jit.trace(module.eval(), example))
            rows = np.vstack([probe] * 4)  # as many rows as an explained batch of a few
            for n in (1, 3, len(probe), len(rows)):
                eager = _run_module(module, rows[:n], self.TORCH_THREADS)
                traced = _run_module(compiled, rows[:n], self.TORCH_THREADS)
                if not np.array_equal(eager, traced, equal_nan=True):
                    raise ValueError(f"scores differ on {n} rows")
        except Exception as exc:  # any failure keeps the eager module: never a worse answer
            log.warning("%s v%s: serving the eager module (%s)", self.name, self.version, exc)
            return module
        return compiled

    def _probe(self) -> np.ndarray:
        """Baseline inputs and scaled variants of them: rows that exercise every column."""
        base = np.array([self.baseline.get(c, 0.0) for c in self.inputs], dtype=np.float64)
        rng = np.random.default_rng(0)
        return np.vstack([base, base * rng.uniform(0, 3, (7, len(self.inputs)))])

    def _predict_pyfunc(self, frame: pd.DataFrame) -> np.ndarray:
        out = self.predictor.predict(frame[self.inputs])
        values = out.to_numpy() if hasattr(out, "to_numpy") else np.asarray(out)
        return values.reshape(len(frame), -1)[:, -1].astype("float64")

    def matrix(self, frame: pd.DataFrame | np.ndarray) -> np.ndarray:
        """The model's input columns, in order, as a float64 matrix."""
        if isinstance(frame, np.ndarray):
            return frame
        if frame.columns.tolist() != self.inputs:  # serving's batches are already in order
            frame = frame[self.inputs]
        return frame.to_numpy(np.float64)

    def predict(self, frame: pd.DataFrame | np.ndarray) -> np.ndarray:
        """Fraud probabilities of ``frame`` (a DataFrame with the input columns, or a matrix of
        them in ``inputs`` order)."""
        if self.direct is not None:
            return _run_module(self.direct, self.matrix(frame), self.TORCH_THREADS)
        if isinstance(frame, np.ndarray):
            frame = pd.DataFrame(frame, columns=self.inputs)
        return self._predict_pyfunc(frame)

    def explain(self, frame: pd.DataFrame, top: int = 5) -> list[dict[str, float]]:
        """Occlusion: how much each input moves the score when set to its training baseline."""
        x = self.matrix(frame)
        n, k = x.shape
        base = self.predict(x)
        columns = [j for j, c in enumerate(self.inputs) if c in self.baseline]
        # Every occluded copy in one call: k predictions cost one.
        occluded = np.repeat(x[np.newaxis], len(columns), axis=0)
        for i, j in enumerate(columns):
            occluded[i, :, j] = self.baseline[self.inputs[j]]
        scores = self.predict(occluded.reshape(-1, k)).reshape(len(columns), n)
        effects = np.zeros((n, k))
        effects[:, columns] = (base[np.newaxis] - scores).T
        out = []
        for row in effects:
            order = np.argsort(-np.abs(row))[:top]
            out.append({self.inputs[j]: round(float(row[j]), 6) for j in order})
        return out


def _run_module(module: Any, x: np.ndarray, threads: int) -> np.ndarray:
    """What pyfunc's pytorch flavour computes, without its pandas round trips."""

    _limit_threads(threads)
    with torch.no_grad():
        out = module(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)))
    return out.numpy().reshape(len(x), -1)[:, -1].astype("float64")


_torch_threads = threading.local()


def _limit_threads(threads: int) -> None:
    """torch's thread count for the *calling* thread: OpenMP keeps it per thread and MKL's
    GEMM reads the caller's, so a request thread would otherwise use every core."""
    if getattr(_torch_threads, "value", None) != threads:
        torch.set_num_threads(threads)
        _torch_threads.value = threads


def action_for(probability: float, review: float, block: float) -> str:
    """approve / review / block by the configured thresholds (same online and in batch)."""
    if probability >= block:
        return "block"
    if probability >= review:
        return "review"
    return "approve"


def load_champion(tracking_uri: str, name: str) -> LoadedModel:
    """The version the champion alias points at, loaded and smoke-tested."""

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    version = client.get_model_version_by_alias(name, CHAMPION_ALIAS).version
    model = load_version(client, name, str(version), CHAMPION_ALIAS)
    smoke_test(model)
    return model


def _json_tag(tags: dict[str, str], key: str, default: Any) -> Any:
    try:
        return json.loads(tags[key])
    except (KeyError, ValueError):
        return default


def load_version(client: Any, name: str, version: str, alias: str) -> LoadedModel:
    """Load one registered version and everything serving needs from its tags."""

    mv = client.get_model_version(name, version)
    tags = dict(mv.tags)
    inputs = _json_tag(tags, "model_inputs", None)
    if not inputs:
        raise ValueError(f"{name} v{version} has no model_inputs tag")
    # ``models:/`` resolves through MLflow's process-wide URIs, not the client's: a batch job
    # or a fresh task process would otherwise look in ./mlflow.db.
    mlflow.set_tracking_uri(client.tracking_uri)
    mlflow.set_registry_uri(client._registry_uri)
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


class AliasWatcher:
    """Follows ``models:/<name>@<alias>``; ``current`` is what requests use.

    ``keep_when_missing``: the champion keeps serving when its alias disappears (a mistake
    must not take the service down); a challenger whose alias is removed (shipped or killed)
    is dropped, which ends the experiment. An unreachable registry never drops anything.
    """

    def __init__(
        self,
        tracking_uri: str,
        name: str,
        poll_seconds: float,
        alias: str = CHAMPION_ALIAS,
        *,
        keep_when_missing: bool = True,
    ) -> None:

        self.client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        self.name = name
        self.alias = alias
        self.keep_when_missing = keep_when_missing
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
                mv = self._wanted()
            except Exception as exc:  # registry down, alias missing: keep what we have
                missing = _is_missing(exc)
                self.registry_status = "ok" if missing else "unreachable"
                if missing and not self.keep_when_missing:
                    if self.current is not None:
                        log.info("%s alias removed: dropping v%s", self.alias, self.current.version)
                    self.current, self.last_error = None, None
                    return False
                self.last_error = f"alias lookup failed: {exc}"
                log.warning("%s lookup failed: %s", self.alias, exc)
                return False
            self.registry_status = "ok"
            if self.current is not None and self.current.version == str(mv.version):
                return False
            try:
                candidate = load_version(self.client, self.name, str(mv.version), self.alias)
                smoke_test(candidate)
            except Exception as exc:
                self.last_error = f"version {mv.version} refused: {exc}"
                log.error("refusing %s v%s as %s: %s", self.name, mv.version, self.alias, exc)
                return False
            previous = self.current.version if self.current else None
            self.current = candidate  # the swap: one reference assignment
            self.last_error = None
            log.info("%s: now %s v%s (was %s)", self.alias, self.name, mv.version, previous)
            return True

    def _wanted(self) -> Any:
        """The registry's model version this watcher should serve now."""
        return self.client.get_model_version_by_alias(self.name, self.alias)

    def start(self) -> None:
        self.check()
        self._thread = threading.Thread(target=self._run, name=f"{self.alias}-watcher", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            self.check()

    def stop(self) -> None:
        self._stop.set()


class ChampionWatcher(AliasWatcher):
    """The champion: what serving decides with.

    From the source tree it follows the ``champion`` alias. A deployed Bento pins the version
    it was built and smoke-tested for (``pinned``): the registry is still asked each poll
    (so an outage shows in ``registry_status``) but the alias moving changes nothing until
    the deploy rolls the workers onto the new version's Bento.
    """

    def __init__(
        self, tracking_uri: str, name: str, poll_seconds: float, pinned: str | None = None
    ) -> None:
        super().__init__(tracking_uri, name, poll_seconds, CHAMPION_ALIAS, keep_when_missing=True)
        self.pinned = pinned

    def _wanted(self) -> Any:
        if self.pinned is None:
            return super()._wanted()
        return self.client.get_model_version(self.name, self.pinned)


def _is_missing(exc: Exception) -> bool:
    text = str(exc)
    return "RESOURCE_DOES_NOT_EXIST" in text or "not found" in text.lower()
