{#-
  Rows where column_name lies outside [min_value, max_value] (either bound optional; exclusive
  when inclusive=false). NULLs pass: pair with not_null where a value is required.
-#}
{% test accepted_range(model, column_name, min_value=none, max_value=none, inclusive=true) %}

select {{ column_name }} as out_of_range_value
from {{ model }}
where
    {%- if min_value is none and max_value is none %}
    false
    {%- else %}
    not (
        true
        {%- if min_value is not none %}
        and {{ column_name }} {{ '>=' if inclusive else '>' }} {{ min_value }}
        {%- endif %}
        {%- if max_value is not none %}
        and {{ column_name }} {{ '<=' if inclusive else '<' }} {{ max_value }}
        {%- endif %}
    )
    {%- endif %}

{% endtest %}
