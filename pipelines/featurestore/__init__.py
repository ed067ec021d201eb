"""The Feast feature store: configuration rendering, apply, materialize, retrieval."""
