# The Galera monitoring login: the balancers' checks log in with it and the Galera members create
# the account. top.sls assigns this file to the lb, db and quorum nodes only.
mailha:
  galera:
    monitor:
      password: CHANGE-ME-db-monitor
