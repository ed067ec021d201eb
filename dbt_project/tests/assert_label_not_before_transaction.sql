-- A chargeback cannot be known before the transaction happened: a label that "arrives" earlier
-- would leak the future into training sets cut by label_available_at.
select
    transaction_id,
    tx_datetime,
    label_available_at
from {{ ref('fct_transactions') }}
where label_available_at < tx_datetime
