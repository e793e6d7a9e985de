"""Health of real servers: protocol probes and edge-triggered state with hold-down.

Two parts, both free of Salt:

* ``probe(host, port, check)``: one TCP connect plus the protocol greeting a load balancer's
  ldirectord would check (SMTP ``220``, IMAP ``* OK``, POP3 ``+OK``, MySQL handshake, HTTP
  status). TLS variants (``imaps``, ``pops``, ``https``) wrap the socket first. Returns a
  ``ProbeResult``; a failed probe is a value, never an exception. For ``mysql`` services of a
  site with Galera, ``probe_all`` runs ``galera_synced`` instead (the monitoring user's
  Synced/ready/Primary query), as the balancers' ldirectord check does.
* ``HealthState`` / ``step``: a hold-down state machine. ``down_after`` consecutive failures turn
  a key "down", ``up_after`` consecutive successes turn it "up"; ``step`` reports a transition
  only on the probe that changes the state (edge-triggered), so a beacon fires once per change.
  ``HealthTracker`` keeps one state per key (a node's service) and rolls them up per node.
"""

import dataclasses
import socket
import ssl
import time

UNKNOWN = "unknown"
UP = "up"
DOWN = "down"

# check type (the model's CHECKS) -> (use TLS, greeting prefix | None (connect only) | protocol)
_CHECKS = {
    "connect": (False, None),
    "smtp": (False, b"220"),
    "smtps": (True, b"220"),
    "submission": (False, b"220"),
    "imap": (False, b"* OK"),
    "imaps": (True, b"* OK"),
    "pop": (False, b"+OK"),
    "pops": (True, b"+OK"),
    "mysql": (False, "mysql"),
    "http": (False, "http"),
    "https": (True, "http"),
}
CHECK_TYPES = tuple(sorted(_CHECKS))


@dataclasses.dataclass(frozen=True)
class ProbeResult:
    ok: bool
    detail: str  # short, for humans: "greeting '* OK' received", "connection refused"

    def as_dict(self):
        return {"ok": self.ok, "detail": self.detail}


def probe(host, port, check="connect", timeout=1.0, http_path="/", http_expect=None, ca_file=None):
    """Probe ``host:port`` the way ldirectord's ``check`` would; never raises for a dead peer.

    ``host`` must already be a validated IP address string and ``port`` an int: this function
    only opens a socket, it runs no command. ``ca_file`` (a TLS check): verify the server's
    certificate chain against that PEM bundle alone, not its host name, as ldirectord's https
    check does with ``PERL_LWP_SSL_CA_FILE``; None: no verification.
    """
    if check not in _CHECKS:
        raise ValueError(f"unknown check type {check!r}; use one of {', '.join(CHECK_TYPES)}")
    tls, expect = _CHECKS[check]
    try:
        sock = socket.create_connection((host, int(port)), timeout=timeout)
    except OSError as exc:
        return ProbeResult(False, f"connect to {host}:{port} failed: {_oserror(exc)}")
    try:
        sock.settimeout(timeout)
        if tls:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            # A balancer probes real servers by address; their certificates name the service.
            ctx.check_hostname = False
            if not ca_file:
                ctx.verify_mode = ssl.CERT_NONE
            else:
                try:
                    ctx.load_verify_locations(cafile=ca_file)  # as IO::Socket::SSL's SSL_ca_file
                except (OSError, ssl.SSLError) as exc:
                    return ProbeResult(False, f"CA {ca_file} unusable: {getattr(exc, 'reason', None) or _oserror(exc)}")
            sock = ctx.wrap_socket(sock)
        if expect is None:
            return ProbeResult(True, f"connected to {host}:{port}")
        if expect == "mysql":
            return _mysql_greeting(sock)
        if expect == "http":
            return _http(sock, host, http_path, http_expect)
        data = _read_line(sock)
        if data.startswith(expect):
            return ProbeResult(True, f"greeting {expect.decode()!r} received")
        return ProbeResult(False, f"unexpected greeting {data[:40]!r} (wanted {expect.decode()!r})")
    except ssl.SSLCertVerificationError as exc:
        return ProbeResult(False, f"{check} probe of {host}:{port} failed: certificate verify failed "
                                  f"({exc.verify_message}) against CA {ca_file}")
    except (OSError, ssl.SSLError) as exc:
        return ProbeResult(False, f"{check} probe of {host}:{port} failed: {_oserror(exc)}")
    finally:
        try:
            sock.close()
        except OSError:
            pass


def _oserror(exc):
    if isinstance(exc, socket.timeout):
        return "timed out"
    return exc.strerror or exc.__class__.__name__


def _read_line(sock, limit=512):
    buf = b""
    while b"\n" not in buf and len(buf) < limit:
        chunk = sock.recv(limit)
        if not chunk:
            break
        buf += chunk
    return buf


