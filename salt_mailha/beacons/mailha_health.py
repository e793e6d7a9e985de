"""Health of every real server as a load balancer sees it: one event per change.

Runs on the load balancers (role ``lb``). Every interval it probes each load-balanced service of
every real server of the site (TCP connect plus the protocol greeting ldirectord checks: SMTP
``220``, IMAP ``* OK``, POP3 ``+OK``, the MySQL handshake, the HTTP health page), feeds the results
through the hold-down of ``mailha:remediation`` (``down_after`` consecutive failures before
"down", ``up_after`` successes before "up") and reports a node only when its state changes. The
node that died says nothing; its survivors' balancers do, which is why detection works when the
lost node is silent.

Configuration (minion config or pillar ``beacons``)::

    beacons:
      mailha_health:
        - interval: 1        # seconds; match mailha:remediation:probe_interval
        - timeout: 0.5       # seconds per connect and greeting (keep below interval)

Events
------
Tag ``salt/beacon/<lb minion id>/mailha_health/mailha/health/<node>/<status>`` where ``<status>``
is ``down`` or ``up``. Payload::

    {"id": "lb1",                # the reporting balancer (added by Salt)
     "node": "mail1",            # the real server's node id
     "status": "down",           # new state: down | up
     "previous": "up",           # unknown | up | down ("unknown" right after a beacon start)
     "services": {"imap": {"status": "down", "detail": "connect to 127.0.0.17:10143 failed:
                             Connection refused"}, ...},
     "site": "example"}

The first decision after a (re)start is reported too (``previous`` = ``unknown``), so the master
learns the state of every node; an "up" for a node that was never drained changes nothing.
The reactor (``reactor/health.sls``) hands every such event to ``mailha.remediate``, which
re-probes from every balancer before acting.
"""

import logging

from salt_mailha import glue
from salt_mailha.core import health
from salt_mailha.core.errors import MailhaError
from salt_mailha.core.model import load_site

log = logging.getLogger(__name__)

__virtualname__ = "mailha_health"

_STATE = {}  # hold-down memory between calls: {"tracker": HealthTracker, "hold": HoldDown}


def __virtual__():
    return __virtualname__


def validate(config):
    """Check the beacon configuration: a list of ``{interval: N}`` / ``{timeout: N}`` items."""
    return health.validate_beacon_config(__virtualname__, config)


def _site():
    return load_site({"mailha": glue.pillar_get(__salt__, "mailha", {})},  # noqa: F821
                     node=glue.node_id(__opts__))  # noqa: F821


def _tracker(site):
    hold = health.HoldDown(site.remediation.down_after, site.remediation.up_after)
    if _STATE.get("hold") != hold:  # a pillar change resets the hold-down counters
        _STATE["hold"] = hold
        _STATE["tracker"] = health.HealthTracker(hold)
    return _STATE["tracker"]


def _events(site, tracker, nodes, timeout, prefix):
    """Probe ``nodes`` once; the beacon events of those whose state changed."""
    out = []
    for node, old, new, services in health.probe_round(site, tracker, nodes, timeout):
        log.info("mailha %s: %s is %s (was %s)", prefix, node, new, old)
        out.append({"tag": f"mailha/{prefix}/{node}/{new}", "node": node, "status": new,
                    "previous": old, "services": services, "site": site.name})
    return out


def beacon(config):
    """Probe every real server once; return the events of nodes whose state changed."""
    merged = health.beacon_options(config)
    try:
        site = _site()
    except MailhaError as exc:
        if _STATE.get("error") != str(exc):  # log a bad pillar once, not every second
            _STATE["error"] = str(exc)
            log.error("mailha_health beacon idle: %s", exc)
        return []
    _STATE.pop("error", None)
    me = __opts__.get("mailha_node") or __opts__["id"]  # noqa: F821
    nodes = [n for n in health.real_server_ids(site) if n != me]
    return _events(site, _tracker(site), nodes, merged.get("timeout", 0.5), "health")
