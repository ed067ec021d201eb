-- First start of the compose `postgres` service: one database per component, all owned by
-- POSTGRES_USER (the entrypoint runs this file as that user, once, on an empty data volume).
-- Separate databases keep each tool's migrations and table names apart, and let each be backed
-- up, moved to its own server or dropped on its own.
CREATE DATABASE airflow;  -- Airflow metadata (FRAUD_AIRFLOW_DATABASE_URL)
CREATE DATABASE mlflow;   -- MLflow tracking + model registry (MLFLOW_BACKEND_STORE_URI)
CREATE DATABASE feast;    -- Feast SQL registry (FRAUD_FEAST_REGISTRY_URL)
CREATE DATABASE optuna;   -- Optuna study storage (FRAUD_OPTUNA_STORAGE)
