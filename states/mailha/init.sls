{#- Converges this node to its roles in the site model. Rendering this file validates the whole
    mailha pillar first: a bad pillar stops here with every problem listed, before anything runs. #}
include:
{%- for name in salt['mailha_site.formula']() %}
  - mailha.{{ name }}
{%- endfor %}
