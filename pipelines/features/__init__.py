"""Spark feature tables (customer and terminal windows, label arrivals), point-in-time correct.

``job.py`` is the Spark application (self-contained: it is what ships to a cluster);
``runner.run_feature_job`` launches it with spark-submit.
"""

from pipelines.features.runner import FeatureJobResult, FeatureTable, run_feature_job

__all__ = ["FeatureJobResult", "FeatureTable", "run_feature_job"]
