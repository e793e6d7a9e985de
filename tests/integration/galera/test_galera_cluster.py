"""Three real mariadbd members brought up, crashed and recovered through our states, execution
module and recovery orchestration, each member its own ``salt-call --local`` minion.

The cluster is built once for the module; tests run in file order and each one states the
precondition it needs (the previous test's end state).
"""

import os
import pathlib
import shutil
import time

import pytest

from salt_mailha.core.galera import BootstrapPolicy, GaleraPosition, parse_grastate, recover_cluster
from tests.integration.galera.harness import SECRETS, Writer, prepare_table, rows

pytestmark = pytest.mark.integration
MEMBERS = ("db1", "db2", "filer1")  # filer1: role quorum


def states(ret):
    """{state id: return} of one salt-call state.apply."""
    assert "_raw" not in ret, ret.get("_raw")
    return {k.split("_|-")[1]: v for k, v in ret.items()}


def assert_no_secret_anywhere(lab):
    texts = lab.outputs()
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                texts.append(pathlib.Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace"))
            except OSError:
                pass
    for secret in SECRETS:
        assert not any(secret in t for t in texts), "a galera secret leaked into output, a log or an argv"


def test_test_mode_on_fresh_nodes_predicts_and_touches_nothing(lab):
    results = lab.apply_all(test=True)
    for _node, (_rc, ret) in results.items():
        st = states(ret)
        # the Debian packages are installed on this host already: that state alone reports True
        assert st.pop("mailha-packages-galera")["result"] is True
        assert all(r["result"] is None for r in st.values()), st
        assert st["mailha-galera-cnf"]["comment"].startswith("would create")
    assert "would bootstrap a new cluster on db1" in states(results["db1"][1])["mailha-galera-synced"]["comment"]
    for node in ("db2", "filer1"):
        assert "would wait" in states(results[node][1])["mailha-galera-synced"]["comment"]
    for m in lab.members:
        assert not m.cnf.exists() and not m.datadir.exists() and m.pid() is None


def test_concurrent_apply_bootstraps_exactly_once_and_forms_three_synced(lab):
    results = lab.apply_all()
    actions = {}
    for node, (rc, ret) in results.items():
        st = states(ret)
        assert rc == 0 and all(r["result"] is True for r in st.values()), st
        actions[node] = st["mailha-galera-synced"]["changes"]["new"]["action"]
    assert lab.member("filer1").roles == ["quorum"]  # a full member that is not load-balanced
    assert sorted(actions.values()) == ["bootstrap", "join", "join"]
    assert actions["db1"] == "bootstrap"
    lab.wait_synced(size=3, timeout=30)
    uuids = {m.status()["wsrep_cluster_state_uuid"] for m in lab.members}
    assert len(uuids) == 1


def test_second_apply_reports_no_changes_in_both_modes(lab):
    for test in (True, False):
        for _node, (rc, ret) in lab.apply_all(test=test).items():
            st = states(ret)
            assert rc == 0, st
            assert all(r["result"] is True and not r["changes"] for r in st.values()), st
    assert "already Synced" in states(lab.member("db2").apply()[1])["mailha-galera-synced"]["comment"]


def test_health_check_passes_only_while_synced(lab):
    for m in lab.members:
        rc, out = m.call("mailha_galera.health")
        assert out["healthy"] is True, out
    db2 = lab.member("db2")
    db2.sql("SET GLOBAL wsrep_desync=ON")
    try:
        assert db2.status()["wsrep_local_state_comment"] == "Donor/Desynced"
        rc, out = db2.call("mailha_galera.health")
        assert out["healthy"] is False and "not Synced" in out["detail"]
    finally:
        db2.sql("SET GLOBAL wsrep_desync=OFF")
    lab.wait_synced(size=3, timeout=30)
    assert db2.call("mailha_galera.health")[1]["healthy"] is True


def test_monitor_state_fixes_a_changed_password_and_shows_no_secret(lab):
    db1 = lab.member("db1")
    db1.sql("ALTER USER 'monitor'@'%' IDENTIFIED BY 'someone-changed-it'")
    assert db1.call("mailha_galera.health")[1]["healthy"] is False
    rc, ret = db1.call("state.single", "mailha_galera.monitor_present", "name=m", "test=True")
    (r,) = ret.values()
    assert r["result"] is None and r["changes"]["new"] == {"fix": ["password"]}
    assert db1.call("mailha_galera.health")[1]["healthy"] is False  # test mode changed nothing
    rc, ret = db1.call("state.single", "mailha_galera.monitor_present", "name=m")
    (r,) = ret.values()
    assert r["result"] is True and r["changes"]["new"] == {"fix": ["password"]}
    assert all(m.call("mailha_galera.health")[1]["healthy"] for m in lab.members)
    assert_no_secret_anywhere(lab)


def test_kill9_one_member_under_writer_stays_primary_and_rejoins_by_ist(lab):
    lab.wait_synced(size=3, timeout=30)
    db1, filer1 = lab.member("db1"), lab.member("filer1")
    prepare_table(db1)
    writer = Writer([db1])
    writer.start()
    time.sleep(1)
    filer1.kill9()
    deadline = time.monotonic() + 20
    while int(db1.status().get("wsrep_cluster_size", 0)) != 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    st = db1.status()
    assert (st["wsrep_cluster_size"], st["wsrep_cluster_status"]) == ("2", "Primary")
    before = len(writer.acked)
    time.sleep(1)
    assert len(writer.acked) > before, "the survivors stopped taking writes"

    grastate = (filer1.datadir / "grastate.dat").read_text()
    rc, ret = filer1.apply(test=True)
    predicted = states(ret)["mailha-galera-synced"]
    assert predicted["result"] is None and "would start filer1 and join the Primary component with its " \
        "position from --wsrep-recover" in predicted["comment"], predicted
    assert filer1.pid() is None and (filer1.datadir / "grastate.dat").read_text() == grastate

    offset = filer1.log_size()
    rc, ret = filer1.apply()
    synced = states(ret)["mailha-galera-synced"]
    assert rc == 0 and synced["result"] is True, synced
    assert synced["changes"]["new"]["action"] == "join"
    assert synced["changes"]["old"]["position"].endswith(":-1")  # crashed: grastate had no seqno
    assert int(synced["changes"]["new"]["position"].rsplit(":", 1)[1]) > 0  # --wsrep-recover found it
    log = filer1.log_since(offset)
    assert "IST received" in log, "the restarted member did not catch up by IST"
    time.sleep(0.5)
    writer.stop()
    assert writer.acked
    lab.wait_synced(size=3, timeout=30)
    for m in lab.members:
        assert set(writer.acked) <= rows(m), f"{m.id} lacks acknowledged inserts"


def _kill_all(lab):
    for m in lab.members:
        m.kill9()
    assert all(m.pid() is None for m in lab.members)


ACKED = []  # inserts acknowledged just before every member was killed (checked after recovery)


def test_recovery_refuses_while_a_member_is_unreachable(lab):
    lab.wait_synced(size=3, timeout=30)
    writer = Writer([lab.member("db2")])
    writer.start()
    time.sleep(1)
    # db1 dies first and misses what follows: the survivors end with higher seqnos than db1
    lab.member("db1").kill9()
    deadline = time.monotonic() + 20
    while int(lab.member("db2").status().get("wsrep_cluster_size", 0)) != 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(1)
    _kill_all(lab)
    writer.stop()
    assert writer.acked
    ACKED.extend(writer.acked)
    ask = lambda node: None if node == "filer1" else lab.ask(node)  # noqa: E731 - filer1's minion is "down"
    res = recover_cluster(BootstrapPolicy(MEMBERS, "db1"), ask, lab.act, apply=True)
    assert res["result"] is False and res["plan"]["kind"] == "refuse"
    assert "filer1: minion did not answer" in res["reason"]
    assert res["applied"] == [] and all(m.pid() is None for m in lab.members)


def test_a_state_never_bootstraps_a_stopped_cluster(lab):
    rc, ret = lab.member("db1").call("state.single", "mailha_galera.synced", "name=galera", "timeout=2")
    (r,) = ret.values()
    assert r["result"] is False and "galera_recover" in r["comment"]
    assert all(m.pid() is None for m in lab.members)


def test_recovery_refuses_mismatched_uuids_naming_the_node(lab):
    filer1 = lab.member("filer1")
    saved = filer1.datadir.with_name("data.saved")
    shutil.move(filer1.datadir, saved)
    try:
        # filer1 rebuilt and started alone: a cluster of its own, with its own history
        assert filer1.call("mailha_galera.prepare")[0] == 0
        rc, out = filer1.call("mailha_galera.bootstrap")
        assert out["synced"] is True, out
        filer1.call("mailha_galera.stop")
        other = GaleraPosition.parse(lab.ask("filer1")["position"])
        res = recover_cluster(BootstrapPolicy(MEMBERS, "db1"), lab.ask, lab.act, apply=True)
        assert res["plan"]["kind"] == "refuse" and res["applied"] == []
        assert "disagree" in res["reason"] and f"filer1 on {other.uuid}" in res["reason"]
        assert "filer1 belong to another history" in res["reason"]
        assert all(m.pid() is None for m in lab.members)
    finally:
        shutil.rmtree(filer1.datadir, ignore_errors=True)
        shutil.move(saved, filer1.datadir)


def test_recovery_after_all_killed_bootstraps_the_highest_seqno_and_keeps_every_insert(lab):
    assert all(m.pid() is None for m in lab.members) and ACKED
    seen_after_bootstrap = {}

    def act(node, action, position):
        out = lab.act(node, action, position)
        if action == "bootstrap":  # the others are still down: look at every grastate.dat now
            seen_after_bootstrap.update({m.id: parse_grastate((m.datadir / "grastate.dat").read_text())
                                         .safe_to_bootstrap for m in lab.members})
        return out

    res = recover_cluster(BootstrapPolicy(MEMBERS, "db1"), lab.ask, act, apply=True)
    assert res["result"] is True, res
    seqnos = {m: int(p["position"].rsplit(":", 1)[1]) for m, p in res["positions"].items()}
    chosen = res["plan"]["node"]
    assert seqnos[chosen] == max(seqnos.values())
    assert seqnos["db1"] < seqnos[chosen] and chosen != "db1", "pillar order must not beat a higher seqno"
    assert [(a["node"], a["action"]) for a in res["applied"]][0] == (chosen, "bootstrap")
    assert all(a["ok"] for a in res["applied"])
    lab.wait_synced(size=3, timeout=60)
    assert seen_after_bootstrap == {m: m == chosen for m in MEMBERS}, \
        "safe_to_bootstrap must be set on the chosen node only"
    uuids = {m.status()["wsrep_cluster_state_uuid"] for m in lab.members}
    assert uuids == {res["plan"]["steps"][0]["position"].split(":")[0]}, "history lost: a new state UUID"
    for m in lab.members:
        assert set(ACKED) <= rows(m), f"{m.id} lacks acknowledged inserts"


def test_recovery_refuses_to_bootstrap_next_to_a_live_primary(lab):
    lab.wait_synced(size=3, timeout=30)
    res = recover_cluster(BootstrapPolicy(MEMBERS, "db1", force_node="db2"), lab.ask, lab.act, apply=True)
    assert res["plan"]["kind"] == "refuse" and "even when forced" in res["reason"]
    res = recover_cluster(BootstrapPolicy(MEMBERS, "db1"), lab.ask, lab.act, apply=True)
    assert res["plan"]["kind"] == "none" and res["applied"] == []
    lab.member("filer1").stop()
    res = recover_cluster(BootstrapPolicy(MEMBERS, "db1"), lab.ask, lab.act, apply=True)
    assert res["plan"]["kind"] == "join" and [(a["node"], a["action"], a["ok"]) for a in res["applied"]] == \
        [("filer1", "join", True)]
    lab.wait_synced(size=3, timeout=30)
    assert_no_secret_anywhere(lab)
