-- One row per transaction with its calendar flags and, once it has arrived, its fraud label.
-- Exported as a single Parquet file in <lake>/marts/fct_transactions/: DuckDB's COPY writes
-- tmp_<name> then renames it over the old file, so a rerun replaces the whole export and never
-- leaves stale rows beside the new ones. Day, weekday and hour are taken in UTC explicitly
-- (timezone('UTC', ...)), whatever the session time zone.

{{ config(
    location=env_var('FRAUD_LAKE_DIR').rstrip('/') ~ '/marts/fct_transactions/fct_transactions.parquet',
    pre_hook="{{ ensure_lake_directory('marts/fct_transactions') }}",
) }}

with transactions as (

    select * from {{ ref('stg_transactions') }}

),

labels as (

    select * from {{ ref('stg_labels') }}

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
