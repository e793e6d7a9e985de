{#- The filer: the vmail NFS export for the mail nodes (mail:vmail), on the pillar's NFS server. #}
{%- from "mailha/macros.jinja" import packages %}
{{ packages('filer') }}
{%- if salt['mailha_mail.serves_vmail']() %}
mailha-vmail-export:
  mailha_mail.vmail_export: []
{%- endif %}
