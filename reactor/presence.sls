{#- The master's presence_events: minions appeared or disappeared (salt/presence/change).
    One reaction, no logic: mailha.presence re-checks the real servers among them. -#}
mailha_presence_changed:
  runner.state.orchestrate:
    - args:
      - mods: mailha.orch.presence
      - pillar:
          mailha_event:
            new: {{ data.get('new', []) | json }}
            lost: {{ data.get('lost', []) | json }}
