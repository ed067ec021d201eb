"""Training: point-in-time datasets from Feast, a tuned PyTorch ensemble, MLflow tracking.

Modules: ``dataset`` (Feast retrieval, labels as known), ``model`` (network and
preprocessing), ``tune`` (the Optuna study), ``tune_workers`` (its worker processes),
``ensemble`` (the final model's members), ``distributed`` (the ensemble under torchrun),
``steps`` (the files the steps hand each other), ``train`` (the steps a DAG or the CLI runs),
``bootstrap`` (the first model), ``artifacts`` (plots, lineage). The protocol's windows are
``pipelines.protocol``, the metrics ``pipelines.metrics``, the MLflow runs and registry
``pipelines.registry``. DAG files import ``bootstrap`` at parse time: it imports nothing heavy
at module level.
"""
