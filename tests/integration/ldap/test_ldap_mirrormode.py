"""Two real slapd processes turned into a mirror-mode pair by the mailha.ldap state (through
salt-call, from the example pillar), in slapd.conf and cn=config form: replication both ways,
replication_status, a killed provider catching up, test=True changing nothing, and the
replication password absent from every state return, salt log and slapd log."""
import pytest
import yaml

from salt_mailha.core import ldap as core_ldap
from tests.support.daemon import wait_until

pytestmark = pytest.mark.integration

FORMATS = ["slapd.conf", "cn=config"]


def _config_snapshot(pair, node):
    """What test=True must leave alone: slapd.conf bytes, or the live cn=config snapshot."""
    s = pair.slapd[node]
    if pair.format == "slapd.conf":
        return s.conf.read_bytes(), s.pid()
    conn = core_ldap.connect(s.ldapi_url)
    try:
        return core_ldap.read_cnconfig(conn, pair.suffix), s.pid()
    finally:
        conn.unbind()


def _status(pair, node="mail1"):
    out, text = pair.salt[node].call("mailha_ldap.replication_status")
    pair.outputs.append(text)
    return out


@pytest.mark.parametrize("config_format", FORMATS, ids=["slapd_conf", "cn_config"])
def test_mirror_pair_from_example_pillar(mirror_pair_factory, config_format):
    pair = mirror_pair_factory(config_format)
    pair.outputs = []
    pair.start()
    pair.seed("mail1")

    for node in ("mail1", "mail2"):
        before = _config_snapshot(pair, node)
        ret, text = pair.salt[node].apply(test=True)
        pair.outputs.append(text)
        assert ret["result"] is None, ret["comment"]
        assert ret["changes"], ret
        assert "would" in ret["comment"]
        assert _config_snapshot(pair, node) == before, "test=True changed the config or restarted slapd"

        ret, text = pair.salt[node].apply()
        pair.outputs.append(text)
        assert ret["result"] is True, ret["comment"]
        assert ret["changes"], ret
        if config_format == "slapd.conf":
            assert "restarted slapd" in ret["comment"]
            new_pid = pair.slapd[node].wait_ready()
            assert new_pid != before[1], "slapd was not restarted after its config changed"
            assert "serverID" in pair.slapd[node].conf.read_text()
        else:
            assert _config_snapshot(pair, node)[1] == before[1], "cn=config must change live, no restart"

    # converged: both modes report nothing to do
    for node in ("mail1", "mail2"):
        for test in (True, False):
            ret, text = pair.salt[node].apply(test=test)
            pair.outputs.append(text)
            assert ret["result"] is True and ret["changes"] == {}, ret

    if config_format == "slapd.conf":  # one text on every node
        blocks = [[line for line in pair.slapd[n].conf.read_text().splitlines() if "ldap://" in line
                   or line.startswith(("syncrepl", "mirrormode", "serverID"))] for n in ("mail1", "mail2")]
        assert blocks[0] == blocks[1] and len(blocks[0]) == 7  # 2 serverID, 2 syncrepl + provider, mirrormode

    shown, text = pair.salt["mail1"].call("mailha_ldap.render")
    pair.outputs.append(text)
    assert "<redacted>" in shown and ("olcServerID: 2 " if config_format == "cn=config" else "serverID    2 ") in shown

    # replication both ways (the seed was made on mail1 before mirror mode existed)
    pair.wait_has("mail2", f"ou=people,{pair.suffix}")
    pair.wait_has("mail2", pair.add_person("mail1", "alice"))
    pair.wait_has("mail1", pair.add_person("mail2", "bob"))
    status = wait_until(lambda: (s := _status(pair)) and s["agree"] and s, 30, interval=0.5,
                        what="replication_status agree")
    assert set(status["servers"]) == {"mail1", "mail2"}
    assert status["servers"]["mail1"]["context_csn"] == status["servers"]["mail2"]["context_csn"]
    assert {"1", "2"} <= set(status["servers"]["mail1"]["context_csn"]), status
    assert pair.count("mail1") == pair.count("mail2")

    # each slapd skipped the rid pointing at itself (its serverID URL is its listener)
    for node, own, peer in (("mail1", "rid=001", "rid=002"), ("mail2", "rid=002", "rid=001")):
        consumer = [line for line in pair.slapd[node].log().splitlines() if "do_syncrep" in line]
        assert any(peer in line for line in consumer) and not any(own in line for line in consumer), node

    # a provider dies; writes continue on the survivor; it comes back and catches up
    pair.slapd["mail2"].kill9()
    down = _status(pair)
    assert down["agree"] is False and down["servers"]["mail2"]["reachable"] is False, down
    assert "mail2" in down["reason"]
    missed = [pair.add_person("mail1", f"while-down-{i}") for i in range(5)]
    pair.slapd["mail2"].start()
    pair.slapd["mail2"].wait_ready()
    for dn in missed:
        pair.wait_has("mail2", dn)
    pair.wait_has("mail1", pair.add_person("mail2", "after-restart"))
    status = wait_until(lambda: (s := _status(pair, "mail2")) and s["agree"] and s, 30, interval=0.5,
                        what="replication_status agree after restart")
    assert status["lag"] == {"mail1": 0.0, "mail2": 0.0}
    assert pair.count("mail1") == pair.count("mail2")

    # the replication password (and the rootpw) never leaves in clear
    logs = [pair.salt[n].log_file.read_text(errors="replace") for n in ("mail1", "mail2")]
    logs += [pair.slapd[n].log() for n in ("mail1", "mail2")]
    for secret in (pair.repl_password, pair.rootpw):
        for i, text in enumerate(pair.outputs + logs):
            assert secret not in text, f"secret found in output/log #{i}"
    assert "<redacted>" in "".join(pair.outputs)


