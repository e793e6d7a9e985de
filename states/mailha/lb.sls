{#- Load balancer: keepalived moves the mail VIP and the db VIP (two VRRP instances, priority by
    lb order in the pillar); ldirectord health-checks the real servers and keeps the IPVS table.
    Operator and reactor drains are files in ldirectord's maintenancedir, never table edits that
    ldirectord would undo. A rehearsal (scratch mailha_root) writes files only. #}
{%- from "mailha/macros.jinja" import packages, rendered_files %}
{%- set rehearsal = salt['mailha_site.rehearsal']() %}
{{ packages('lb') }}
{{ rendered_files('lb') }}

mailha-keepalived-notify:
  mailha_keepalived.notify_hook:
    - name: /etc/keepalived/mailha-notify.sh

mailha-ldirectord-maintenance:
  mailha_ldirectord.maintenance_dir:
    - name: /etc/ldirectord.maintenance
{%- if not rehearsal %}

mailha-service-keepalived:
  service.running:
    - name: keepalived
    - enable: True
    - watch:
      - mailha_site: mailha-file-keepalived
      - mailha_keepalived: mailha-keepalived-notify

mailha-service-ldirectord:
  service.running:
    - name: ldirectord
    - enable: True
    - require:
      - mailha_ldirectord: mailha-ldirectord-maintenance
    - watch:
      - mailha_site: mailha-file-ldirectord
{%- endif %}
