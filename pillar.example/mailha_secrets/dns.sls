# The TSIG key: the dns nodes' named verifies it and dns:updater signs the RFC 2136 updates.
mailha:
  dns:
    tsig:
      secret: Q0hBTkdFLU1FLXRzaWctc2VjcmV0LWJhc2U2NA==    # CHANGE-ME (base64: tsig-keygen's output)
