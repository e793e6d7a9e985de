{#- OpenLDAP mirror mode on a mail node: serverIDs, syncprov and one syncrepl per mail node, all
    from pillar mailha:ldap. Included by mailha/mail.sls.
    Native path: slapd.conf is rendered whole (the mirror-mode block merged in), slapd restarts
    when it changes, then the suffix entry is ensured (slapd starts with an empty database; the
    first mail node creates the entry, syncrepl carries it to the others). iRedMail path: the
    installer writes slapd.conf and its own tree, then mailha_ldap.mirrormode merges the block
    into it (restarting slapd, or changing cn=config live); mail.sls orders the installer first.
    A rehearsal (scratch mailha_root) writes the native file only. #}
{%- from "mailha/macros.jinja" import packages, rendered_files %}
{%- set rehearsal = salt['mailha_site.rehearsal']() %}
{%- if salt['mailha_mail.installer']() == 'native' %}
{#- Refuses, while rendering, a suffix whose entry the native path cannot create: nothing is
    written or started for a pillar that could not converge. #}
{%- do salt['mailha_ldap.base_entry_spec']() %}
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

mailha-boot-slapd:
  mailha_site.boot_enabled:  # service.running's enable leaves a disabled init script off at boot
    - name: slapd
    - require:
      - service: mailha-service-slapd

mailha-ldap-base-entry:
  mailha_ldap.base_entry_present:
    - require:
      - service: mailha-service-slapd
{%- endif %}
{%- elif not rehearsal %}
mailha_ldap_mirrormode:
  mailha_ldap.mirrormode: []
{%- endif %}
