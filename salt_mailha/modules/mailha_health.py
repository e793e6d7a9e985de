"""Probe a real server's load-balanced services the way the balancers' ldirectord does.

The ``mailha`` runner calls :func:`probe` on every load balancer before it drains or restores a
node: what a balancer sees is authoritative for reachability, what a node says about another is
not. Probes are a TCP connect plus the protocol greeting (``salt_mailha.core.health``); nothing
runs a command, and the node id is checked against the site model before any socket opens.

The probes run in a freshly executed interpreter (``python -m salt_mailha.modules.mailha_health``,
the site on stdin), not in the job process: the minion forks job processes from a process whose
threads use OpenSSL, and a forked child can inherit a held OpenSSL lock and hang forever in its
first TLS handshake (openssl/openssl#19066). A hung re-check held the master's remediation lock;
exec starts OpenSSL clean.
"""

import json
import subprocess
import sys

from salt.exceptions import CommandExecutionError

from salt_mailha import glue
from salt_mailha.core import health
from salt_mailha.core.errors import MailhaError
from salt_mailha.core.remediation import check_node
from salt_mailha.core.secret import redact

__virtualname__ = "mailha_health"
WORKER = "salt_mailha.live.probe_worker"  # the probing interpreter: core only, no Salt to import


def __virtual__():
    return __virtualname__


def _site():
    return glue.site_from_pillar(__pillar__, __opts__)  # noqa: F821 - injected by the loader


def _number(value, name, lo, hi):
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise CommandExecutionError(f"{name} must be a number of seconds, got {value!r}") from None
    if not lo <= value <= hi:
        raise CommandExecutionError(f"{name} must be between {lo} and {hi}, got {value}")
    return value


def _report(site, node_id, prober, timeout, attempts, interval):
    endpoints = health.targets(site, node_id)
    if not endpoints:
        raise CommandExecutionError(
            f"{node_id} holds no VIP, so no balancer forwards to it: nothing to probe"
        )
    results = _probe_isolated(node_id, timeout, attempts, interval)
    by_target = {t.service: t for t in endpoints}
    services = {
        name: {**res.as_dict(), "address": by_target[name].address, "port": by_target[name].port,
               "check": by_target[name].check}
        for name, res in sorted(results.items())
    }
    failing = [name for name, res in services.items() if not res["ok"]]
    return {"node": node_id, "prober": prober, "ok": not failing, "failing": failing,
            "services": services}


def _probe_isolated(node_id, timeout, attempts, interval):
    """``health.probe_all`` of ``node_id`` in a new interpreter, bounded by a hard deadline."""
    request = {"mailha": __pillar__["mailha"], "node": node_id, "timeout": timeout,  # noqa: F821
               "attempts": attempts, "interval": interval, "prober": glue.node_id(__opts__)}  # noqa: F821
    deadline = (timeout * 3 + 1) * attempts + interval * (attempts - 1) + 10  # TLS: connect + handshake + read
    try:
        proc = subprocess.run([sys.executable, "-m", WORKER], input=json.dumps(request, default=str),
                              capture_output=True, text=True, timeout=deadline, check=False)
    except subprocess.TimeoutExpired:
        raise CommandExecutionError(f"probing {node_id} did not finish within {deadline:.0f} s") from None
    try:
        answer = json.loads(proc.stdout)
    except ValueError:
        # the worker's traceback may quote the pillar it was handed
        err = redact(proc.stderr, glue.site_from_pillar(__pillar__, __opts__).secrets())  # noqa: F821
        raise CommandExecutionError(f"probing {node_id} failed: {err.strip()[-300:]}") from None
    return {name: health.ProbeResult(r["ok"], r["detail"]) for name, r in answer.items()}


def probe(node, timeout=1.0, attempts=1, interval=None):
    """Probe every load-balanced service of ``node`` from this minion.

    node
        A node id of the site (``mailha:nodes``) that holds a VIP.
    timeout
        Seconds per connect and greeting.
    attempts
        A service fails only if this many consecutive probes fail (spaced by ``interval``,
        default ``mailha:remediation:probe_interval``): the runner uses it when no beacon's
        hold-down came first.

    Returns ``{"node", "prober", "ok", "failing": [...], "services": {name: {"ok", "detail",
    "address", "port", "check"}}}``.

    CLI Example:

    .. code-block:: bash

        salt 'lb*' mailha_health.probe mail1
    """
    site = _site()
    try:
        node_id = check_node(node, {n.id for n in site.nodes})
    except MailhaError as exc:
        raise CommandExecutionError(str(exc)) from None
    timeout = _number(timeout, "timeout", 0.05, 60)
    attempts = int(_number(attempts, "attempts", 1, 20))
    interval = site.remediation.probe_interval if interval is None else interval
    interval = _number(interval, "interval", 0, 60)
    return _report(site, node_id, glue.node_id(__opts__), timeout, attempts, interval)  # noqa: F821


def local(timeout=1.0):
    """Probe this node's own load-balanced services on its own addresses.

    What the local beacon reports; a node's word about itself triggers a re-check from the
    balancers, never an action by itself.

    CLI Example:

    .. code-block:: bash

        salt 'mail*' mailha_health.local
    """
    site = _site()
    me = glue.this_node(site, __opts__).id  # noqa: F821
    return _report(site, me, me, _number(timeout, "timeout", 0.05, 60), 1, 0)
