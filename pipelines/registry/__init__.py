"""MLflow: ``tracking`` (runs, parameters, metrics), ``versions`` (registration, lookups by
alias, history) and ``promotion`` (the gate and rollback: the moves of the aliases, never
stages)."""
