"""The native mail path's suffix entry, on two real slapd running the slapd.conf the formula
renders (mirror mode on, empty databases): mailha_ldap.base_entry_present creates it on the
first mail node only, syncrepl carries it to the second, test=True changes nothing, a peer that
cannot be read blocks creation unless forced, an unsupported suffix is refused before anything,
and the rootpw appears in no output or log. The formula's native branch runs the state after
slapd and never in a rehearsal."""
import json
import threading

import pytest
import yaml

from tests.support.daemon import wait_until

pytestmark = pytest.mark.integration

STATE = "mailha_ldap.base_entry_present"
SRCH_BASE = 'scope=0 deref=3 filter="(objectClass=*)"'  # ldap3's base search, as slapd logs it


@pytest.fixture
def native_pair(mirror_pair_factory):
    pair = mirror_pair_factory("native")
    pair.outputs = []
    pair.start()
    assert not pair.has("mail1", pair.suffix) and not pair.has("mail2", pair.suffix), "databases must start empty"
    return pair


def _apply(pair, node, *args, test=False):
    out, text = pair.salt[node].call("state.single", STATE, "name=base", *args, test=test)
    pair.outputs.append(text)
    assert isinstance(out, dict), out
    (ret,) = out.values()
    return ret


def _assert_no_secret(pair):
    logs = [pair.salt[n].log_file.read_text(errors="replace") for n in ("mail1", "mail2")
            if pair.salt[n].log_file.exists()]  # a node that ran no salt-call has none
    assert pair.outputs and logs, "nothing to search: the test ran no salt-call"
    logs += [pair.slapd[n].log() for n in ("mail1", "mail2")]
    for i, text in enumerate(pair.outputs + logs):
        assert pair.rootpw not in text, f"rootpw found in output/log #{i}"


def _base_searches(pair, node):
    return sum(1 for line in pair.slapd[node].log().splitlines() if SRCH_BASE in line and pair.suffix in line)


def test_first_node_creates_second_receives(native_pair):
    pair, dn = native_pair, native_pair.suffix

    # test mode: both say what they would do; nothing is written
    ret = _apply(pair, "mail1", test=True)
    assert ret["result"] is None
    assert ret["comment"] == (f"would create {dn}: missing on mail1, which creates it (first LDAP server); "
                              f"syncrepl carries it to mail2")
    assert ret["changes"] == {dn: {"old": None, "new": {"objectClass": ["top", "dcObject", "organization"],
                                                       "dc": "example", "o": "example.net"}}}
    ret = _apply(pair, "mail2", test=True)
    assert ret["result"] is None and ret["changes"] == {}
    assert "mail1 creates it (first LDAP server)" in ret["comment"] and "would wait" in ret["comment"]
    assert not pair.has("mail1", dn) and not pair.has("mail2", dn)

    # mail2 first: it waits (it reads its own slapd), mail1 then creates, syncrepl brings it over
    before = _base_searches(pair, "mail2")
    rets = {}
    waiter = threading.Thread(target=lambda: rets.setdefault("mail2", _apply(pair, "mail2", "wait=120")))
    waiter.start()
    try:
        wait_until(lambda: _base_searches(pair, "mail2") > before, 60, interval=0.1, what="mail2 reading its slapd")
        rets["mail1"] = _apply(pair, "mail1")
    finally:
        waiter.join(180)
    assert rets["mail1"]["result"] is True, rets["mail1"]
    assert rets["mail1"]["comment"] == f"created {dn} on mail1; syncrepl carries it to mail2"
    assert list(rets["mail1"]["changes"]) == [dn]
    assert rets["mail2"]["result"] is True, rets["mail2"]
    assert rets["mail2"]["changes"] == {}, "mail2 must not create the entry itself"
    assert rets["mail2"]["comment"] == f"{dn} created by mail1, replicated to mail2"
    # one entry, not two made on both sides
    assert pair.entry_uuid("mail1", dn) == pair.entry_uuid("mail2", dn)

    # converged: both modes, both nodes
    for node in ("mail1", "mail2"):
        for test in (True, False):
            ret = _apply(pair, node, test=test)
            assert ret["result"] is True and ret["changes"] == {}, ret
            assert ret["comment"] == f"{dn} already exists on {node}"

    # what the drill found broken: entries can now be added under the suffix, on either side
    pair.wait_has("mail1", pair.add_ou("mail2", "people"))
    pair.wait_has("mail2", pair.add_ou("mail1", "groups"))

    # the status the state used, as an operator sees it
    out, text = pair.salt["mail2"].call("mailha_ldap.base_entry_status")
    pair.outputs.append(text)
    assert out["present"] == {"mail1": True, "mail2": True} and out["action"] == "none", out
    _assert_no_secret(pair)


