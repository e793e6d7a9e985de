include:
  - mailha.realserver
  - mailha.ldap

{#- The vmail share first: fstab line, immutable mountpoint, mount. Nothing that serves mail may
    run on the local disk: the guard fails while the share is not mounted, and every mail service
    (or the iRedMail installer) requires it. In a rehearsal (scratch mailha_root) only files are
    written: the guard, the installer and the services would act on this host, not the node. #}
{%- set rehearsal = salt['mailha_site.rehearsal']() %}
{%- set native = salt['mailha_mail.installer']() == 'native' %}
{#- Native path with http/https checks on the mail VIP: our nginx serves the health page. #}
{%- set web = native and salt['mailha_mail.web_listeners']() %}
{%- from "mailha/macros.jinja" import packages, rendered_files %}
{{ packages('mail') }}

mailha-vmail-share:
  mailha_mail.vmail_share: []

mailha-health-page:
  mailha_mail.health_page: []

{%- if native %}
{#- Native path: Debian's Postfix and Dovecot configured from the model. #}

mailha-mail-files:
  mailha_mail.configured: []
{{ rendered_files('mail') }}
{%- if web %}

mailha-nginx-default-site:
  mailha_mail.default_site_disabled: []
{%- endif %}
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

mailha-boot-{{ svc }}:
  mailha_site.boot_enabled:  # service.running's enable is skipped when its watch fires
    - name: {{ svc }}
    - require:
      - service: mailha-service-{{ svc }}
{%- endfor %}
{%- if web %}

mailha-service-nginx:
  service.running:
    - name: nginx
    - enable: True
    - require:
      - mailha_mail: mailha-vmail-guard
      - mailha_mail: mailha-health-page
    - watch:
      - mailha_site: mailha-file-nginx
      - mailha_mail: mailha-nginx-default-site

mailha-boot-nginx:
  mailha_site.boot_enabled:
    - name: nginx
    - require:
      - service: mailha-service-nginx
{%- endif %}
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
