"""``mailha_health.probe`` in a job process forked from a process whose threads use TLS.

The salt-minion forks every job from a process that also runs TLS (the beacons' https/imaps
probes); with OpenSSL 3 such a child can inherit a held lock and hang in its first handshake
(openssl/openssl#19066). The lab caught a balancer's re-check hanging that way, holding the
master's remediation lock for minutes. The module probes from a freshly executed interpreter:
here the parent hammers TLS from threads while it forks children that each run a real probe of
a real TLS listener; every child must finish, with the right answer. (With the probes run in the
forked child itself, one run of 20 forks in three hung a child; this runs 60.)
"""
import os
import socket
import ssl
import threading
import time
import types

import pytest

from salt_mailha.modules import mailha_health
from tests.integration.remediation import cluster
from tests.support.tls import snakeoil

FORKS = 60


@pytest.fixture
def tls_listener(tmp_path):
    """An IMAPS-like listener on mail1's loopback address: TLS, then ``* OK``."""
    cert, key = snakeoil(tmp_path / "tls")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.17", 0))
    srv.listen(256)

    def handle(conn):
        try:
            with ctx.wrap_socket(conn, server_side=True) as s:
                s.sendall(b"* OK test ready\r\n")
                s.recv(64)
        except OSError:
            pass

    def serve():
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            threading.Thread(target=handle, args=(conn,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    yield srv.getsockname()[1]
    srv.close()


@pytest.fixture
def module(tls_listener, monkeypatch):
    named = types.SimpleNamespace(address="127.0.0.1", port=53, key_name="k",
                                  secret="c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3I=")
    pillar = cluster.site_pillar(named)
    pillar["mailha"]["services"] = {
        "imaps": {"vip": "mail", "port": tls_listener, "check": "imaps", "scheduler": "wrr"}}
    monkeypatch.setattr(mailha_health, "__pillar__", pillar, raising=False)
    monkeypatch.setattr(mailha_health, "__opts__", {"id": "lb1"}, raising=False)
    return tls_listener


def _hammer(port, stop):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    while not stop.is_set():
        try:
            with ctx.wrap_socket(socket.create_connection(("127.0.0.17", port), timeout=2)) as s:
                s.recv(64)
        except OSError:
            pass


def test_probe_answers_from_a_fresh_interpreter(module):
    ret = mailha_health.probe("mail1", timeout=2)
    assert ret["ok"] is True and ret["prober"] == "lb1" and ret["failing"] == []
    assert ret["services"]["imaps"]["detail"] == "greeting '* OK' received"


def test_forked_jobs_never_hang_on_tls(module):
    stop = threading.Event()
    hammers = [threading.Thread(target=_hammer, args=(module, stop), daemon=True) for _ in range(4)]
    for t in hammers:
        t.start()
    hung, wrong = [], []
    try:
        for i in range(FORKS):
            pid = os.fork()
            if pid == 0:  # the job process
                try:
                    ok = mailha_health.probe("mail1", timeout=2)["ok"]
                except BaseException:  # noqa: BLE001 - any failure is the child's exit code
                    ok = False
                os._exit(0 if ok else 3)
            deadline = time.monotonic() + 30
            while True:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    if os.waitstatus_to_exitcode(status) != 0:
                        wrong.append(i)
                    break
                if time.monotonic() > deadline:
                    os.kill(pid, 9)
                    os.waitpid(pid, 0)
                    hung.append(i)
                    break
                time.sleep(0.02)
    finally:
        stop.set()
    assert hung == [] and wrong == [], f"hung: {hung}, wrong answer: {wrong}"
