"""A real server's own load-balanced services, as the node itself sees them: one event per change.

Runs on every real server (nodes holding a VIP: ``db``, ``mail``). It probes its own services on
its own addresses with the same checks and hold-down as the balancers' ``mailha_health`` beacon.
What a node says about itself is only a hint: the master re-probes from the load balancers before
it drains or restores anything, so this beacon speeds up detection of a local failure (a stopped
Dovecot) without being able to take another node out of service.

Configuration::

    beacons:
      mailha_local:
        - interval: 1
        - timeout: 0.5

Events
------
Tag ``salt/beacon/<minion id>/mailha_local/mailha/local/<node>/<status>``, ``<status>`` ``down`` or
``up``; ``<node>`` is always the reporting node itself. Payload::

    {"id": "mail1", "node": "mail1", "status": "down", "previous": "up",
     "services": {"imap": {"status": "down", "detail": "connect to ... failed: ..."}, ...},
     "site": "example"}
"""

import logging

from salt_mailha import glue
from salt_mailha.core import health
from salt_mailha.core.errors import MailhaError
from salt_mailha.core.model import load_site

log = logging.getLogger(__name__)

__virtualname__ = "mailha_local"

_STATE = {}


def __virtual__():
    return __virtualname__


def validate(config):
    """Check the beacon configuration: a list of ``{interval: N}`` / ``{timeout: N}`` items."""
    return health.validate_beacon_config(__virtualname__, config)


def beacon(config):
    """Probe this node's own services once; an event if its state changed."""
    merged = health.beacon_options(config)
    try:
        site = load_site({"mailha": glue.pillar_get(__salt__, "mailha", {})},  # noqa: F821
                         node=glue.node_id(__opts__))  # noqa: F821
    except MailhaError as exc:
        if _STATE.get("error") != str(exc):
            _STATE["error"] = str(exc)
            log.error("mailha_local beacon idle: %s", exc)
        return []
    _STATE.pop("error", None)
    me = __opts__.get("mailha_node") or __opts__["id"]  # noqa: F821
    if not site.has_node(me) or not health.targets(site, me):
        return []  # not a real server: nothing of its own is load-balanced
    hold = health.HoldDown(site.remediation.down_after, site.remediation.up_after)
    if _STATE.get("hold") != hold:
        _STATE["hold"], _STATE["tracker"] = hold, health.HealthTracker(hold)
    out = []
    for node, old, new, services in health.probe_round(site, _STATE["tracker"], [me],
                                                       merged.get("timeout", 0.5)):
        log.info("mailha local: %s is %s (was %s)", node, new, old)
        out.append({"tag": f"mailha/local/{node}/{new}", "node": node, "status": new,
                    "previous": old, "services": services, "site": site.name})
    return out
