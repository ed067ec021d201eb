"""A/B and shadow experiments of the ``challenger`` against the ``champion``.

* ``assignment``: which customers the challenger serves (deterministic hash bucketing);
* ``statistics``: pure functions of the labelled log: per-variant metrics, the bootstrap over
  customers, guardrails and the ship / iterate / kill decision (``compare``);
* ``analysis``: the actions: the prediction log joined with arrived labels, the statistics,
  the registry move and the record (``analyze``);
* ``cli``: ``fraud experiment analyze``.

Light to import (the DAG file imports nothing from here at parse time anyway).
"""
