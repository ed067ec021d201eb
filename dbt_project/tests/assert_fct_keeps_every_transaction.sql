-- The label join must neither drop nor duplicate transactions.
select
    staged.n as staged_transactions,
    exported.n as exported_transactions
from (select count(*) as n from {{ ref('stg_transactions') }}) as staged
cross join (select count(*) as n from {{ ref('fct_transactions') }}) as exported
where staged.n <> exported.n
