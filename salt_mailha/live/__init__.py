"""The I/O that core must not do, shared by modules, beacons and the runner (``DESIGN.md``)."""
