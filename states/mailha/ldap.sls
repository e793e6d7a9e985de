{#- OpenLDAP mirror mode on a mail node: serverIDs, syncprov and one syncrepl per mail node, all
    from pillar mailha:ldap. Included by mailha/mail.sls.
    Native path: slapd.conf is rendered whole (the mirror-mode block merged in) and slapd restarts
    when it changes. iRedMail path: the installer writes slapd.conf, then mailha_ldap.mirrormode
    merges the block into it (restarting slapd, or changing cn=config live); mail.sls orders the
    installer first. A rehearsal (scratch
    mailha_root) writes the native file only. #}
{%- from "mailha/macros.jinja" import packages, rendered_files %}
{%- set rehearsal = salt['mailha_site.rehearsal']() %}
{%- if salt['mailha_mail.installer']() == 'native' %}
{{ packages('ldap') }}
{{ rendered_files('ldap') }}
{%- if not rehearsal %}

mailha-service-slapd:
  service.running:
    - name: slapd
    - enable: True
    - watch:
      - mailha_site: mailha-file-slapd
      - mailha_site: mailha-file-slapd-default
{%- endif %}
{%- elif not rehearsal %}
mailha_ldap_mirrormode:
  mailha_ldap.mirrormode: []
{%- endif %}
