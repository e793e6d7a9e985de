{%- from "mailha/macros.jinja" import rendered_files %}
{{ rendered_files('galera') }}
