-- A label is written to its transaction's day partition (not the day it arrived): what lets an
-- incremental build rebuild a day from that day's transaction and label partitions alone.
select
    labels.transaction_id,
    labels.partition_date as label_partition_date,
    transactions.partition_date as transaction_partition_date
from {{ ref('stg_labels') }} as labels
inner join {{ ref('stg_transactions') }} as transactions
    on labels.transaction_id = transactions.transaction_id
where labels.partition_date <> transactions.partition_date
