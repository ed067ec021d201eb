"""One feature service per model feature set; a model records the service it was trained on."""

from feast import FeatureService
from feature_views import terminal_state
from transaction_features import transaction_features

# v1: the handbook's 15 inputs (amount, weekend/night, customer and delayed terminal windows)
# plus velocity, amount ratio, time since the previous transaction, novelty flags and the
# terminal's newest known labels.
fraud_model_v1 = FeatureService(
    name="fraud_model_v1",
    features=[transaction_features, terminal_state],
    description="Inputs of the fraud-detector model, version 1.",
)
