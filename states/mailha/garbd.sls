{#- Galera arbitrator (role garbd): garbd votes in the group without holding data. #}
{%- if not salt['config.get']('mailha_root') %}
mailha-garbd:
  mailha_galera.arbitrator_running: []
{%- endif %}
