"""Transformation layer: the dbt project (raw lake -> DuckDB warehouse -> Parquet marts)."""

from pipelines.transform.dbt import (
    DbtBuildError,
    DbtBuildResult,
    mart_file,
    marts_path,
    run_dbt_build,
)

__all__ = ["DbtBuildError", "DbtBuildResult", "mart_file", "marts_path", "run_dbt_build"]
