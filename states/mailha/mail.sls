include:
  - mailha.realserver
  - mailha.ldap

{#- The vmail share first: fstab line, immutable mountpoint, mount. Nothing below may run on the
    local disk: the guard fails while the share is not mounted, and everything requires it. #}
mailha-vmail-share:
  mailha_mail.vmail_share: []

mailha-vmail-guard:
  mailha_mail.share_guard:
    - require:
      - mailha_mail: mailha-vmail-share

mailha-health-page:
  mailha_mail.health_page: []

{%- if salt['mailha_mail.installer']() == 'iredmail' %}
{#- iRedMail path (pillar mailha:mail:iredmail): its installer writes and starts Postfix, Dovecot,
    slapd and the web stack; it runs once per node (marker) against the db VIP. #}
mailha-iredmail:
  mailha_mail.iredmail_installed:
    - require:
      - mailha_mail: mailha-vmail-guard
{%- else %}
{#- Native path: Debian's Postfix and Dovecot configured from the model (files may be written
    any time; only the services wait for the share). #}
mailha-mail-files:
  mailha_mail.configured: []

{%- for svc in ('postfix', 'dovecot') %}
mailha-service-{{ svc }}:
  service.running:
    - name: {{ svc }}
    - enable: True
    - require:
      - mailha_mail: mailha-vmail-guard
    - watch:
      - mailha_mail: mailha-mail-files
{%- endfor %}
{%- endif %}
