"""mailha_dns against a real named (Debian bind9) through real ``salt-call --local`` runs: the
example site's records from an empty zone, a truthful test=True, idempotence, MX withdraw/restore
in one UPDATE each, the last-MX guard, hand-made records, TSIG and server errors. Every test greps
everything salt-call printed or logged for the TSIG secret."""
import pathlib
import socket
import threading

import pytest

from tests.integration.dns.conftest import EXAMPLE, Minion, site_pillar
from tests.support.named import NamedServer, free_port

pytestmark = pytest.mark.integration

EXAMPLE_MX = ["10 mail1.example.net.", "10 mail2.example.net."]
NAMES = ["imap", "mail", "pop", "smtp"]


def assert_no_secret(minion, *secrets):
    text = minion.everything_written()
    assert text.strip(), "nothing captured: the grep would be hollow"
    for s in secrets:
        assert s not in text, "the TSIG secret leaked into salt-call output or its log"


def snapshot(named):
    """The records a test cares about, as the server answers them."""
    out = {"MX": named.query("example.net.", "MX"), "serial": named.soa_serial()}
    for n in [*NAMES, "mail1", "mail2", "www", "webmail"]:
        out[n] = named.query(n, "A")
    return out


def test_records_from_empty_zone_test_mode_then_apply_then_idempotent(named, minion):
    before = snapshot(named)
    assert before["MX"] == [] and before["mail"] == []

    rc, ret = minion.state(test=True)
    assert rc == 0 and ret["result"] is None
    assert ret["changes"]["example.net. MX"] == {"old": [], "new": [f"60 {r}" for r in EXAMPLE_MX]}
    assert ret["changes"]["mail1.example.net. A"] == {"old": [], "new": ["3600 192.0.2.17"]}
    assert "+8 -0 record(s)" in ret["comment"]
    assert snapshot(named) == before, "test=True changed the zone"
    assert named.applied_updates() == 0

    rc, ret = minion.state()
    assert rc == 0 and ret["result"] is True, ret["comment"]
    assert "1 update sent" in ret["comment"]
    after = snapshot(named)
    assert after["MX"] == EXAMPLE_MX
    assert all(after[n] == ["192.0.2.21"] for n in NAMES)
    assert after["mail1"] == ["192.0.2.17"] and after["mail2"] == ["192.0.2.18"]
    assert after["www"] == ["192.0.2.80"]                  # the zone's own record is untouched
    assert after["serial"] == before["serial"] + 1
    assert named.applied_updates() == 1

    for test in (True, False):
        rc, ret = minion.state(test=test)
        assert rc == 0 and ret["result"] is True and ret["changes"] == {}, ret
        assert ret["comment"] == "DNS records are already as specified"
    assert snapshot(named) == after and named.applied_updates() == 1
    assert_no_secret(minion, named.secret)
    # named reads the key from a 0600 file: the secret is in no process's argv either.
    assert named.secret not in pathlib.Path(f"/proc/{named.daemon.pid}/cmdline").read_text()


def test_test_mode_on_a_changed_pillar_lists_exactly_the_differences(named, minion):
    assert minion.state()[1]["result"] is True
    before = snapshot(named)
    minion.set_pillar(site_pillar(named, names=["mail", "smtp", "imap", "webmail"],
                                  mx={"mail1": 10, "mail2": 20}))

    rc, ret = minion.state(test=True)
    assert rc == 0 and ret["result"] is None
    assert set(ret["changes"]) == {
        "example.net. MX", "webmail.example.net. A", "pop.example.net. A",
        "_mailha-owner.example.net. TXT", "_mailha-owner.webmail.example.net. TXT",
        "_mailha-owner.pop.example.net. TXT",
    }
    assert ret["changes"]["example.net. MX"] == {
        "old": ["60 10 mail1.example.net.", "60 10 mail2.example.net."],
        "new": ["60 10 mail1.example.net.", "60 20 mail2.example.net."]}
    assert ret["changes"]["webmail.example.net. A"] == {"old": [], "new": ["60 192.0.2.21"]}
    assert ret["changes"]["pop.example.net. A"] == {"old": ["60 192.0.2.21"], "new": []}
    assert "+2 -2 record(s)" in ret["comment"]
    assert snapshot(named) == before

    rc, ret = minion.state()
    assert ret["result"] is True, ret["comment"]
    after = snapshot(named)
    assert after["MX"] == ["10 mail1.example.net.", "20 mail2.example.net."]
    assert after["webmail"] == ["192.0.2.21"] and after["pop"] == []
    assert named.applied_updates() == 2
    assert minion.state()[1]["changes"] == {}
    assert_no_secret(minion, named.secret)


