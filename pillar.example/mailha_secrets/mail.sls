# Secrets of the mail nodes only (slapd runs there in mirror mode; Postfix and Dovecot bind with
# the rootdn unless mail:lookup names its own bind_dn and bind_password).
mailha:
  ldap:
    rootpw: CHANGE-ME-ldap-root
  # With an iredmail section in mailha.sls:
  # mail:
  #   iredmail:
  #     admin_password: CHANGE-ME-iredmail-admin
  #     postmaster_password: CHANGE-ME-postmaster
