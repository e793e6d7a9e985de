{#- Galera arbitrator (role garbd): garbd votes in the group without holding data. #}
{%- from "mailha/macros.jinja" import packages %}
{{ packages('garbd') }}
{%- if not salt['mailha_site.rehearsal']() %}
mailha-garbd:
  mailha_galera.arbitrator_running: []
{%- endif %}
