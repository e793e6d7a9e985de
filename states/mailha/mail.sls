include:
  - mailha.realserver
