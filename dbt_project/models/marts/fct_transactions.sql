-- One row per transaction with its calendar flags and, once it has arrived, its fraud label.
-- A table in the warehouse, incremental by day (dbt_project.yml), exported to the lake one
-- Parquet file per day, <lake>/marts/fct_transactions/date=<day>/fct_transactions.parquet: a
-- build rewrites only the days it rebuilt (export_day_partitions). Day, weekday and hour are
-- taken in UTC explicitly (timezone('UTC', ...)), whatever the session time zone.

{{ config(
    post_hook="{{ export_day_partitions(this, 'marts/fct_transactions', 'tx_date',
                                        'tx_datetime, transaction_id') }}",
) }}

{%- set since = rebuild_since() %}

with transactions as (

    select * from {{ ref('stg_transactions') }}
    {% if since %}where partition_date >= date '{{ since }}'{% endif %}

),

labels as (

    select * from {{ ref('stg_labels') }}
    {% if since %}where partition_date >= date '{{ since }}'{% endif %}

),

final as (

    select
        transactions.transaction_id,
        transactions.tx_datetime,
        cast(timezone('UTC', transactions.tx_datetime) as date) as tx_date,
        transactions.customer_id,
        transactions.terminal_id,
        transactions.tx_amount,
        -- isodow: Monday = 1 ... Saturday = 6, Sunday = 7.
        cast(isodow(timezone('UTC', transactions.tx_datetime)) in (6, 7) as integer)
            as tx_during_weekend,
        cast(hour(timezone('UTC', transactions.tx_datetime)) <= 6 as integer) as tx_during_night,
        -- NULL until the label arrives: "not known yet" must not read as "genuine".
        labels.tx_fraud,
        labels.tx_fraud_scenario,
        labels.label_available_at
    from transactions
    left join labels
        on transactions.transaction_id = labels.transaction_id

)

-- Sorted by time so Parquet row-group statistics let readers skip by date.
select * from final
order by tx_datetime, transaction_id
