"""Hold-down state machine and protocol probes (core.health).

Probes run against loopback listeners that replay greetings captured from real dovecot and
mariadbd (tests/unit/data/health/README).
"""
import http.server
import pathlib
import socket
import threading

import pytest

from salt_mailha.core import health
from salt_mailha.core.health import DOWN, UNKNOWN, UP, HealthState, HealthTracker, HoldDown
from tests.support import tls

DATA = pathlib.Path(__file__).parent / "data" / "health"


# ------------------------------------------------------------------------ hold-down machine


def run(seq, down_after=3, up_after=2, start=None):
    state = start or HealthState()
    hold = HoldDown(down_after, up_after)
    out = []
    for i, ok in enumerate(seq):
        state, trans = health.step(state, ok, hold, now=float(i))
        out.append(trans)
    return state, out


@pytest.mark.parametrize(
    "seq,final,transitions",
    [
        ([False, False], UNKNOWN, []),
        ([False, False, False], DOWN, [(UNKNOWN, DOWN)]),
        ([True, True], UP, [(UNKNOWN, UP)]),
        ([True, True, False, False, True, False, False, False], DOWN, [(UNKNOWN, UP), (UP, DOWN)]),
        # a blip shorter than the hold-down never reaches "down"
        ([True, True] + [False, False, True] * 5, UP, [(UNKNOWN, UP)]),
        # edge-triggered: ten more failures after "down" report nothing more
        ([False] * 13, DOWN, [(UNKNOWN, DOWN)]),
        ([False] * 3 + [True] * 2 + [False] * 3, DOWN, [(UNKNOWN, DOWN), (DOWN, UP), (UP, DOWN)]),
    ],
    ids=["below-hold", "down-at-N", "up-at-M", "down-after-up", "blips-filtered",
         "edge-once", "down-up-down"],
)
def test_step_hold_down(seq, final, transitions):
    state, out = run(seq)
    assert state.status == final
    assert [t for t in out if t] == transitions


def test_step_transition_time_and_counters():
    state, out = run([True, True, False, False, False])
    assert out[4] == (UP, DOWN) and state.since == 4.0 and state.failures == 3


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "3"], ids=str)
def test_hold_down_rejects_bad_values(bad):
    with pytest.raises(ValueError, match="down_after must be an integer >= 1"):
        HoldDown(down_after=bad)


def test_tracker_rolls_up_per_node():
    t = HealthTracker(HoldDown(2, 2))
    ok, bad = health.ProbeResult(True, "ok"), health.ProbeResult(False, "refused")
    assert t.observe("mail1", {"imap": ok, "smtp": ok}, now=0) is None
    old, new, services = t.observe("mail1", {"imap": ok, "smtp": ok}, now=1)
    assert (old, new) == (UNKNOWN, UP)
    assert t.observe("mail1", {"imap": bad, "smtp": ok}, now=2) is None  # hold-down
    old, new, services = t.observe("mail1", {"imap": bad, "smtp": ok}, now=3)
    assert (old, new) == (UP, DOWN)
    assert services["imap"] == {"status": DOWN, "detail": "refused"}
    assert services["smtp"]["status"] == UP
    assert t.observe("mail1", {"imap": bad, "smtp": ok}, now=4) is None  # once per change
    # another node is independent
    assert t.observe("mail2", {"imap": ok}, now=4) is None
    t.observe("mail1", {"imap": ok, "smtp": ok}, now=5)
    assert t.observe("mail1", {"imap": ok, "smtp": ok}, now=6)[:2] == (DOWN, UP)


# ------------------------------------------------------------------------ probes


class Replay:
    """A loopback listener that sends ``payload`` to each client (None: accept, say nothing)."""

    def __init__(self, payload):
        self.payload = payload
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.conns = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)
            if self.payload is not None:
                conn.sendall(self.payload)

    def close(self):
        self.sock.close()
        for c in self.conns:
            c.close()


@pytest.fixture
def replay():
    servers = []

    def make(payload):
        s = Replay(payload)
        servers.append(s)
        return s

    yield make
    for s in servers:
        s.close()


@pytest.mark.parametrize(
    "capture,check,ok,detail",
    [
        ("dovecot_imap_greeting.txt", "imap", True, "greeting '* OK' received"),
        ("dovecot_pop3_greeting.txt", "pop", True, "greeting '+OK' received"),
        ("dovecot_pop3_greeting.txt", "imap", False, "unexpected greeting"),
        ("dovecot_imap_greeting.txt", "smtp", False, "unexpected greeting"),
        ("mariadb_handshake.bin", "mysql", True, "mysql handshake received"),
        ("mariadb_host_blocked.bin", "mysql", False, "error packet"),
        ("dovecot_imap_greeting.txt", "mysql", False, "no mysql handshake"),
        ("dovecot_imap_greeting.txt", "connect", True, "connected to"),
    ],
    ids=["imap", "pop", "pop-as-imap", "imap-as-smtp", "mysql", "mysql-host-blocked",
         "imap-as-mysql", "connect"],
)
def test_probe_real_greetings(replay, capture, check, ok, detail):
    server = replay((DATA / capture).read_bytes())
    result = health.probe("127.0.0.1", server.port, check, timeout=2)
    assert result.ok is ok
    assert detail in result.detail


