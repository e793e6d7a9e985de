{#- Converges this node to its roles in the site model. Rendering this file validates the whole
    mailha pillar first: a bad pillar stops here with every problem listed, before anything runs. #}
{%- set roles = salt['mailha_site.roles']() %}
include:
{%- for role in roles %}
  - mailha.{{ role }}
{%- endfor %}
