"""The mailha_health and mailha_local beacons loaded by Salt's own loader, with Salt's real
``pillar`` execution module as their ``__salt__`` (no stand-in: a lambda accepting ``unmask`` once
hid that Salt 3006 and 3007 refuse that argument), probing real loopback listeners: documented
tags and payloads, hold-down, one event per change, secrets unmasked on every Salt line."""
import logging

import pytest
import salt.config
import salt.loader
import salt.version

from salt_mailha import glue
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


class Loaded:
    """One beacon as the minion runs it: ``salt.loader.beacons`` over the real execution modules
    (a new loader per call: fresh hold-down memory per test)."""

    def __init__(self, name, pillar, minion_id, cachedir):
        opts = salt.config.minion_config(None)
        opts.update(id=minion_id, pillar=pillar, grains={}, file_client="local",
                    cachedir=str(cachedir))
        funcs = salt.loader.minion_mods(opts, whitelist=["pillar", "config"])
        self.funcs = funcs
        self.loaded = salt.loader.beacons(opts, funcs)
        self.name = name

    def beacon(self, config):
        return self.loaded[f"{self.name}.beacon"](config)

    def validate(self, config):
        return self.loaded[f"{self.name}.validate"](config)


@pytest.fixture
def load(tmp_path):
    def make(name, pillar, minion_id):
        return Loaded(name, pillar, minion_id, tmp_path / f"cache-{name}-{minion_id}")
    return make


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
def test_validate(load, name, config, ok, message):
    valid, text = load(name, {}, "lb1").validate(config)
    assert valid is ok and message in text


def test_pillar_get_fallback_matches_this_salt(load, site):
    """The beacons read the site through glue.pillar_get: with ``unmask=True`` exactly on the
    Salt lines that mask pillar values (3008+), and the TSIG secret comes back as it is."""
    pillar, _ = site
    funcs = load("mailha_health", pillar, "lb1").funcs
    assert glue.PILLAR_GET_MASKS is (salt.version.__saltstack_version__.info >= (3008,))
    got = glue.pillar_get(funcs, "mailha", {})
    assert got["dns"]["tsig"]["secret"] == FakeNamed.secret
    if glue.PILLAR_GET_MASKS:  # what the fallback protects against on 3008: a masked secret
        assert funcs["pillar.get"]("mailha", {})["dns"]["tsig"]["secret"] != FakeNamed.secret
    else:  # and on 3006/3007: the keyword the beacons once passed is refused
        with pytest.raises(TypeError, match="unmask"):
            funcs["pillar.get"]("mailha", {}, unmask=True)


def test_balancer_beacon_reports_each_change_once(load, site):
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


def test_local_beacon_reports_only_its_own_node(load, site):
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


def test_bad_pillar_makes_the_beacon_idle(load, site, caplog):
    pillar, _ = site
    broken = {"mailha": dict(pillar["mailha"], remediation={"down_after": 0})}
    beacon = load("mailha_health", broken, "lb1")
    with caplog.at_level(logging.ERROR):
        assert beacon.beacon(CONFIG) == [] and beacon.beacon(CONFIG) == []
    errors = [r.getMessage() for r in caplog.records if "mailha_health beacon idle" in r.getMessage()]
    assert len(errors) == 1 and "mailha:remediation:down_after" in errors[0]
