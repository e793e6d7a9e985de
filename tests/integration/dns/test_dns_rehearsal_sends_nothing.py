"""Rehearsals are offline: with a scratch ``mailha_root`` (and no ``mailha_live``) the DNS states
and the whole formula of the dns node send nothing, while they show the plan.

The pillar names two servers: first a loopback listener that counts every TCP connection and UDP
datagram it receives, then a real named. Any query, transfer or UPDATE would reach the listener
first (dnspython moves on to named when the listener hangs up). A rehearsal must leave the
listener at zero, named without an applied update, its zone and serial unchanged. The same setup
with ``mailha_live: True`` does reach both: the counters can see traffic."""
import socket
import subprocess
import threading

import pytest

from tests.integration.dns.conftest import EXAMPLE, SALT_CALL, Minion
from tests.support.named import NamedServer, free_port

pytestmark = pytest.mark.integration

EXAMPLE_MX = ["10 mail1.example.net.", "10 mail2.example.net."]


class Listener:
    """TCP and UDP on one loopback port: counts connections and datagrams, answers nothing."""

    def __init__(self):
        self.address, self.port = "127.0.0.1", free_port()
        self.tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.tcp.bind((self.address, self.port))
        self.tcp.listen(16)
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind((self.address, self.port))
        self.connections = self.datagrams = self.bytes = 0
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._accept, daemon=True),
                        threading.Thread(target=self._receive, daemon=True)]
        for t in self.threads:
            t.start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.tcp.accept()
            except OSError:
                return  # closed
            with conn:
                conn.settimeout(2)
                try:
                    data = conn.recv(65535)
                except OSError:
                    data = b""
            with self.lock:
                self.connections += 1
                self.bytes += len(data)

    def _receive(self):
        while True:
            try:
                data = self.udp.recv(65535)
            except OSError:
                return
            with self.lock:
                self.datagrams += 1
                self.bytes += len(data)

    def counts(self):
        with self.lock:
            return {"tcp": self.connections, "udp": self.datagrams, "bytes": self.bytes}

    def close(self):
        for s in (self.tcp, self.udp):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()


@pytest.fixture
def listener():
    lst = Listener()
    yield lst
    lst.close()


@pytest.fixture
def named(tmp_path):
    ns = NamedServer(tmp_path / "named", records=["www IN A 192.0.2.80"]).start()
    yield ns
    ns.stop()


def pillar_for(named, listener):
    """The example site with the listener first and named second in mailha:dns:servers."""
    pillar = named.point_pillar(EXAMPLE)
    pillar["mailha"]["dns"]["servers"] = [{"address": listener.address, "port": listener.port},
                                          {"address": named.address, "port": named.port}]
    return pillar


def zone_state(named):
    return {"serial": named.soa_serial(), "MX": named.query("example.net.", "MX"),
            "mail": named.query("mail", "A"), "www": named.query("www", "A"),
            "updates": named.applied_updates()}


def assert_offline(listener, named, before):
    assert listener.counts() == {"tcp": 0, "udp": 0, "bytes": 0}, "a rehearsal sent packets"
    assert zone_state(named) == before, "a rehearsal changed the zone"


def assert_no_secret(minion, secret):
    text = minion.everything_written()
    assert text.strip(), "nothing captured: the grep would be hollow"
    assert secret not in text


