"""Model registry: versions, the promotion gate and rollback (MLflow aliases, never stages)."""