def test_probe_refused():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    result = health.probe("127.0.0.1", port, "imap", timeout=1)
    assert not result.ok and "refused" in result.detail.lower()


def test_probe_silent_server_times_out(replay):
    server = replay(None)
    result = health.probe("127.0.0.1", server.port, "smtp", timeout=0.3)
    assert not result.ok and "timed out" in result.detail


def test_probe_tls_check_on_plain_server_fails(replay):
    server = replay((DATA / "dovecot_imap_greeting.txt").read_bytes())
    result = health.probe("127.0.0.1", server.port, "imaps", timeout=1)
    assert not result.ok and "imaps probe" in result.detail


def test_probe_unknown_check():
    with pytest.raises(ValueError, match="unknown check type 'gopher'"):
        health.probe("127.0.0.1", 1, "gopher")


@pytest.fixture
def http_server():
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server API
            if self.path == "/ldirectord.txt":
                body = b"ldirectord\n"
                self.send_response(200)
            else:
                body = b"nope"
                self.send_response(404)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv.server_address[1]
    srv.shutdown()
    srv.server_close()


@pytest.mark.parametrize(
    "path,expect,ok,detail",
    [("/ldirectord.txt", "ldirectord", True, "http 200"),
     ("/ldirectord.txt", "something-else", False, "lacks"),
     ("/missing", None, False, "status line")],
    ids=["health-page", "wrong-content", "404"],
)
def test_probe_http(http_server, path, expect, ok, detail):
    result = health.probe("127.0.0.1", http_server, "http", timeout=2, http_path=path,
                          http_expect=expect)
    assert result.ok is ok and detail in result.detail


# ------------------------------------------------------------------------ https and the site CA


@pytest.fixture(scope="module")
def snakeoil_https(tmp_path_factory):
    """A real TLS server with a snakeoil-style certificate (self-signed, CA:FALSE, named "vm", probed
    as 127.0.0.1), plus another self-signed certificate that did not sign it."""
    d = tmp_path_factory.mktemp("tls")
    cert, key = tls.snakeoil(d)
    other, _ = tls.snakeoil(d, name="other")
    srv = tls.HttpsServer(cert, key, {"/ldirectord.txt": "ldirectord\n"})
    yield srv.port, cert, other, d
    srv.close()


@pytest.mark.parametrize(
    "ca,ok,detail",
    [(None, True, "http 200"), ("cert", True, "http 200"),
     ("other", False, "certificate verify failed (self-signed certificate) against CA"),
     ("missing", False, "unusable: No such file or directory"),
     ("junk", False, "unusable: NO_CERTIFICATE_OR_CRL_FOUND")],
    ids=["no-ca-no-verification", "own-ca-verified-host-name-not", "other-ca", "missing-ca", "not-pem"])
def test_probe_https_against_site_ca(snakeoil_https, ca, ok, detail):
    port, cert, other, d = snakeoil_https
    (d / "junk.pem").write_text("not a certificate\n")
    ca_file = {None: None, "cert": cert, "other": other, "missing": d / "missing.pem", "junk": d / "junk.pem"}[ca]
    result = health.probe("127.0.0.1", port, "https", timeout=5, http_path="/ldirectord.txt",
                          http_expect="ldirectord", ca_file=None if ca_file is None else str(ca_file))
    assert result.ok is ok and detail in result.detail, result


def test_probe_all_verifies_https_only_against_the_site_ca(snakeoil_https):
    """The beacon's round (probe_all) passes mail:tls:ca to https checks, as the balancers'
    ldirectord drop-in does; the same server over imaps-style TLS is not verified (ldirectord's
    PERL_LWP_SSL_CA_FILE reaches its http/https checks only)."""
    from salt_mailha.core.model import parse_site
    from tests.support.example import example_pillar

    port, cert, other, _ = snakeoil_https
    targets = [health.Target("https", "127.0.0.1", port, "https"), health.Target("tls", "127.0.0.1", port, "connect")]
    pillar = example_pillar()["mailha"]
    for ca, https_ok in ((None, True), (str(cert), True), (str(other), False)):
        pillar["mail"]["tls"] = {} if ca is None else {"ca": ca}
        got = health.probe_all(parse_site(pillar), targets, timeout=5)
        assert got["https"].ok is https_ok, (ca, got["https"])
        assert got["tls"].ok
