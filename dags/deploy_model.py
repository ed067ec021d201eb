"""Deploy the champion: on the model Asset, build the Bento of its version, smoke-test it as
a real server, then roll the running service's workers onto that Bento (``serving/deploy.py``).
"""

from __future__ import annotations

from airflow.sdk import dag, task

from pipelines.config import get_settings
from pipelines.orchestration import DEFAULT_ARGS, MODEL, history_start


@dag(
    schedule=[MODEL],
    start_date=history_start(),
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

        from pipelines.contracts import CHAMPION_ALIAS

        s = get_settings()
        client = MlflowClient(tracking_uri=s.tracking_uri, registry_uri=s.tracking_uri)
        return str(client.get_model_version_by_alias(s.model_name, CHAMPION_ALIAS).version)

    @task
    def build_bento(version: str) -> str:
        from serving.deploy import build_bento

        return build_bento(get_settings(), version)

    @task
    def smoke_test(tag: str) -> dict:
        from pipelines.demo import sample_transactions
        from serving.deploy import smoke_test_bento

        s = get_settings()
        return smoke_test_bento(s, tag, sample_transactions(s, 1)[0])  # the newest payment

    @task
    def roll_service(tag: str) -> list[dict] | None:
        from serving.deploy import deploy

        return deploy(get_settings(), tag)

    version = champion_version()
    tag = build_bento(version)
    smoke_test(tag) >> roll_service(tag)


deploy_model()