def _mysql_greeting(sock):
    # Handshake v10: 3-byte length, 1-byte sequence id, then protocol version 10. An error
    # packet (0xff) means the server refuses us (too many connections, host blocked).
    head = sock.recv(5)
    if len(head) == 5 and head[4] == 10:
        return ProbeResult(True, "mysql handshake received")
    if len(head) == 5 and head[4] == 0xFF:
        return ProbeResult(False, "mysql server sent an error packet instead of a handshake")
    return ProbeResult(False, f"no mysql handshake (got {head!r})")


def _http(sock, host, path, expect):
    sock.sendall(f"GET {path} HTTP/1.0\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
    data = b""
    while len(data) < 65536:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    status = data.split(b"\r\n", 1)[0]
    parts = status.split()
    if len(parts) < 2 or not parts[1].startswith(b"2"):
        return ProbeResult(False, f"http status line {status[:40]!r}")
    if expect and expect.encode() not in data.split(b"\r\n\r\n", 1)[-1]:
        return ProbeResult(False, f"http body lacks {expect!r}")
    return ProbeResult(True, f"http {parts[1].decode()} received")


@dataclasses.dataclass(frozen=True)
class HoldDown:
    down_after: int = 3
    up_after: int = 3

    def __post_init__(self):
        for name in ("down_after", "up_after"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"hold-down {name} must be an integer >= 1, got {value!r}")


@dataclasses.dataclass(frozen=True)
class HealthState:
    status: str = UNKNOWN
    failures: int = 0  # consecutive
    successes: int = 0  # consecutive
    since: float = 0.0  # time of the last transition
    detail: str = ""


def step(state, ok, hold, now, detail=""):
    """Feed one probe result; return ``(new_state, transition)``.

    ``transition`` is ``None`` unless this probe changed the status, then ``(old, new)``. The
    first decision out of "unknown" is a transition too, so a restarted beacon re-announces.
    """
    if ok:
        successes, failures = state.successes + 1, 0
        target = UP if successes >= hold.up_after else None
    else:
        successes, failures = 0, state.failures + 1
        target = DOWN if failures >= hold.down_after else None
    if target is None or target == state.status:
        return dataclasses.replace(
            state, failures=failures, successes=successes, detail=detail
        ), None
    new = HealthState(target, failures, successes, now, detail)
    return new, (state.status, target)


class HealthTracker:
    """Hold-down state per ``(node, service)`` and the node roll-up a beacon reports.

    A node is "down" as soon as one of its services is down (the balancer would send clients to
    a broken service), "up" when every probed service is up, "unknown" otherwise.
    """

    def __init__(self, hold):
        self.hold = hold
        self.services = {}  # (node, service) -> HealthState
        self.nodes = {}  # node -> last reported roll-up status

    def observe(self, node, results, now=None):
        """Feed one round of ``{service: ProbeResult}`` for ``node``.

        Returns ``None`` or, when the node's roll-up changed, ``(old, new, services)`` with
        ``services`` = ``{service: {"status", "detail"}}``.
        """
        now = time.time() if now is None else now
        for service, result in results.items():
            key = (node, service)
            state, _ = step(self.services.get(key, HealthState()), result.ok, self.hold, now,
                            result.detail)
            self.services[key] = state
        statuses = {s: self.services[(node, s)] for s in results}
        if any(st.status == DOWN for st in statuses.values()):
            rollup = DOWN
        elif statuses and all(st.status == UP for st in statuses.values()):
            rollup = UP
        else:
            rollup = UNKNOWN
        old = self.nodes.get(node, UNKNOWN)
        if rollup == old or rollup == UNKNOWN:
            return None
        self.nodes[node] = rollup
        return old, rollup, {s: {"status": st.status, "detail": st.detail}
                             for s, st in sorted(statuses.items())}


@dataclasses.dataclass(frozen=True)
class Target:
    """One real server endpoint of a node: what a balancer's ldirectord checks."""

    service: str
    address: str
    port: int
    check: str


def targets(site, node_id):
    """The endpoints of ``node_id`` that balancers forward to, from the model, sorted by service.

    Empty for a node that holds no VIP (a balancer, the filer, the DNS server).
    """
    node = site.node(node_id)
    out = []
    for vip in site.vips_held_by(node):
        address = node.address(vip.network)
        if address is None:
            continue
        for svc in site.services_on(vip.name):
            out.append(Target(svc.name, address, svc.port, svc.check))
    return tuple(sorted(out, key=lambda t: t.service))


def real_server_ids(site):
    """Every node that some balancer forwards to, in pillar order."""
    return tuple(n.id for n in site.nodes if targets(site, n.id))


def galera_synced(host, port, monitor, timeout=1.0):
    """The balancer's Galera-aware check: log in as the monitoring user and run
    ``salt_mailha.core.galera.health_query`` (a row only while Synced, ready and Primary).

    ``monitor`` is the model's ``MonitorSpec``; its password goes only into the PyMySQL
    connection. Returns ``None`` when PyMySQL is missing (the caller falls back to the handshake).
    """
    try:
        import pymysql
    except ImportError:
        return None
    from salt_mailha.core.galera import health_query
    from salt_mailha.core.secret import redact

    try:
        conn = pymysql.connect(host=host, port=int(port), user=monitor.user,
                               password=monitor.password.reveal(), connect_timeout=timeout,
                               read_timeout=timeout)
    except Exception as exc:  # noqa: BLE001 - any failure to log in is a failed check
        return ProbeResult(False, redact(f"mysql login as {monitor.user} to {host}:{port} failed: "
                                         f"{exc}", [monitor.password])[:200])
    try:
        with conn.cursor() as cur:
            cur.execute(health_query(monitor.database))
            if cur.fetchone():
                return ProbeResult(True, "galera node Synced, ready, Primary")
            cur.execute("SHOW GLOBAL STATUS WHERE Variable_name IN "
                        "('wsrep_local_state_comment', 'wsrep_cluster_status', 'wsrep_ready')")
            state = ", ".join(f"{k}={v}" for k, v in cur.fetchall()) or "no wsrep status"
            return ProbeResult(False, f"galera node not fit for traffic ({state})")
    except Exception as exc:  # noqa: BLE001
        return ProbeResult(False, redact(f"galera check on {host}:{port} failed: {exc}",
                                         [monitor.password])[:200])
    finally:
        conn.close()


def probe_all(site, endpoints, timeout=1.0, attempts=1, interval=0.0):
    """Probe every ``Target`` in parallel; ``{service: ProbeResult}``.

    With ``attempts`` > 1 a service counts as failing only if every attempt failed (spaced by
    ``interval`` seconds): a re-check that was not preceded by a beacon's hold-down applies its
    own.
    """
    from concurrent.futures import ThreadPoolExecutor

    path = "/" + site.ldirectord.health_page.lstrip("/")
    expect = site.ldirectord.health_content

    galera = site.galera.monitor if site.galera is not None else None
    ca = site.mail.tls.ca if site.mail is not None else None  # ldirectord's https checks trust it

    def check(t):
        if t.check == "mysql" and galera is not None:
            result = galera_synced(t.address, t.port, galera, timeout)
            if result is not None:
                return result
        return probe(t.address, t.port, t.check, timeout, path, expect, ca if t.check == "https" else None)

    def one(t):
        result = None
        for i in range(max(1, int(attempts))):
            if i:
                time.sleep(interval)
            result = check(t)
            if result.ok:
                break
        return t.service, result

    if not endpoints:
        return {}
    with ThreadPoolExecutor(max_workers=min(16, len(endpoints))) as pool:
        return dict(pool.map(one, endpoints))


def probe_round(site, tracker, nodes, timeout=0.5, now=None):
    """One beacon round: probe every endpoint of ``nodes`` in parallel, feed ``tracker``.

    Returns ``[(node, old, new, services)]`` for the nodes whose roll-up changed. One round over
    all endpoints at once, so a dead node costs one timeout, not one per service.
    """
    keyed = [Target(f"{n}\0{t.service}", t.address, t.port, t.check)
             for n in nodes for t in targets(site, n)]
    per_node = {}
    for key, res in probe_all(site, keyed, timeout).items():
        node, service = key.split("\0", 1)
        per_node.setdefault(node, {})[service] = res
    now = time.time() if now is None else now
    changes = []
    for node in nodes:
        change = tracker.observe(node, per_node.get(node, {}), now)
        if change is not None:
            changes.append((node, *change))
    return changes


# ----------------------------------------------------------------------------------- beacon config

BEACON_OPTIONS = {"interval", "timeout"}


def beacon_options(config):
    """A beacon's configuration (Salt gives a list of one-key dicts) merged into one dict."""
    merged = {}
    for item in config if isinstance(config, list) else [config]:
        if isinstance(item, dict):
            merged.update(item)
    return merged


def validate_beacon_config(beacon, config):
    """``(ok, message)`` for the configuration of beacon ``beacon`` (mailha_health, mailha_local)."""
    if not isinstance(config, list):
        return False, f"{beacon} beacon configuration must be a list, e.g. [{{interval: 1}}]"
    merged = beacon_options(config)
    unknown = set(merged) - BEACON_OPTIONS - {"_beacon_name"}
    if unknown:
        return False, f"{beacon} beacon: unknown option(s) {sorted(unknown)}; allowed: {sorted(BEACON_OPTIONS)}"
    timeout = merged.get("timeout", 0.5)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout <= 30:
        return False, f"{beacon} beacon: timeout must be seconds in (0, 30], got {timeout!r}"
    return True, "valid beacon configuration"
