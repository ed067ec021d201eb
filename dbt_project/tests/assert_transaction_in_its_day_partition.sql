-- Ingest partitions transactions by the UTC day of tx_datetime; a row in another day's
-- partition means a writer used another clock (local time) and day-based backfills would miss it.
select
    transaction_id,
    tx_datetime,
    partition_date
from {{ ref('stg_transactions') }}
where partition_date <> cast(timezone('UTC', tx_datetime) as date)
