-- The three label columns come from one label row: all set (label arrived) or all NULL.
select
    transaction_id,
    tx_fraud,
    tx_fraud_scenario,
    label_available_at
from {{ ref('fct_transactions') }}
where not (
    (tx_fraud is null and tx_fraud_scenario is null and label_available_at is null)
    or (tx_fraud is not null and tx_fraud_scenario is not null and label_available_at is not null)
)
