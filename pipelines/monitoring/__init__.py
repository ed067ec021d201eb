"""Monitoring: data profiles (whylogs) for drift checks against the training reference.

Modules (small, one concern each; see ``monitor`` for how they chain: measured by ``drift`` and
``performance``, judged by ``policy``, published by ``metrics_table`` and ``report``):

* ``whylogs_compat``: the one place whylogs is imported from (numpy 2 shim, no telemetry);
* ``data``: a day of transactions with context columns (mart) and of the prediction log;
* ``profiles``: ``profile_frame`` and the per-day profile store (windows = merges of days);
* ``reference``: the champion, its training period and reference profile, the score baseline;
* ``drift``: KS / chi-square (whylogs), PSI, shift, Hellinger, data-quality issues;
* ``performance``: AUC / AP / CP@100 on the latest labelled window vs the champion's figures;
* ``policy``: the documented policy: ``judge_columns`` (severities of the measured columns),
  ``decide(scores) -> MonitorDecision``;
* ``metrics_table`` and ``report``: the append-only drift-metrics table, the HTML report;
* ``retrain`` and ``trigger``: the deduplicated ``train_model`` trigger of ``monitor_drift``;
* ``cli``: the ``monitor`` commands.
"""
