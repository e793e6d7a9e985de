{#- Real server of an IPVS-DR VIP (roles db and mail): its VIP/32 on lo (lo:0) and
    arp_ignore=1 / arp_announce=2, live now and persisted for reboots (ifupdown stanza and
    /etc/sysctl.d). A rehearsal (scratch mailha_root) writes the files only. #}
{%- from "mailha/macros.jinja" import packages %}
{{ packages('realserver') }}
mailha-dr:
  mailha_dr.configured:
    - live: {{ not salt['mailha_site.rehearsal']() }}
