"""The build_features DAG: the plan first, the lake state recorded only after the online store
is loaded, and the Trigger form's rebuild params."""

import pytest

from tests.conftest import describe_dag


@pytest.fixture(scope="module")
def described(tmp_path_factory):
    return describe_dag(
        tmp_path_factory.mktemp("build_features_dag"), "build_features.py", "build_features"
    )


def test_the_plan_comes_first_and_the_record_last(described):
    assert described["errors"] == {}
    assert described["max_active_runs"] == 1
    down = described["downstream"]
    assert down["plan"] == ["dbt_build"]
    assert sorted(down["dbt_build"]) == ["dbt_docs", "spark_features"]
    assert down["spark_features"] == ["feast_apply"]
    assert down["feast_apply"] == ["materialize_online"]
    assert sorted(down["materialize_online"]) == ["first_model_needed", "record_build"]
    assert down["record_build"] == []
    assert described["outlets"]["materialize_online"] == ["features"]


def test_params_force_a_rebuild(described):
    assert described["params"] == {"full_refresh": False, "rebuild_from": None}
