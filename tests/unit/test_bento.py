"""The Bento naming contract: a tag pins one model version; code knows the Bento it runs from."""

from __future__ import annotations

import pytest

from serving.bento import bento_tag, model_version_of, running_bento


def test_a_tag_pins_its_model_version():
    assert bento_tag("12") == "fraud_scoring:model-v12"
    assert model_version_of(bento_tag("12")) == "12"
    for wrong in ("fraud_scoring:abc123", "other:model-v1", "fraud_scoring"):
        with pytest.raises(ValueError, match="not a fraud_scoring:model-v<N> Bento tag"):
            model_version_of(wrong)


def test_code_in_a_bento_knows_its_tag_and_the_source_tree_has_none(tmp_path):
    code = tmp_path / "model-v3" / "src" / "serving" / "bento.py"
    code.parent.mkdir(parents=True)
    code.touch()
    assert running_bento(code) is None  # no manifest
    (tmp_path / "model-v3" / "bento.yaml").write_text("name: fraud_scoring\nversion: model-v3\n")
    assert running_bento(code) == "fraud_scoring:model-v3"
    elsewhere = tmp_path / "repo" / "serving" / "bento.py"  # not under src/
    elsewhere.parent.mkdir(parents=True)
    (tmp_path / "bento.yaml").write_text("name: fraud_scoring\nversion: model-v9\n")
    assert running_bento(elsewhere) is None
    assert running_bento() is None  # this checkout is a source tree