def test_withdraw_and_restore_mx_one_update_each(named, minion):
    assert minion.state()[1]["result"] is True
    serial = named.soa_serial()

    rc, ret = minion.call("mailha_dns.withdraw_mx", "mail1", "test=True")
    assert rc == 0 and ret["result"] is True and ret["updates_sent"] == 0
    assert ret["changes"]["example.net. MX"]["new"] == ["60 10 mail2.example.net."]
    assert named.query("example.net.", "MX") == EXAMPLE_MX and named.applied_updates() == 1

    rc, ret = minion.call("mailha_dns.withdraw_mx", "mail1")
    assert rc == 0 and ret["result"] is True and ret["updates_sent"] == 1, ret
    assert named.query("example.net.", "MX") == ["10 mail2.example.net."]
    assert named.applied_updates() == 2                    # exactly one more UPDATE
    assert named.soa_serial() == serial + 1                # bumped by the server
    assert named.query("mail2", "A") == ["192.0.2.18"]

    # The last MX is never withdrawn; the reason says so; nothing is sent.
    rc, ret = minion.call("mailha_dns.withdraw_mx", "mail2")
    assert rc != 0 and ret["result"] is False and ret["updates_sent"] == 0
    assert "would remove the last MX record of example.net." in ret["comment"]
    assert named.query("example.net.", "MX") == ["10 mail2.example.net."]
    assert named.applied_updates() == 2

    # A full converge keeps the withdrawal (the marker lives in the zone).
    assert minion.state()[1]["changes"] == {}
    assert named.query("example.net.", "MX") == ["10 mail2.example.net."]

    rc, ret = minion.call("mailha_dns.restore_mx", "mail1")
    assert rc == 0 and ret["result"] is True and ret["updates_sent"] == 1, ret
    assert named.query("example.net.", "MX") == EXAMPLE_MX
    assert named.applied_updates() == 3 and named.soa_serial() == serial + 2
    rc, ret = minion.call("mailha_dns.restore_mx", "mail1")
    assert ret["result"] is True and ret["changes"] == {} and ret["updates_sent"] == 0
    assert_no_secret(minion, named.secret)


def test_mx_states_both_modes(named, minion):
    assert minion.state()[1]["result"] is True
    rc, ret = minion.call("state.single", "mailha_dns.mx_withdrawn", "name=mail2", "test=True")
    ret = next(iter(ret.values()))
    assert ret["result"] is None and "Would withdraw the MX of mail2" in ret["comment"]
    assert named.query("example.net.", "MX") == EXAMPLE_MX
    rc, ret = minion.call("state.single", "mailha_dns.mx_withdrawn", "name=mail2")
    ret = next(iter(ret.values()))
    assert ret["result"] is True and ret["changes"]
    assert named.query("example.net.", "MX") == ["10 mail1.example.net."]
    rc, ret = minion.call("state.single", "mailha_dns.mx_restored", "name=mail2")
    assert next(iter(ret.values()))["result"] is True
    assert named.query("example.net.", "MX") == EXAMPLE_MX
    assert_no_secret(minion, named.secret)


def test_records_added_by_hand_survive_every_apply(named, minion):
    assert minion.state()[1]["result"] is True
    assert named.update(lambda u: (u.add("shop", 300, "A", "192.0.2.7"),
                                   u.add("@", 60, "MX", "50 backup-mx.provider.example."))) == "NOERROR"
    hand_mx = "50 backup-mx.provider.example."

    def hand_records_there():
        assert named.query("shop", "A") == ["192.0.2.7"]
        assert hand_mx in named.query("example.net.", "MX")
        assert named.query("www", "A") == ["192.0.2.80"]

    assert minion.state()[1]["changes"] == {}
    hand_records_there()
    minion.set_pillar(site_pillar(named, names=["mail", "smtp", "imap"], mx={"mail1": 5, "mail2": 10}))
    assert minion.state()[1]["result"] is True
    hand_records_there()
    assert minion.call("mailha_dns.withdraw_mx", "mail1")[1]["result"] is True
    assert minion.call("mailha_dns.withdraw_mx", "mail2")[1]["result"] is True   # backup MX remains
    assert named.query("example.net.", "MX") == [hand_mx]
    assert minion.call("mailha_dns.restore_mx", "mail1")[1]["result"] is True
    assert minion.call("mailha_dns.restore_mx", "mail2")[1]["result"] is True
    hand_records_there()
    assert_no_secret(minion, named.secret)


