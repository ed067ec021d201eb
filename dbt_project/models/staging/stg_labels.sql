-- One label per transaction_id: the latest to arrive wins (a corrected chargeback replaces the
-- first one); ties broken by partition, file name and value so reruns pick the same row.
-- Before the first label partition exists (the first label_delay_days of history) this is an
-- empty, typed table instead of a read error. A label sits in its transaction's day partition
-- (tested), so an incremental build reads and replaces the days from var `since` on alone.

{% if has_lake_files('raw', 'labels') %}

with source as (

    select * from {{ source('raw', 'labels') }}
    {% if rebuild_since() %}where "date" >= date '{{ rebuild_since() }}'{% endif %}

),

typed as (

    select
        cast(transaction_id as bigint) as transaction_id,
        cast(tx_fraud as integer) as tx_fraud,
        cast(tx_fraud_scenario as integer) as tx_fraud_scenario,
        cast(label_available_at as timestamptz) as label_available_at,
        cast("date" as date) as partition_date,
        filename as source_file
    from source

),

ranked as (

    select
        *,
        row_number() over (
            partition by transaction_id
            order by
                label_available_at desc,
                partition_date desc,
                source_file desc,
                tx_fraud desc,
                tx_fraud_scenario desc
        ) as row_rank
    from typed

)

select * exclude (row_rank)
from ranked
where row_rank = 1

{% else %}

select
    cast(null as bigint) as transaction_id,
    cast(null as integer) as tx_fraud,
    cast(null as integer) as tx_fraud_scenario,
    cast(null as timestamptz) as label_available_at,
    cast(null as date) as partition_date,
    cast(null as varchar) as source_file
where false

{% endif %}
