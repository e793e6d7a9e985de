{#- The DNS tier: the pillar's mailha:dns:updater converges the site's MX and A records with one
    signed RFC 2136 UPDATE per run (records it does not own are left alone; MX withdrawn by the
    reactor stay withdrawn until restored). Other nodes get nothing here. #}
{%- if salt['mailha_dns.is_updater']() %}
mailha-dns-records:
  mailha_dns.records: []
{%- endif %}
