{#- Helpers for reading from and writing to the lake from DuckDB. -#}

{% macro has_lake_files(source_name, table_name) -%}
  {#-
    Whether a raw lake table has any Parquet file yet. read_parquet fails on a glob that
    matches nothing, and labels only start arriving label_delay_days after the first day, so
    models over such a table fall back to an empty, typed relation instead of failing.
    At parse time (execute is false) it answers true so that dbt records the source() call.
  -#}
  {%- if not execute -%}
    {{ return(true) }}
  {%- endif -%}
  {%- set node = graph.sources.values()
      | selectattr('source_name', 'equalto', source_name)
      | selectattr('name', 'equalto', table_name)
      | first -%}
  {%- set glob = node.meta.get('lake_glob') or node.config.meta.get('lake_glob') -%}
  {%- if not glob -%}
    {{ exceptions.raise_compiler_error(
        "source " ~ source_name ~ "." ~ table_name ~ " has no meta.lake_glob") }}
  {%- endif -%}
  {%- set result = run_query("select count(*) from glob('" ~ glob ~ "')") -%}
  {{ return(result.columns[0].values()[0] > 0) }}
{%- endmacro %}


{% macro ensure_lake_directory(relative_path) -%}
  {#-
    Create <FRAUD_LAKE_DIR>/<relative_path> (like mkdir -p below the lake root) so that an
    external model can COPY a single file into it even when dbt runs without the Python runner
    (plain CLI, Cosmos). DuckDB has no mkdir, but a partitioned COPY of zero rows creates its
    target directory (one level at a time) and writes no file; OVERWRITE_OR_IGNORE leaves an
    existing directory and its files alone.
  -#}
  {#- A namespace, because a plain set inside a Jinja loop does not outlive the iteration. -#}
  {%- set ns = namespace(path=env_var('FRAUD_LAKE_DIR').rstrip('/')) -%}
  {%- for part in relative_path.strip('/').split('/') %}
    {%- set ns.path = ns.path ~ '/' ~ part %}
    copy (select 1 as _partition, 1 as _value where false)
      to '{{ ns.path }}' (format parquet, partition_by (_partition), overwrite_or_ignore true);
  {%- endfor %}
{%- endmacro %}


{% macro rebuild_since() -%}
  {#-
    The first day an incremental build rebuilds (var `since`, YYYY-MM-DD), or none: the first
    build, a --full-refresh, or a build given no `since` reads every day. Raw and staged rows
    are partitioned by transaction day and no row depends on a later day, so the days from
    `since` on can be rebuilt from their own partitions alone.
  -#}
  {%- set since = var('since', none) -%}
  {%- if since is none or not is_incremental() -%}
    {{ return(none) }}
  {%- endif -%}
  {%- if not modules.re.match('^[0-9]{4}-[0-9]{2}-[0-9]{2}$', since | string) -%}
    {{ exceptions.raise_compiler_error("var since must be a day, YYYY-MM-DD; got " ~ since) }}
  {%- endif -%}
  {{ return(since | string) }}
{%- endmacro %}


{% macro export_day_partitions(relation, folder, day_column, order_by) -%}
  {#-
    Export a model to <FRAUD_LAKE_DIR>/<folder>/date=<day>/<model>.parquet, one file per day:
    the days from var `since` on (every day on a --full-refresh or without `since`), and any
    day whose file is missing. Each file is one COPY, which DuckDB writes as tmp_<name> and
    renames over the old one, so a reader sees a day's old file or its new one, never half of
    one; the days before `since` are not touched. Used as a post-hook.
  -#}
  {%- if not execute -%}
    {{ return('') }}
  {%- endif -%}
  {%- set root = env_var('FRAUD_LAKE_DIR').rstrip('/') ~ '/' ~ folder.strip('/') -%}
  {%- set file_name = relation.identifier ~ '.parquet' -%}
  {%- set since = none if should_full_refresh() else var('since', none) -%}
  {%- do run_query(ensure_lake_directory(folder)) -%}
  {%- set days_sql -%}
    select distinct cast({{ day_column }} as varchar) as day
    from {{ relation }}
    where {{ 'true' if since is none else day_column ~ " >= date '" ~ since ~ "'" }}
      or {{ day_column }} not in (
        select cast(regexp_extract(file, 'date=([0-9-]+)/', 1) as date)
        from glob('{{ root }}/date=*/{{ file_name }}')
      )
    order by day
  {%- endset -%}
  {%- for day in run_query(days_sql).columns[0].values() -%}
    {%- set export -%}
      {{ ensure_lake_directory(folder ~ '/date=' ~ day) }}
      copy (
        select * from {{ relation }} where {{ day_column }} = date '{{ day }}' order by {{ order_by }}
      ) to '{{ root }}/date={{ day }}/{{ file_name }}' (format parquet);
    {%- endset -%}
    {%- do run_query(export) -%}
  {%- endfor -%}
  {{ return('') }}
{%- endmacro %}


{% macro since_filter(partition_column) -%}
  {#-
    A `where` for the singular tests over the raw sources: the partitions from var `since` on,
    which are all the build reads (every partition without it). An id repeated between a
    rebuilt day and an older one is still caught, by the staging table's unique test.
  -#}
  {%- set since = var('since', none) -%}
  {%- if since is none -%}
    true
  {%- else -%}
    "{{ partition_column }}" >= date '{{ since }}'
  {%- endif -%}
{%- endmacro %}