def test_state_refuses_and_leaves_slapd_alone(mirror_pair_factory):
    """Bad input: every refusal names what to fix, in both modes, and changes nothing."""
    pair = mirror_pair_factory("slapd.conf")
    pair.start()
    node, s = pair.salt["mail1"], pair.slapd["mail1"]
    pid, original = s.pid(), s.conf.read_text()
    outputs = []

    def refused(expect):
        for test in (True, False):
            ret, text = node.apply(test=test)
            outputs.append(text)
            assert ret["result"] is False and ret["changes"] == {}, ret
            assert expect in ret["comment"], ret["comment"]
        assert s.pid() == pid

    # a hand-made serverID outside the managed block (e.g. left from the guide)
    s.conf.write_text(original.replace("modulepath", "serverID 9 ldap://mail9.example.net/\nmodulepath"))
    refused("line 14: serverid is set outside the managed block")
    assert "serverID 9" in s.conf.read_text() and "syncrepl" not in s.conf.read_text()

    # a file slapd already refuses: slaptest stops the write (and test mode predicts it)
    broken = original.replace("require     LDAPv3", "require     LDAPv3\nfrobnicate  on")
    s.conf.write_text(broken)
    refused("slaptest -u refuses")
    assert s.conf.read_text() == broken

    # a replication password that differs from the rootpw it binds with: the site model refuses
    # the pillar before any state runs (the formula does not even render)
    s.conf.write_text(original)
    pillar = node.root / "pillar" / "mailha.sls"
    data = yaml.safe_load(pillar.read_text())
    data["mailha"]["ldap"]["replication"]["credentials"] = "CHANGE-ME-ldap-repl"
    pillar.write_text(yaml.safe_dump(data))
    for test in (True, False):
        out, text = node.call("state.apply", "mailha.ldap", test=test)
        outputs.append(text)
        assert isinstance(out, list) and "pillar mailha:ldap:replication:credentials" in out[0], out
    assert s.pid() == pid
    assert s.conf.read_text() == original
    log = node.log_file.read_text(errors="replace")
    for secret in ("CHANGE-ME-ldap-repl", pair.rootpw):
        assert all(secret not in t for t in outputs + [log])


def test_cn_config_without_rootdn_is_refused_before_any_change(mirror_pair_factory):
    """slapd would take the module, serverID and overlay, then reject olcSyncrepl: the plan
    refuses up front instead of leaving cn=config half-changed."""
    pair = mirror_pair_factory("cn=config")
    s = pair.slapd["mail1"]
    text = "\n".join(line for line in s.conf.read_text().splitlines() if not line.startswith(("rootdn", "rootpw")))
    s.install(text + "\n")
    pair.start()
    before = _config_snapshot(pair, "mail1")
    for test in (True, False):
        ret, _ = pair.salt["mail1"].apply(test=test)
        assert ret["result"] is False and ret["changes"] == {}, ret
        assert "has no olcRootDN" in ret["comment"] and "mailha:ldap:rootdn" in ret["comment"]
    assert _config_snapshot(pair, "mail1") == before
