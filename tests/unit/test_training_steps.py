"""The training steps' hand-over files: typed, written atomically, a missing one names its step."""

from __future__ import annotations

import pytest

from pipelines.training import steps


def test_a_step_file_reads_back_what_was_written(tmp_path):
    registration = steps.write(tmp_path, steps.Registration, {"version": "3"})
    assert steps.read(tmp_path, steps.Registration) == registration == {"version": "3"}
    assert steps.path(tmp_path, steps.Registration).name == "registration.json"
    assert [p.name for p in tmp_path.iterdir()] == ["registration.json"]  # no temporary left


def test_a_missing_step_file_names_the_step_to_run_first(tmp_path):
    with pytest.raises(FileNotFoundError, match="run the step train_final first"):
        steps.read(tmp_path, steps.FinalModel)


def test_every_step_file_has_its_own_name():
    names = [name for name, _ in steps.FILES.values()]
    assert len(set(names)) == len(names)
