"""The preloading executor's import step (its effect on a real scheduler's workers is checked in
tests/production/test_airflow_postgres.py)."""

from __future__ import annotations

from pipelines.platform.executor import preload


def test_a_module_that_cannot_be_imported_is_reported_and_left_to_the_task():
    failed = preload(("json", "no_such_module_for_the_tasks"))
    assert list(failed) == ["no_such_module_for_the_tasks"]
    assert "ModuleNotFoundError" in failed["no_such_module_for_the_tasks"]


def test_a_library_with_an_import_helper_is_imported_through_it():
    import sys

    assert preload(("pipelines.monitoring.whylogs_compat:import_whylogs",)) == {}
    assert "whylogs" in sys.modules
