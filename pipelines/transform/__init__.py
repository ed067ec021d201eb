"""Transformation layer: the dbt project (raw lake -> DuckDB warehouse -> Parquet marts).

``dbt``: runs the project (imports dbt). ``mart``: the marts' paths and readers (no dbt).
"""
