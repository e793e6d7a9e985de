{#- OpenLDAP mirror mode on a mail node: serverIDs, syncprov and one syncrepl per mail node, all
    from pillar mailha:ldap. Included by mailha/mail.sls. The state restarts slapd itself after a
    slapd.conf change (service.restart; minion config mailha_ldap:service names the service) or
    changes cn=config live, per mailha:ldap:config_format. #}
mailha_ldap_mirrormode:
  mailha_ldap.mirrormode: []
