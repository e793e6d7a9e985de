{#- A balancer's mailha_health or a node's mailha_local beacon reported a change.
    One reaction, no logic: mailha.remediate validates every field, folds the report into a
    re-check already queued for the node, or re-checks from the load balancers before acting
    (the event is only a trigger).
    The runner is called directly, not through runner.state.orchestrate: the orchestration held
    this one step and cost 0.6-1.1 s of master CPU per event (pillar and SLS compiled each
    time), so a flood of events cost minutes before the runner could collapse it. -#}
mailha_health_changed:
  runner.mailha.remediate:
    - args:
      - node: {{ data.get('node') | json }}
      - reporter: {{ data.get('id') | json }}
      - status: {{ data.get('status') | json }}
      - source: event
