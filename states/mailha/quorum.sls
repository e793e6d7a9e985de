include:
  - mailha.galera
