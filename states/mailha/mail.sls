include:
  - mailha.realserver
  - mailha.ldap

{#- The vmail share first: fstab line, immutable mountpoint, mount. Nothing that serves mail may
    run on the local disk: the guard fails while the share is not mounted, and every mail service
    (or the iRedMail installer) requires it. In a rehearsal (scratch mailha_root) only files are
    written: the guard, the installer and the services would act on this host, not the node. #}
{%- set rehearsal = salt['mailha_site.rehearsal']() %}
{%- set native = salt['mailha_mail.installer']() == 'native' %}
{%- from "mailha/macros.jinja" import packages %}
{{ packages('mail') }}

mailha-vmail-share:
  mailha_mail.vmail_share: []

mailha-health-page:
  mailha_mail.health_page: []

{%- if native %}
{#- Native path: Debian's Postfix and Dovecot configured from the model. #}

mailha-mail-files:
  mailha_mail.configured: []
{%- endif %}

{%- if not rehearsal %}

mailha-vmail-guard:
  mailha_mail.share_guard:
    - require:
      - mailha_mail: mailha-vmail-share
{%- if native %}
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
{%- else %}
{#- iRedMail path (pillar mailha:mail:iredmail): its installer writes and starts Postfix, Dovecot,
    slapd and the web stack; it runs once per node (marker) against the db VIP. #}

mailha-iredmail:
  mailha_mail.iredmail_installed:
    - require:
      - mailha_mail: mailha-vmail-guard
    - require_in:
      - mailha_ldap: mailha_ldap_mirrormode   # the installer writes the slapd.conf it merges into
{%- endif %}
{%- endif %}
