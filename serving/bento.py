"""The deployed artifact's names: one Bento of the scoring service per model version.

A Bento tagged ``fraud_scoring:model-v<N>`` serves registry version N of the model and
nothing else (``serving.model.ChampionWatcher`` pins it); the source tree follows the
``champion`` alias instead (development and tests).
"""

from __future__ import annotations

from pathlib import Path

import yaml

BENTO_NAME = "fraud_scoring"  # the service name, @bentoml.service(name=...)
_VERSION_PREFIX = "model-v"


def bento_version(model_version: str) -> str:
    return f"{_VERSION_PREFIX}{model_version}"


def bento_tag(model_version: str) -> str:
    return f"{BENTO_NAME}:{bento_version(model_version)}"


def model_version_of(tag: str) -> str:
    """The model version a Bento tag pins (``fraud_scoring:model-v3`` -> ``3``)."""
    name, _, version = tag.partition(":")
    if name != BENTO_NAME or not version.startswith(_VERSION_PREFIX):
        raise ValueError(f"{tag!r} is not a {BENTO_NAME}:{_VERSION_PREFIX}<N> Bento tag")
    return version.removeprefix(_VERSION_PREFIX)


def running_bento(code: Path = Path(__file__)) -> str | None:
    """The tag of the Bento this code runs from; None from the source tree.

    A Bento keeps its code under ``<bento>/src/`` and its manifest in ``<bento>/bento.yaml``.
    """
    src = code.resolve().parents[1]
    manifest = src.parent / "bento.yaml"
    if src.name != "src" or not manifest.is_file():
        return None
    meta = yaml.safe_load(manifest.read_text())
    return f"{meta['name']}:{meta['version']}"
