{#- The DNS tier. A node with role dns runs the site's authoritative BIND: the TSIG key and the
    dynamic primary zone (named.conf.local), the zone file seeded once (named owns it afterwards),
    and named itself. The pillar's mailha:dns:updater converges the site's MX and A records with
    one signed RFC 2136 UPDATE per run (records it does not own are left alone; MX withdrawn by
    the reactor stay withdrawn until restored). A rehearsal writes files only. #}
{%- from "mailha/macros.jinja" import packages, rendered_files %}
{%- set rehearsal = salt['mailha_site.rehearsal']() %}
{%- set bind_here = salt['mailha_site.artifacts'](sls='dns') | length > 0 %}
{%- if bind_here %}
{{ packages('dns') }}
{{ rendered_files('dns') }}

mailha-dns-zone:
  mailha_dns.zone_seeded:
    - name: /var/lib/bind/{{ salt['pillar.get']('mailha:dns:zone', '') | lower | trim('.') }}.db
{%- if not rehearsal %}
    - require:
      - pkg: mailha-packages-dns

mailha-service-named:
  service.running:
    - name: named
    - enable: True
    - watch:
      - mailha_site: mailha-file-bind-tsig
      - mailha_site: mailha-file-bind-local
      - mailha_dns: mailha-dns-zone
{%- endif %}
{%- endif %}
{%- if salt['mailha_dns.is_updater']() %}

mailha-dns-records:
{%- if bind_here and not rehearsal %}
  mailha_dns.records:
    - require:
      - service: mailha-service-named
{%- else %}
  mailha_dns.records: []
{%- endif %}
{%- endif %}
