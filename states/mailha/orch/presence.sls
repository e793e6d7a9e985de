{#- Orchestration for a presence change, by hand or in operators' own orchestrations (the reactor
    calls mailha.presence directly: see reactor/presence.sls): re-check the real servers
    among the minions that came or went; the runner skips every other id. -#}
{%- set ev = salt['pillar.get']('mailha_event', {}) %}
mailha_presence:
  salt.runner:
    - name: mailha.presence
    - new: {{ ev.get('new', []) | json }}
    - lost: {{ ev.get('lost', []) | json }}
