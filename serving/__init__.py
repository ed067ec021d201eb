"""The BentoML scoring service (``serving.service:FraudScoringService``)."""