def test_record_states_in_a_rehearsal_send_nothing_and_show_the_plan(tmp_path, named, listener):
    before = zone_state(named)
    assert before["MX"] == [] and before["updates"] == 0
    pillar = pillar_for(named, listener)
    minion = Minion(tmp_path / "minion", pillar, live=False)

    calls = [("mailha_dns.records", "name=dns"), ("mailha_dns.mx_withdrawn", "name=mail1"),
             ("mailha_dns.mx_restored", "name=mail1")]
    for fun, name in calls:
        for test in (True, False):
            rc, ret = minion.call("state.single", fun, name, *(["test=True"] if test else []))
            ((_, ret),) = ret.items()
            assert rc == 0, ret
            # nothing was sent, in either mode: no changes; the plan is in the comment
            assert ret["result"] is True and ret["changes"] == {}, ret
            assert ret["comment"].startswith("REHEARSAL, nothing sent"), ret["comment"]
            assert f"mailha_root {minion.base / 'root'}" in ret["comment"]
            assert "planned against the zone seed" in ret["comment"]
    # the full plan of a new site: MX, the VIP names, the nodes' A records, ownership
    rc, ret = minion.state()
    plan = ret["comment"]
    assert "Would update the DNS records" in plan and "+8 -0 record(s)" in plan
    assert "example.net. MX (ttl 60):\n  + 10 mail1.example.net.\n  + 10 mail2.example.net." in plan
    assert "mail.example.net. A (ttl" in plan and "  + 192.0.2.21" in plan
    assert_offline(listener, named, before)

    # the execution module says the same, and a query is refused rather than sent
    rc, out = minion.call("mailha_dns.records")
    assert rc == 0 and out["rehearsal"] is True and out["updates_sent"] == 0 and out["server"] is None
    assert out["changes"]["example.net. MX"] == {"old": [], "new": [f"60 {r}" for r in EXAMPLE_MX]}
    assert out["not_sent"].startswith(f"nothing sent to 127.0.0.1:{listener.port}, 127.0.0.1:{named.port}")
    proc = subprocess.run([str(SALT_CALL), "--local", "-c", str(minion.conf), "-l", "quiet",
                           "mailha_dns.query", "@", "MX"], capture_output=True, text=True, timeout=120)
    minion.outputs.append(proc.stdout + proc.stderr)
    assert proc.returncode != 0
    assert ("mailha_dns.query example.net. MX would ask the site's DNS server; refused: a rehearsal "
            f"(mailha_root {minion.base / 'root'})") in proc.stdout + proc.stderr
    assert_offline(listener, named, before)
    assert_no_secret(minion, pillar["mailha"]["dns"]["tsig"]["secret"])


def test_mailha_live_sends_from_the_same_scratch_root(tmp_path, named, listener):
    """The control: the same minion with minion config mailha_live: True reaches the listener
    (which hangs up: the read moves on to named) and named applies one UPDATE."""
    before = zone_state(named)
    minion = Minion(tmp_path / "minion", pillar_for(named, listener), live=True)
    rc, ret = minion.state()
    assert rc == 0 and ret["result"] is True and ret["changes"], ret
    assert "1 update sent" in ret["comment"] and "REHEARSAL" not in ret["comment"]
    assert listener.counts()["tcp"] >= 1
    after = zone_state(named)
    assert after["MX"] == EXAMPLE_MX and after["updates"] == 1
    assert after["serial"] == before["serial"] + 1


def test_formula_of_the_dns_node_in_a_rehearsal_sends_nothing(tmp_path, named, listener):
    """state.apply mailha as ns1 (role dns and the updater): the BIND files and the zone seed go
    under the scratch root, the records are planned against that seeded file, nothing is sent;
    a second run still plans (nothing was applied) and changes nothing."""
    before = zone_state(named)
    pillar = pillar_for(named, listener)
    minion = Minion(tmp_path / "minion", pillar, live=False)
    root = minion.base / "root"
    zone_file = root / "var/lib/bind/example.net.db"

    rc, ret = minion.call("state.apply", "mailha", "test=True")
    assert rc == 0, ret
    by_id = {v["__id__"]: v for v in ret.values()}
    assert "mailha-service-named" not in by_id
    records = by_id["mailha-dns-records"]
    assert records["result"] is True and records["changes"] == {}
    assert "planned against the zone seed" in records["comment"]  # test mode wrote no zone file
    assert not zone_file.exists()
    assert_offline(listener, named, before)

    for run in (1, 2):
        rc, ret = minion.call("state.apply", "mailha")
        assert rc == 0 and all(v["result"] is True for v in ret.values()), ret
        by_id = {v["__id__"]: v for v in ret.values()}
        records = by_id["mailha-dns-records"]
        assert records["changes"] == {}
        assert records["comment"].startswith("REHEARSAL, nothing sent")
        assert f"planned against the rehearsal's zone file {zone_file}" in records["comment"]
        assert "+ 10 mail1.example.net." in records["comment"]
        if run == 1:
            assert by_id["mailha-dns-zone"]["changes"], by_id["mailha-dns-zone"]
        else:
            assert all(not v["changes"] for v in ret.values()), ret
    assert zone_file.exists()
    assert_offline(listener, named, before)
    assert_no_secret(minion, pillar["mailha"]["dns"]["tsig"]["secret"])
