"""The Feast feature store: configuration rendering, apply, materialize, retrieval (``store``,
``offline``, ``online``), and ``build``: the ``build_features`` stage in one call (dbt, the
Spark job, then the store)."""
