"""The mailha_health and mailha_local beacons, called directly (they import no Salt), probing
real loopback listeners: documented tags and payloads, hold-down, one event per change."""
import importlib
import logging

import pytest

from tests.integration.remediation import cluster
from tests.support.named import free_port


class FakeNamed:  # only the DNS fields the pillar needs; no DNS traffic in these tests
    address, port, key_name = "127.0.0.1", 53, "mailha-update"
    secret = "Q0hBTkdFLU1FLXRzaWctc2VjcmV0LWJhc2U2NA=="


@pytest.fixture
def site():
    pillar = cluster.site_pillar(FakeNamed(), down_after=2, up_after=2)
    services = pillar["mailha"]["services"]
    services["imap"]["port"] = free_port("127.0.0.17")
    services["smtp"]["port"] = free_port("127.0.0.17")
    listeners = {}
    for node in ("mail1", "mail2"):
        addr = cluster.node_address(pillar, node)
        listeners[node] = {
            "imap": cluster.ServiceListener(addr, services["imap"]["port"],
                                            b"* OK Dovecot ready.\r\n").start(),
            "smtp": cluster.ServiceListener(addr, services["smtp"]["port"],
                                            b"220 mail ESMTP Postfix\r\n").start(),
        }
    yield pillar, listeners
    for per in listeners.values():
        for listener in per.values():
            listener.stop()


def load(name, pillar, minion_id):
    mod = importlib.import_module(f"salt_mailha.beacons.{name}")
    mod = importlib.reload(mod)  # fresh hold-down memory per test
    mod.__salt__ = {"pillar.get": lambda key, default=None, unmask=False: pillar.get(key, default)}
    mod.__opts__ = {"id": minion_id}
    return mod


CONFIG = [{"interval": 1}, {"timeout": 0.5}]


@pytest.mark.parametrize("name", ["mailha_health", "mailha_local"])
@pytest.mark.parametrize(
    "config,ok,message",
    [
        (CONFIG, True, "valid beacon configuration"),
        ({"interval": 1}, False, "configuration must be a list"),
        ([{"interval": 1}, {"probes": 3}], False, "unknown option(s) ['probes']"),
        ([{"timeout": 0}], False, "timeout must be seconds in (0, 30]"),
        ([{"timeout": "fast"}], False, "timeout must be seconds in (0, 30]"),
    ],
    ids=["ok", "not-a-list", "unknown-key", "zero-timeout", "text-timeout"],
)
def test_validate(name, config, ok, message):
    mod = importlib.import_module(f"salt_mailha.beacons.{name}")
    valid, text = mod.validate(config)
    assert valid is ok and message in text


def test_balancer_beacon_reports_each_change_once(site):
    pillar, listeners = site
    beacon = load("mailha_health", pillar, "lb1")
    assert beacon.beacon(CONFIG) == []  # one success is below up_after
    first = beacon.beacon(CONFIG)
    assert sorted(e["tag"] for e in first) == ["mailha/health/mail1/up", "mailha/health/mail2/up"]
    assert beacon.beacon(CONFIG) == []  # edge-triggered
    listeners["mail1"]["imap"].stop()
    assert beacon.beacon(CONFIG) == []  # hold-down: one failure
    (ev,) = beacon.beacon(CONFIG)
    assert ev["tag"] == "mailha/health/mail1/down"
    assert (ev["node"], ev["status"], ev["previous"], ev["site"]) == ("mail1", "down", "up",
                                                                      "remtest")
    assert ev["services"]["imap"]["status"] == "down"
    assert "Connection refused" in ev["services"]["imap"]["detail"]
    assert ev["services"]["smtp"] == {"status": "up", "detail": "greeting '220' received"}
    assert beacon.beacon(CONFIG) == []
    listeners["mail1"]["imap"].start()
    beacon.beacon(CONFIG)
    assert [e["tag"] for e in beacon.beacon(CONFIG)] == ["mailha/health/mail1/up"]


def test_local_beacon_reports_only_its_own_node(site):
    pillar, listeners = site
    local = load("mailha_local", pillar, "mail2")
    local.beacon(CONFIG)
    assert [e["tag"] for e in local.beacon(CONFIG)] == ["mailha/local/mail2/up"]
    listeners["mail1"]["imap"].stop()  # another node's trouble is not its business
    listeners["mail2"]["smtp"].stop()
    local.beacon(CONFIG)
    (ev,) = local.beacon(CONFIG)
    assert ev["tag"] == "mailha/local/mail2/down" and ev["node"] == "mail2"
    assert ev["services"]["smtp"]["status"] == "down"
    assert load("mailha_local", pillar, "lb1").beacon(CONFIG) == []  # not a real server


class Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.ERROR)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def test_bad_pillar_makes_the_beacon_idle(site):
    pillar, _ = site
    broken = {"mailha": dict(pillar["mailha"], remediation={"down_after": 0})}
    beacon = load("mailha_health", broken, "lb1")
    records = Records()
    beacon.log.addHandler(records)
    try:
        assert beacon.beacon(CONFIG) == [] and beacon.beacon(CONFIG) == []
    finally:
        beacon.log.removeHandler(records)
    errors = [m for m in records.messages if "mailha_health beacon idle" in m]
    assert len(errors) == 1 and "mailha:remediation:down_after" in errors[0]
