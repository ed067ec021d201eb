-- One row per transaction_id, typed as the lake contract says.
-- The lake holds one file per (day partition, source), so a repeated id means two files claim
-- the same transaction (a second source, a hand-placed file). Keep the row of the latest
-- partition, then of the greatest file name, then by value: the same row on every rerun.
-- Incremental: only the day partitions from var `since` on are read, and they replace those
-- days' rows (dbt_project.yml); an id repeated across an old and a rebuilt day then fails
-- the unique test instead of being deduplicated.

with source as (

    select * from {{ source('raw', 'transactions') }}
    {% if rebuild_since() %}where "date" >= date '{{ rebuild_since() }}'{% endif %}

),

typed as (

    select
        cast(transaction_id as bigint) as transaction_id,
        cast(tx_datetime as timestamptz) as tx_datetime,
        cast(customer_id as bigint) as customer_id,
        cast(terminal_id as bigint) as terminal_id,
        cast(tx_amount as double) as tx_amount,
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
                partition_date desc,
                source_file desc,
                tx_datetime desc,
                tx_amount desc,
                customer_id,
                terminal_id
        ) as row_rank
    from typed

)

select * exclude (row_rank)
from ranked
where row_rank = 1
