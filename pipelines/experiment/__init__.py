"""A/B and shadow experiments of the ``challenger`` against the ``champion``.

* ``assignment``: which customers the challenger serves (deterministic hash bucketing);
* ``analysis``: the prediction log joined with arrived labels, per-variant metrics,
  guardrails, a significance test and the ship / iterate / kill decision;
* ``cli``: ``fraud experiment analyze``.

Light to import (the DAG file imports nothing from here at parse time anyway).
"""
