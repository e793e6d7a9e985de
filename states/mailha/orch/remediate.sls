{#- Orchestration for one health report, for operators' own orchestrations and by hand (the
    reactor calls mailha.remediate directly: see reactor/health.sls). The runner holds every
    decision: it validates the node id, ignores reports that are not authoritative, re-checks
    from the load balancers, then drains/withdraws or restores, and fires
    mailha/remediation/<node>/<outcome> with the reason.
    By hand: salt-run state.orchestrate mailha.orch.remediate pillar='{"mailha_event": {"node": "mail1"}}' -#}
{%- set ev = salt['pillar.get']('mailha_event', {}) %}
mailha_remediate:
  salt.runner:
    - name: mailha.remediate
    - node: {{ ev.get('node') | json }}
    - reporter: {{ ev.get('reporter') | json }}
    - status: {{ ev.get('status') | json }}
    - source: event
