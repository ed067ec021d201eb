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
