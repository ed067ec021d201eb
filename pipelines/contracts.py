"""Names several packages must agree on, owned here: the registry's aliases.

Pure constants (no imports): DAG files, serving and the Spark driver may all import it.
"""

from __future__ import annotations

# Aliases of ``settings.model_name`` in the MLflow registry (``pipelines/registry/gate.py``
# moves them; serving follows ``champion``, experiments compare with ``challenger``).
CHAMPION_ALIAS = "champion"
CHALLENGER_ALIAS = "challenger"
PREVIOUS_CHAMPION_ALIAS = "previous_champion"
