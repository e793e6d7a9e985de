{#- A balancer's mailha_health or a node's mailha_local beacon reported a change.
    One reaction, no logic: the orchestration calls mailha.remediate, which validates every
    field and re-checks from the load balancers before acting (the event is only a trigger). -#}
mailha_health_changed:
  runner.state.orchestrate:
    - args:
      - mods: mailha.orch.remediate
      - pillar:
          mailha_event:
            node: {{ data.get('node') | json }}
            status: {{ data.get('status') | json }}
            reporter: {{ data.get('id') | json }}