def test_concurrent_apply_creates_once(native_pair):
    pair, dn = native_pair, native_pair.suffix
    rets = {}
    threads = [threading.Thread(target=lambda n=n: rets.setdefault(n, _apply(pair, n))) for n in ("mail2", "mail1")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(180)
    assert rets["mail1"]["result"] is True and list(rets["mail1"]["changes"]) == [dn], rets["mail1"]
    assert rets["mail2"]["result"] is True and rets["mail2"]["changes"] == {}, rets["mail2"]
    # mail2 may have read before or after the entry arrived
    assert rets["mail2"]["comment"] in (f"{dn} created by mail1, replicated to mail2",
                                        f"{dn} already exists on mail2")
    assert pair.entry_uuid("mail1", dn) == pair.entry_uuid("mail2", dn)
    _assert_no_secret(pair)


def test_unreadable_peer_blocks_creation_unless_forced(native_pair):
    pair, dn = native_pair, native_pair.suffix
    pair.slapd["mail2"].stop()

    ret = _apply(pair, "mail1", test=True)
    assert ret["result"] is None and ret["changes"] == {}, ret
    assert "mail2 cannot be read" in ret["comment"] and "would wait" in ret["comment"]
    ret = _apply(pair, "mail1", "wait=1")
    assert ret["result"] is False and ret["changes"] == {}, ret
    assert ret["comment"].startswith(f"still missing: {dn} on mail1 after 1 s: ")
    assert "mail2: CommandFailed: cannot bind to ldap://127.0.1.18:" in ret["comment"]
    assert "To fix: start slapd on mail2; or, if they hold no directory" in ret["comment"]
    assert "run: salt mail1 mailha_ldap.create_base_entry force=True" in ret["comment"]
    assert not pair.has("mail1", dn)

    # forced: the state predicts it, the execution function the hint names does it
    ret = _apply(pair, "mail1", "force=True", test=True)
    assert ret["result"] is None and ret["comment"].startswith(f"would create {dn}"), ret
    assert not pair.has("mail1", dn)
    out, text = pair.salt["mail1"].call("mailha_ldap.create_base_entry")
    pair.outputs.append(text)
    assert out["created"] is False and out["action"] == "wait" and "mail2 cannot be read" in out["reason"], out
    assert not pair.has("mail1", dn)
    out, text = pair.salt["mail1"].call("mailha_ldap.create_base_entry", "force=True")
    pair.outputs.append(text)
    assert out["created"] is True and out["reason"] == f"created {dn} on mail1; syncrepl carries it to mail2", out
    ret = _apply(pair, "mail1")
    assert ret["result"] is True and ret["changes"] == {} and "already exists on mail1" in ret["comment"], ret

    # the peer comes back empty and takes the entry from mail1
    pair.slapd["mail2"].start()
    pair.slapd["mail2"].wait_ready()
    pair.wait_has("mail2", dn)
    ret = _apply(pair, "mail2")
    assert ret["result"] is True and ret["changes"] == {} and "already exists on mail2" in ret["comment"], ret
    _assert_no_secret(pair)


def test_second_node_alone_fails_with_what_to_do(native_pair):
    pair, dn = native_pair, native_pair.suffix
    ret = _apply(pair, "mail2", "wait=1")
    assert ret["result"] is False and ret["changes"] == {}, ret
    assert ret["comment"] == (f"still missing: {dn} on mail2 after 1 s: missing on mail2; mail1 creates it "
                              f"(first LDAP server) and syncrepl carries it here. To fix: apply mailha.ldap on "
                              f"mail1, which creates it")
    assert not pair.has("mail1", dn) and not pair.has("mail2", dn)

    # an empty directory is a state replication_status reports, not an unreachable server
    out, text = pair.salt["mail2"].call("mailha_ldap.replication_status")
    pair.outputs.append(text)
    assert all(v["reachable"] and v["context_csn"] == {} for v in out["servers"].values()), out

    # its own slapd down: nothing is known, nothing is done
    pair.slapd["mail2"].stop()
    ret = _apply(pair, "mail2", test=True)
    assert ret["result"] is None and ret["changes"] == {}, ret
    assert ret["comment"] == f"{dn}: cannot read mail2's own slapd; would wait up to 120 s"
    ret = _apply(pair, "mail2", "wait=1")
    assert ret["result"] is False and ret["changes"] == {}, ret
    assert ret["comment"].startswith(f"cannot confirm {dn} on mail2 after 1 s: cannot read mail2's own slapd; "
                                     f"mail2: CommandFailed: cannot bind to ldap://127.0.1.18:"), ret
    assert ret["comment"].endswith("To fix: check that slapd runs on mail2 and listens on its serverID URL")
    assert not pair.has("mail1", dn)
    _assert_no_secret(pair)


def _set_pillar(node, mutate):
    path = node.root / "pillar" / "mailha.sls"
    data = yaml.safe_load(path.read_text())
    mutate(data["mailha"])
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def test_unsupported_suffix_is_refused_before_anything(native_pair):
    pair = native_pair
    node = pair.salt["mail1"]

    def cn_suffix(site):
        ldap = site["ldap"]
        ldap["suffix"] = "cn=mail,dc=example,dc=net"
        for key in ("rootdn",):
            ldap[key] = "cn=Manager,cn=mail,dc=example,dc=net"
        ldap["replication"].update(binddn=ldap["rootdn"], searchbase=ldap["suffix"])
        site["mail"].get("lookup", {}).pop("bind_dn", None)

    _set_pillar(node, cn_suffix)
    for test in (True, False):
        ret = _apply(pair, "mail1", test=test)
        assert ret["result"] is False and ret["changes"] == {}, ret
        assert "pillar mailha:ldap:suffix: 'cn=mail,dc=example,dc=net' starts with cn=" in ret["comment"]
        assert "use a suffix starting with dc=<label>" in ret["comment"]
        # the formula refuses while rendering: no state of mailha.ldap runs at all
        out, text = node.call("state.show_sls", "mailha.ldap", test=test)
        pair.outputs.append(text)
        assert isinstance(out, list) and "mailha:ldap:suffix" in "".join(out), out
    assert not pair.has("mail1", pair.suffix) and not pair.has("mail2", pair.suffix)
    _assert_no_secret(pair)


@pytest.mark.parametrize("variant", ["native", "rehearsal", "iredmail"])
def test_formula_runs_it_after_slapd_on_the_native_path_only(native_pair, variant):
    """What mailha.ldap compiles to (state.show_sls: rendered, nothing run)."""
    pair = native_pair
    node = pair.salt["mail1"]
    args = []
    if variant == "rehearsal":
        args.append(f"pillar={json.dumps({'mailha_root': str(pair.tmp / 'scratch')})}")
    if variant == "iredmail":
        from tests.support.example import IREDMAIL
        _set_pillar(node, lambda site: site["mail"].update(iredmail=IREDMAIL))
    out, text = node.call("state.show_sls", "mailha.ldap", *args)
    assert isinstance(out, dict), out
    base = out.get("mailha-ldap-base-entry")
    if variant != "native":
        assert base is None, base
        assert ("mailha_ldap_mirrormode" in out) == (variant == "iredmail")
        return
    args = base["mailha_ldap"]
    assert "base_entry_present" in args
    require = next(a["require"] for a in args if isinstance(a, dict) and "require" in a)
    assert {"service": "mailha-service-slapd"} in require
    assert "running" in out["mailha-service-slapd"]["service"]
