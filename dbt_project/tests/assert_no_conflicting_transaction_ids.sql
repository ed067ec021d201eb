-- A transaction id claimed by rows that disagree (time, customer, terminal or amount) is a data
-- error that staging must not paper over by picking one: it fails the build. An exact
-- re-delivery of the same row is harmless and staging deduplicates it quietly. An incremental
-- build checks the partitions it reads (since_filter).
with versions as (

    select distinct transaction_id, tx_datetime, customer_id, terminal_id, tx_amount
    from {{ source('raw', 'transactions') }}
    where {{ since_filter('date') }}

)

select transaction_id, count(*) as conflicting_versions
from versions
group by transaction_id
having count(*) > 1
