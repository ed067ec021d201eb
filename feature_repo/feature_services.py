"""One feature service per model feature set; a model records the service it was trained on."""

from feast import FeatureService
from feature_views import terminal_labels, terminal_state
from transaction_features import terminal_fraud_streak, transaction_features

# v1: the handbook's 15 inputs (amount, weekend/night, customer and delayed terminal windows)
# plus velocity, amount ratio, time since the previous transaction, novelty flags and the
# terminal's newest known labels and the age of its current fraud streak.
fraud_model_v1 = FeatureService(
    name="fraud_model_v1",
    features=[
        transaction_features,
        terminal_state,
        # The streak's start is a timestamp, not an input: the model sees its age.
        terminal_labels[["terminal_last_label_fraud", "terminal_last3_labels_fraud_share"]],
        terminal_fraud_streak,
    ],
    description="Inputs of the fraud-detector model, version 1.",
)
