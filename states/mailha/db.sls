include:
  - mailha.realserver
  - mailha.galera
