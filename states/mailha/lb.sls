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

{#- The site CA (mail:tls:ca) ldirectord's https checks trust: the operator puts the file on the
    balancers; a missing or bad one fails here, before the drop-in points ldirectord at it. #}
mailha-ldirectord-ca:
  mailha_ldirectord.ca_present:
    - name: mail:tls:ca
    - require_in:
      - mailha_site: mailha-file-ldirectord-ca
{%- if not rehearsal %}

mailha-service-keepalived:
  service.running:
    - name: keepalived
    - enable: True
    - watch:
      - mailha_site: mailha-file-keepalived
      - mailha_keepalived: mailha-keepalived-notify
    - require:
      - mailha_site: mailha-file-keepalived-ipvs-ready

{#- systemd 252 (Debian 12) does not flag a unit whose drop-in directory is new as needing a
    reload (systemd#31752), so Salt's provider would restart ldirectord with the old environment. #}
mailha-ldirectord-unit-reload:
  module.run:
    - service.systemctl_reload: []
    - onchanges:
      - mailha_site: mailha-file-ldirectord-ca

mailha-service-ldirectord:
  service.running:
    - name: ldirectord
    - enable: True
    - require:
      - mailha_ldirectord: mailha-ldirectord-maintenance
      - mailha_ldirectord: mailha-ldirectord-ca
      - module: mailha-ldirectord-unit-reload
    - watch:
      - mailha_site: mailha-file-ldirectord
      - mailha_site: mailha-file-ldirectord-ca
{%- for svc in ('keepalived', 'ldirectord') %}

mailha-boot-{{ svc }}:
  mailha_site.boot_enabled:  # service.running's enable is skipped when its watch fires
    - name: {{ svc }}
    - require:
      - service: mailha-service-{{ svc }}
{%- endfor %}
{%- endif %}