def test_unowned_record_is_refused_then_taken_over(named, minion):
    assert named.update(lambda u: u.add("mail", 300, "A", "192.0.2.25")) == "NOERROR"
    rc, ret = minion.state()
    assert rc != 0 and ret["result"] is False
    assert "mail.example.net. A also holds 192.0.2.25" in ret["comment"] and "take_over=True" in ret["comment"]
    assert named.query("example.net.", "MX") == [] and named.applied_updates() == 1   # the hand one

    rc, ret = minion.state(test=True, take_over=True)
    assert ret["result"] is None and ret["changes"]["mail.example.net. A"] == {
        "old": ["300 192.0.2.25"], "new": ["60 192.0.2.21"]}
    rc, ret = minion.state(take_over=True)
    assert ret["result"] is True, ret["comment"]
    assert named.query("mail", "A") == ["192.0.2.21"]
    assert minion.state()[1]["changes"] == {}
    assert_no_secret(minion, named.secret)


def test_wrong_tsig_secret_clear_error_zone_unchanged(named, minion):
    assert minion.state()[1]["result"] is True
    before = snapshot(named)
    wrong = "V3JvbmdXcm9uZ1dyb25nV3JvbmdXcm9uZ1dyb25nISE="
    pillar = site_pillar(named, names=["mail", "webmail"])      # a change to send
    pillar["mailha"]["dns"]["tsig"]["secret"] = wrong
    minion.set_pillar(pillar)

    for call in (lambda: minion.state(), lambda: minion.call("mailha_dns.withdraw_mx", "mail1")):
        rc, ret = call()
        assert rc != 0 and ret["result"] is False
        assert "rejected the TSIG key 'mailha-update'" in ret["comment"]
        assert "bad signature" in ret["comment"] and "mailha:dns:tsig" in ret["comment"]
    assert snapshot(named) == before
    assert_no_secret(minion, wrong, named.secret)


def test_unknown_tsig_key_and_refused_update(tmp_path):
    ns = NamedServer(tmp_path / "named", update_policy="grant mailha-update name www.example.net. A;").start()
    try:
        minion = Minion(tmp_path / "minion", site_pillar(ns))
        rc, ret = minion.state()
        assert ret["result"] is False
        assert "REFUSED the update of zone example.net." in ret["comment"]
        assert "update-policy must grant key 'mailha-update'" in ret["comment"]
        assert ns.query("example.net.", "MX") == []

        pillar = site_pillar(ns)
        pillar["mailha"]["dns"]["tsig"]["name"] = "no-such-key"
        minion.set_pillar(pillar)
        rc, ret = minion.state()
        assert ret["result"] is False and "'no-such-key'" in ret["comment"] and "unknown key" in ret["comment"]
        assert_no_secret(minion, ns.secret)
    finally:
        ns.stop()


def test_server_not_authoritative_for_the_zone(tmp_path):
    ns = NamedServer(tmp_path / "named", zone="example.org").start()
    try:
        minion = Minion(tmp_path / "minion", site_pillar(ns))
        rc, ret = minion.state()
        assert rc != 0 and ret["result"] is False
        assert "is it authoritative for zone example.net.?" in ret["comment"], ret["comment"]
        assert_no_secret(minion, ns.secret)
    finally:
        ns.stop()


def test_servers_fail_over_in_order_and_time_out_clearly(named, tmp_path):
    # A server that accepts TCP connections and never answers: a real timeout.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    dead_port = free_port()                                  # nothing listens there
    try:
        servers = [{"address": "127.0.0.1", "port": silent.getsockname()[1]},
                   {"address": "127.0.0.1", "port": dead_port},
                   {"address": named.address, "port": named.port}]
        minion = Minion(tmp_path / "minion", site_pillar(named, servers=servers))
        rc, ret = minion.state(timeout=1)
        assert ret["result"] is True, ret["comment"]
        assert f"sent to 127.0.0.1:{named.port}" in ret["comment"]
        assert named.query("example.net.", "MX") == EXAMPLE_MX

        minion.set_pillar(site_pillar(named, servers=servers[:2]))
        rc, ret = minion.state(timeout=1)
        assert rc != 0 and ret["result"] is False
        assert "no DNS server answered the read of zone example.net." in ret["comment"]
        assert f"127.0.0.1:{silent.getsockname()[1]}" in ret["comment"]
        assert f"127.0.0.1:{dead_port}" in ret["comment"]
        assert_no_secret(minion, named.secret)
    finally:
        silent.close()


