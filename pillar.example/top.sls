base:
  '*':
    - mailha                        # the topology: no secret
  # Each node gets only the secrets its roles use. Target minion ids, never grains (a minion sets
  # its own grains); `salt-run mailha.validate` checks these lists against mailha:nodes.
  'lb1,lb2,db1,db2,filer1':         # lb, db, quorum
    - match: list
    - mailha_secrets.galera_monitor
  'mail1,mail2':                    # mail
    - match: list
    - mailha_secrets.mail
  'ns1':                            # dns, and the dns:updater
    - match: list
    - mailha_secrets.dns
