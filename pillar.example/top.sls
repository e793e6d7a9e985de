base:
  '*':
    - mailha
