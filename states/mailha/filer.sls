{#- The filer: the vmail NFS export for the mail nodes (mail:vmail). #}
{%- from "mailha/macros.jinja" import packages %}
{{ packages('filer') }}
{%- if salt['pillar.get']('mailha:mail:vmail:nfs_server') == salt['config.get']('mailha_node', grains['id']) %}
mailha-vmail-export:
  mailha_mail.vmail_export: []
{%- endif %}
