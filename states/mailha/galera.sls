{#- Galera member (roles db and quorum): galera.cnf from the model, then, on a real root only, a
    Synced member of a Primary component and the balancer's monitoring user. Safe to apply on all
    members at once: only galera:bootstrap_node ever starts a new cluster (see mailha_galera).
    Under a scratch mailha_root (rehearsals, tests) only the file is written. #}
{%- from "mailha/macros.jinja" import packages %}
{{ packages('galera') }}
mailha-galera-cnf:
  mailha_galera.configured:
    - name: {{ salt['mailha_galera.config_path']() }}
{%- if not salt['mailha_site.rehearsal']() %}

mailha-galera-synced:
  mailha_galera.synced:
    - require:
      - mailha_galera: mailha-galera-cnf

{%- if salt['mailha_galera.launcher']() == 'systemd' %}

mailha-galera-boot:
  # a member that reboots rejoins by itself (IST); after a whole-cluster outage no member can
  # form a Primary alone, so booting never bootstraps: mailha.galera_recover does that
  mailha_site.boot_enabled:
    - name: mariadb
    - require:
      - mailha_galera: mailha-galera-synced
{%- endif %}

mailha-galera-sst-user:
  mailha_galera.sst_user_present:
    - require:
      - mailha_galera: mailha-galera-synced

mailha-galera-monitor:
  mailha_galera.monitor_present:
    - require:
      - mailha_galera: mailha-galera-synced
{%- endif %}
