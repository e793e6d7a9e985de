"""Test-only Salt ``service`` provider: restarts the foreground slapd a test started.

The minion config of a test node sets ``providers: {service: slapdsvc}`` and
``mailha_test_services: {<service name>: <instance.json>}``; ``service.restart`` then does what
the init system does in production (stop by pidfile, start again), without systemd. Only the
functions the mailha_ldap state calls are here.
"""
import sys


def __virtual__():
    return True


def _instance(name):
    services = __opts__.get("mailha_test_services") or {}  # noqa: F821
    if name not in services:
        raise KeyError(f"service {name!r} is not one of this test node's services {sorted(services)}")
    root = __opts__.get("mailha_test_repo")  # noqa: F821
    if root and root not in sys.path:
        sys.path.insert(0, root)
    return services[name]


def restart(name):
    from tests.support import slapd

    return slapd.restart(_instance(name))


def status(name):
    import json
    import os

    from tests.support import slapd

    spec = json.load(open(_instance(name)))
    try:
        pid = int(open(spec["pidfile"]).read().strip())
    except (OSError, ValueError):
        return False
    return os.path.exists(f"/proc/{pid}") and slapd._alive(pid)
