# One site: the guide's topology (lb1/lb2, db1/db2 + filer1 as the Galera quorum member,
# mail1/mail2, filer1 serving Maildirs over NFS) plus the site's authoritative DNS server ns1.
# Every key is validated as a whole by salt_mailha.core.model.parse_site; unknown keys are errors.
# This file is the topology and holds no secret: every node receives it. The secrets live in
# mailha_secrets/, one file per group, and top.sls gives each node only those its roles use.
mailha:
  site: example
  domain: example.net

  # Public addresses are RFC 5737 documentation space (192.0.2.0/24): put your own here.
  networks:
    public: 192.0.2.0/24      # clients, VIPs, direct routing
    private: 10.1.1.0/24      # Galera, LDAP sync, NFS: never routed

  # Node order matters: it sets keepalived priorities (first lb = highest) and LDAP serverIDs.
  nodes:
    ns1:
      roles: [dns]
      addresses: {public: 192.0.2.10}
    filer1:
      roles: [filer, quorum]        # NFS server + full Galera member that is not load-balanced
      addresses: {public: 192.0.2.11, private: 10.1.1.11}
    lb1:
      roles: [lb]
      addresses: {public: 192.0.2.13, private: 10.1.1.13}
      interface: eth0
    lb2:
      roles: [lb]
      addresses: {public: 192.0.2.14, private: 10.1.1.14}
      interface: eth0
    db1:
      roles: [db]
      addresses: {public: 192.0.2.15, private: 10.1.1.15}
    db2:
      roles: [db]
      addresses: {public: 192.0.2.16, private: 10.1.1.16}
    mail1:
      roles: [mail]
      addresses: {public: 192.0.2.17, private: 10.1.1.17}
    mail2:
      roles: [mail]
      addresses: {public: 192.0.2.18, private: 10.1.1.18}

  # Two VIPs, never one: a real server holds its VIP on lo, so it could never reach the same
  # address through the balancer (the guide's 2015 edit).
  vips:
    mail:
      address: 192.0.2.21
      network: public
      real_servers: mail            # nodes with this role hold the VIP on lo:0
      virtual_router_id: 51
      hostname: lb0a
    db:
      address: 192.0.2.22
      network: public
      real_servers: db
      virtual_router_id: 52
      hostname: db                  # iRedMail's MYSQL_SERVER: db.example.net

  # ldirectord virtual services (the guide's list, with both submission ports).
  services:
    mysql:      {vip: db,   port: 3306, check: mysql,     scheduler: wrr}
    http:       {vip: mail, port: 80,   check: http,      scheduler: sh}
    https:      {vip: mail, port: 443,  check: https,     scheduler: sh}
    imaps:      {vip: mail, port: 993,  check: imaps,     scheduler: wrr}
    pop3s:      {vip: mail, port: 995,  check: pops,      scheduler: wrr}
    submission: {vip: mail, port: 587,  check: smtp,      scheduler: wrr}
    smtps:      {vip: mail, port: 465,  check: connect,   scheduler: wrr}

  keepalived:                       # VRRPv3 has no auth; with vrrp_version: 2, auth_pass (at most
    advert_int: 1                   # 8 characters) is a secret of the lb nodes: mailha_secrets/
    vrrp_version: 3
    unicast: false
    preempt: true

  # ldirectord drains a dead real server itself within ~1 s (the reactor then makes the drain
  # stick and withdraws the MX); the guide's 5 s / 3 failures took tens of seconds
  ldirectord:
    checkinterval: 1
    checktimeout: 1                 # every check, and DBI's connect/read timeouts
    failurecount: 1
    fork: true                      # a check process per virtual service
    quiescent: true                 # failed servers go to weight 0, connections drain
    health_page: ldirectord.txt
    health_content: ldirectord

  galera:
    cluster_name: mailha_db
    bootstrap_node: db1             # the only node that may start a brand-new cluster
    network: private
    sst_method: rsync               # rsync | mariabackup | mysqldump
    arbitrator: none                # none | garbd (on the node with role garbd)
    sst_user: sst                   # with mariabackup/mysqldump, its sst_password is a secret of
    monitor:                        # the db and quorum nodes (rsync needs none)
      user: monitor                 # its password: mailha_secrets/galera_monitor.sls
      database: monitoring

  ldap:
    suffix: dc=example,dc=net       # ONE suffix: every DN below must sit under it
    rootdn: cn=Manager,dc=example,dc=net   # its rootpw: mailha_secrets/mail.sls
    network: private
    port: 389
    config_format: slapd.conf       # slapd.conf (what iRedMail writes) | cn=config
    replication:                    # syncrepl binds as the rootdn, with rootpw: iRedMail's ACLs hide
      binddn: cn=Manager,dc=example,dc=net   # userPassword from other DNs, which would not replicate
      searchbase: dc=example,dc=net

  dns:
    zone: example.net
    updater: ns1                    # the minion that sends RFC 2136 updates
    servers:
      - {address: 192.0.2.10, port: 53}
    tsig:
      name: mailha-update
      algorithm: hmac-sha256        # its secret: mailha_secrets/dns.sls
    ttl: {default: 3600, failover: 60}
    mx:                             # mail node -> preference
      mail1: 10
      mail2: 10
    names: [mail, smtp, imap, pop]  # A records at the mail VIP
    max_delete_share: 0.3           # refuse plans deleting more than this share unless forced

  mail:
    vmail:
      path: /var/vmail
      nfs_server: filer1
      export: /srv/var/vmail
      options: [vers=3, noatime, nodiratime, noexec]
    # The certificate the mail nodes serve (these are the defaults). ca: the PEM CA bundle that
    # signs cert, for a private CA or a self-signed cert (its own CA); ldirectord's https checks
    # and the health beacons then trust it alone. Put the file on every balancer and mail node
    # (the formula checks it on the balancers); a certificate from a public CA needs no ca.
    # tls:
    #   cert: /etc/ssl/certs/iRedMail.crt
    #   key: /etc/ssl/private/iRedMail.key
    #   ca: /etc/ssl/certs/mailha-ca.pem
    #   name: imap.example.net        # the name clients use: the balancers' imaps/pops checks verify it
    # Without an iredmail section, mail nodes run Debian's Postfix + Dovecot configured by
    # salt-mailha (what the lab and the tests run). With it, iRedMail's installer runs once per
    # node from one shared config; put its tarball on the Salt fileserver first (its two
    # passwords: mailha_secrets/mail.sls):
    # iredmail:
    #   source: salt://iredmail/iRedMail-1.6.8.tar.gz
    #   source_hash: sha256=<sha256 of the tarball>
    #   admin_user: admin_iredmail

  remediation:
    probe_interval: 1               # seconds between beacon probes
    down_after: 3                   # consecutive failures before "down"
    up_after: 3                     # consecutive successes before "up"
    max_actions: 4                  # per node per window
    window: 60                      # seconds
