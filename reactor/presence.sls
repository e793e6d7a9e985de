{#- The master's presence_events: minions appeared or disappeared (salt/presence/change).
    One reaction, no logic: mailha.presence re-checks the real servers among them (called
    directly, as in health.sls: an orchestration around one runner step only adds its cost). -#}
mailha_presence_changed:
  runner.mailha.presence:
    - args:
      - new: {{ data.get('new', []) | json }}
      - lost: {{ data.get('lost', []) | json }}
