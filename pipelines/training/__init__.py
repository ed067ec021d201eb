"""Training: point-in-time datasets from Feast, a tuned PyTorch model, MLflow tracking.

Modules: ``protocol`` (time windows), ``dataset`` (Feast retrieval, labels as known),
``metrics`` (handbook metrics), ``model`` (network and preprocessing), ``tune`` (Optuna),
``train`` (the orchestration a DAG or the CLI runs), ``artifacts`` (plots, lineage).
Heavy libraries are imported inside functions: DAG files import this package at parse time.
"""