def test_concurrent_change_fails_loudly_and_applies_nothing(named):
    """Plan, let someone else change the MX set, then send: YXRRSET -> ZoneChanged, no clobber."""
    from salt_mailha.core import dns as core
    from salt_mailha.core.model import parse_site
    from salt_mailha.modules import mailha_dns

    site = parse_site(site_pillar(named)["mailha"])
    conn = mailha_dns._Conn(site, 3)
    current, method = conn.read(site)
    assert method == "axfr"
    conn.send(core.plan(site, current))
    current, _ = conn.read(site)
    the_plan = core.plan(site, current, withdraw=("mail1",), only=(("example.net.", "MX"),))
    # (named refuses an MX whose in-zone target has no address, so mail3 gets one too)
    assert named.update(lambda u: (u.add("mail3", 60, "A", "192.0.2.33"),
                                   u.add("@", 60, "MX", "30 mail3.example.net."))) == "NOERROR"
    racing = named.query("example.net.", "MX")
    assert "30 mail3.example.net." in racing
    with pytest.raises(core.ZoneChanged, match="changed concurrently .*re-plan"):
        conn.send(the_plan)
    assert named.query("example.net.", "MX") == racing


def test_query_mode_when_axfr_is_refused(tmp_path):
    """Without transfer rights the module reads by queries and converges all the same."""
    ns = NamedServer(tmp_path / "named")
    ns.write_config()
    conf = ns.dir / "named.conf"
    conf.write_text(conf.read_text().replace(f"allow-transfer {{ key {ns.key_name}; }};", "allow-transfer { none; };"))
    ns.write_config = lambda: None                           # keep the edited config
    ns.start()
    try:
        minion = Minion(tmp_path / "minion", site_pillar(ns))
        rc, ret = minion.call("mailha_dns.records")
        assert ret["result"] is True and ret["read"] == "query", ret
        assert ns.query("example.net.", "MX") == EXAMPLE_MX
        rc, ret = minion.call("mailha_dns.records")
        assert ret["changes"] == {} and ret["read"] == "query"
        assert_no_secret(minion, ns.secret)
    finally:
        ns.stop()


def test_concurrent_updates_from_two_minions_never_clobber(named, tmp_path):
    """Two withdraws at once: never both MX gone. Each run applies, or fails on its prerequisite
    (re-plan), or (having read after the other applied) is refused as the last MX."""
    one = Minion(tmp_path / "one", site_pillar(named))
    assert one.state()[1]["result"] is True
    results = []

    def run(node):
        results.append(one.call("mailha_dns.withdraw_mx", node)[1])

    threads = [threading.Thread(target=run, args=(n,)) for n in ("mail1", "mail2")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    mx = named.query("example.net.", "MX")
    assert len(mx) == 1, f"both MX withdrawn by a race: {mx} {results}"
    ok = [r for r in results if r["result"]]
    assert len(ok) >= 1
    for r in results:
        if not r["result"]:
            assert "changed concurrently" in r["comment"] or "last MX" in r["comment"], r["comment"]
    assert EXAMPLE["mailha"]["dns"]["tsig"]["secret"] not in one.everything_written()


def test_formula_applies_records_on_the_updater_only(named, tmp_path, minion):
    rc, ret = minion.call("state.apply", "mailha", "test=True")
    assert rc == 0, ret
    (state,) = [v for k, v in ret.items() if "mailha_dns_|-mailha-dns-records" in k]
    assert state["result"] is None and "example.net. MX" in state["changes"]
    assert named.query("example.net.", "MX") == []
    rc, ret = minion.call("state.apply", "mailha")
    assert rc == 0 and all(v["result"] for v in ret.values()), ret
    assert named.query("example.net.", "MX") == EXAMPLE_MX
    rc, ret = minion.call("state.apply", "mailha")
    assert all(not v["changes"] for v in ret.values()), ret

    # mail1 is not the updater: the formula sends nothing from there.
    other = Minion(tmp_path / "mail1", site_pillar(named))
    other.conf.joinpath("minion").write_text(other.conf.joinpath("minion").read_text().replace("id: ns1", "id: mail1"))
    rc, ret = other.call("state.show_sls", "mailha.dns")
    assert rc == 0 and ret == {}, ret
    assert_no_secret(minion, named.secret)
