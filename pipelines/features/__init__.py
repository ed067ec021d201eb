"""Spark feature tables (customer and terminal windows), point-in-time correct.

``job.py`` is the Spark application (self-contained: it is what ships to a cluster);
``runner.run_feature_job`` launches it with spark-submit.
"""

from pipelines.features.runner import FeatureJobResult, run_feature_job

__all__ = ["FeatureJobResult", "run_feature_job"]
