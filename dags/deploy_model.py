"""Deploy the champion: on the model Asset, build a Bento tagged with the model version,
smoke-test it as a real server, then switch the running service (it reloads the alias).
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import dag, task

from pipelines.orchestration import DEFAULT_ARGS, MODEL


@dag(
    schedule=[MODEL],
    start_date=dt.datetime(2024, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["serving", "deploy", "bentoml"],
    doc_md=__doc__,
)
def deploy_model():
    @task
    def champion_version() -> str:
        from mlflow import MlflowClient

        from pipelines.config import get_settings

        s = get_settings()
        client = MlflowClient(tracking_uri=s.tracking_uri, registry_uri=s.tracking_uri)
        return str(client.get_model_version_by_alias(s.model_name, "champion").version)

    @task
    def build_bento(version: str) -> str:
        from serving.deploy import build_bento

        return build_bento(version)

    @task
    def smoke_test(tag: str, version: str) -> dict:
        from pipelines.config import get_settings
        from pipelines.demo import sample_transactions
        from serving.deploy import smoke_test_bento

        sample = sample_transactions(get_settings(), 1)[0]  # the newest real transaction
        score = smoke_test_bento(tag, sample)
        if score["model_version"] != version:
            raise ValueError(f"bento served v{score['model_version']}, expected v{version}")
        return score

    @task
    def switch_service(version: str) -> dict | None:
        from pipelines.config import get_settings
        from serving.deploy import switch_running_service

        info = switch_running_service(get_settings())
        if info is not None and info["version"] != version:
            raise RuntimeError(f"service still serves v{info['version']}: {info}")
        return info

    version = champion_version()
    tag = build_bento(version)
    smoke_test(tag, version) >> switch_service(version)


deploy_model()
