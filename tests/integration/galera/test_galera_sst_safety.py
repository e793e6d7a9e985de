"""Galera recovery never bootstraps from a node whose state transfer did not finish (issue 19),
on real MariaDB Galera driven through a real salt-master and salt-minions.

The scenario: a member's datadir is wiped, it rejoins by full SST (rsync, throttled so the
transfer lasts seconds), and the whole site loses power while the copy is in flight. Nothing
commits during the SST, so every member recovers the same seqno: the half-copied node (db1,
first in pillar order) looks exactly like a complete member to grastate-less recovery, and the
old plan chose it on the tie; bootstrapping it started a NEW cluster and SST'd the healthy
members from it.
"""

import dataclasses
import shutil
import tempfile
import time

import pymysql
import pytest

from salt_mailha.core.galera import BootstrapPolicy, choose_bootstrap_node, recover_cluster, report_from_answer
from tests.integration.galera.conftest import salted
from tests.integration.galera.harness import SECRETS, GaleraLab, Writer, have_galera, prepare_table, rows

pytestmark = pytest.mark.integration

BULK_ROWS = 40  # ~2 MB each: at 8 MB/s the copy lasts over 10 s


@pytest.fixture(scope="module")
def lab():
    if not have_galera():
        pytest.fail("MariaDB Galera is missing: scripts/setup-host.sh installs it")
    lab = GaleraLab(tempfile.mkdtemp(prefix="mailha-galera-sst-"), rsync_bwlimit=8000)
    yield lab
    lab.cleanup()


@pytest.fixture(scope="module")
def site(salt_factories, lab):
    with salted(salt_factories, lab, "galera-sst-master") as s:
        yield s


def form(lab, client):
    """A fresh 3-member cluster through ``state.apply mailha.galera`` on every member at once,
    with bulk data (so a full SST takes seconds) and acknowledged rows."""
    ids = [m.id for m in lab.members]
    ret = client.cmd(ids, "state.apply", ["mailha.galera"], tgt_type="list", timeout=300)
    assert set(ret) == set(ids), ret
    for states in ret.values():
        assert isinstance(states, dict) and all(r["result"] is True for r in states.values()), states
    lab.wait_synced(size=3, timeout=60)
    db2 = lab.member("db2")
    prepare_table(db2)
    db2.sql("CREATE TABLE IF NOT EXISTS t.bulk (id INT AUTO_INCREMENT PRIMARY KEY, b LONGBLOB) ENGINE=InnoDB")
    for _ in range(BULK_ROWS):
        db2.sql("INSERT INTO t.bulk (b) VALUES (REPEAT(MD5(RAND()), 65536))")
    writer = Writer([db2])
    writer.start()
    time.sleep(1)
    writer.stop()
    assert writer.acked
    return writer.acked


def start_full_sst(lab, node, copied=False):
    """Stop ``node``, wipe its datadir and start it as a joiner (mailha_galera.join: a full SST
    from a donor). Returns the salt-call process once the transfer is under way: mid-copy
    (rsync throttled), or with ``copied`` every file copied but the transfer not yet reported
    to mariadbd (MariaDB's own test hook MTR_SST_JOINER_DELAY holds the joiner script there)."""
    m = lab.member(node)
    m.stop()
    shutil.rmtree(m.datadir)
    since = m.log_size()
    lab.throttled(not copied)
    proc = m.salt_call("mailha_galera.join", "timeout=300",
                       env={"MTR_SST_JOINER_DELAY": "300"} if copied else None)
    mark = "Sleeping 300 seconds" if copied else "SST started on joiner"
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            if mark in m.log_since(since) and (m.datadir / "sst_in_progress").exists():
                if not copied:
                    time.sleep(2)  # into the copy
                return proc
            time.sleep(0.05)
    finally:
        lab.throttled(False)  # only this transfer's rsync (already started) keeps the limit
    raise AssertionError(f"{node}'s SST never started:\n{m.log_since(since)[-3000:]}")


def power_cut_site(lab, proc):
    for m in lab.members:
        m.power_cut()
    proc.kill()
    proc.communicate()


def check_tables(member):
    conn = pymysql.connect(unix_socket=str(member.socket), user="root", autocommit=True, read_timeout=120)
    try:
        with conn.cursor() as cur:
            cur.execute("CHECK TABLE t.acked, t.bulk, monitoring.health")
            return [(r[0], r[2], r[3]) for r in cur.fetchall() if r[2] in ("status", "error")]
    finally:
        conn.close()


def cluster_uuid(member):
    return member.status().get("wsrep_cluster_state_uuid")


def assert_healthy_everywhere(lab, acked, uuid=None):
    lab.wait_synced(size=3, timeout=120)
    for m in lab.members:
        results = check_tables(m)
        assert results and all(msg == "OK" for _, kind, msg in results if kind == "status"), (m.id, results)
        assert not [r for r in results if r[1] == "error"], (m.id, results)
        assert set(acked) <= rows(m), f"{m.id} lost acknowledged rows"
        assert m.sql("SELECT COUNT(*) FROM t.bulk")[0][0] == BULK_ROWS, m.id
        if uuid:
            assert cluster_uuid(m) == uuid, f"{m.id} is in another history"


def test_sst_cut_by_a_power_loss_never_bootstraps_the_half_copy(lab, site):
    client, runner, _ = site
    acked = form(lab, client)
    uuid = cluster_uuid(lab.member("db2"))

    proc = start_full_sst(lab, "db1", copied=True)
    power_cut_site(lab, proc)
    db1 = lab.member("db1")
    assert db1.datadir_markers(), "the power cut came after the SST: not the scenario"

    plan = runner.cmd("mailha.galera_recover", print_event=False)
    positions = plan["positions"]
    # The trap is real: every member recovers the same position, the half copy included.
    assert len({p["position"] for p in positions.values()}) == 1, positions
    assert positions["db1"]["complete"] is False and "sst_in_progress" in " ".join(positions["db1"]["incomplete"])
    assert positions["db2"]["complete"] is True and positions["filer1"]["complete"] is True
    # Before the fix: the same answers without the evidence made db1 (pillar order) the choice.
    old = {n: dataclasses.replace(report_from_answer(n, {**p, "incomplete": []}), incomplete=())
           for n, p in positions.items()}
    assert choose_bootstrap_node(old, BootstrapPolicy(("db1", "db2", "filer1")))[0].node == "db1"
    # After: a complete member, and db1 resyncs.
    assert plan["outcome"] == "planned" and plan["plan"]["node"] == "db2", plan
    assert ("resync", "db1") in [(s["action"], s["node"]) for s in plan["plan"]["steps"]]
    assert "db1 needs a full SST" in plan["reason"] and "safe_to_bootstrap is 0 on db2" in plan["reason"]
    assert all(m.pid() is None for m in lab.members), "planning started something"

    done = runner.cmd("mailha.galera_recover", kwarg={"apply": True}, print_event=False)
    assert done["outcome"] == "applied" and done["result"] is True, done
    assert [(a["node"], a["action"]) for a in done["applied"]][0] == ("db2", "bootstrap")
    assert_healthy_everywhere(lab, acked, uuid)
    assert not db1.datadir_markers()
    assert not any(s in repr(plan) + repr(done) for s in SECRETS)


def test_no_complete_copy_refuses_and_names_the_nodes(lab, site):
    client, runner, _ = site
    proc = start_full_sst(lab, "db1")
    power_cut_site(lab, proc)
    for node in ("db2", "filer1"):  # their disks are lost: the only data left is db1's half copy
        shutil.rmtree(lab.member(node).datadir)

    plan = runner.cmd("mailha.galera_recover", kwarg={"apply": True}, print_event=False)
    assert plan["outcome"] == "refused" and plan["result"] is False, plan
    assert "no complete copy" in plan["reason"] and "db1 needs a full SST" in plan["reason"]
    assert "db2, filer1 hold no Galera history" in plan["reason"]
    forced = runner.cmd("mailha.galera_recover", kwarg={"apply": True, "force": "db2"}, print_event=False)
    assert forced["outcome"] == "refused" and "even when forced" in forced["reason"], forced
    forced = runner.cmd("mailha.galera_recover", kwarg={"apply": True, "force": "db1"}, print_event=False)
    assert forced["outcome"] == "refused" and "db1 does not hold a complete copy" in forced["reason"], forced
    assert all(m.pid() is None for m in lab.members), "a refusal started something"

    # The state's first start refuses too: db1 is galera:bootstrap_node, its grastate.dat says
    # "no history", and no member answers: before the fix it started a new cluster from it.
    rc, ret = lab.member("db1").apply()
    synced = next(r for k, r in ret.items() if "synced" in k)
    assert synced["result"] is False and "not a complete copy" in synced["comment"], synced
    assert lab.member("db1").pid() is None


def test_a_bootstrap_into_another_history_stops_before_any_join(lab, site):
    """The runner's check after the bootstrap: a member started as a brand-new cluster (another
    UUID, the issue's outcome) must stop the recovery before any join."""
    client, runner, _ = site
    for m in lab.members:
        shutil.rmtree(m.datadir, ignore_errors=True)
    acked = form(lab, client)
    for m in lab.members:
        m.power_cut()
    started = []

    def act(node, action, position):
        started.append((node, action))
        if action == "bootstrap":
            # What an unguarded bootstrap did: grastate.dat emptied, --wsrep-new-cluster.
            m = lab.member(node)
            (m.datadir / "grastate.dat").write_text("")
            m.start_new_cluster()
            lab.wait_synced(members=[m], size=1, timeout=120)
            return {"node": node, "synced": True, **{k: v for k, v in m.status().items()
                                                     if k in ("wsrep_cluster_state_uuid", "wsrep_last_committed")}}
        return lab.act(node, action, position)

    res = recover_cluster(BootstrapPolicy(tuple(m.id for m in lab.members), "db1"), lab.ask, act, apply=True)
    chosen = res["plan"]["node"]
    assert res["result"] is False and "came up in cluster" in res["applied"][0]["problem"], res
    assert started == [(chosen, "bootstrap"), (chosen, "stop")], started
    assert all(m.pid() is None for m in lab.members), "a join started, or the wrong cluster kept running"
    assert "nothing else was started" in res["reason"]

    # It now holds another history: the plan names it, and once the operator wipes it (as the
    # refusal says) a complete member is bootstrapped and it rejoins by SST.
    plan = recover_cluster(BootstrapPolicy(tuple(m.id for m in lab.members), "db1"), lab.ask, lab.act)
    wrong = res["applied"][0]["result"]["wsrep_cluster_state_uuid"]
    assert plan["plan"]["kind"] == "refuse" and f"{chosen} on {wrong}" in plan["reason"], plan
    shutil.rmtree(lab.member(chosen).datadir)
    done = recover_cluster(BootstrapPolicy(tuple(m.id for m in lab.members), "db1"), lab.ask, lab.act, apply=True)
    assert done["result"] is True and done["plan"]["node"] != chosen, done
    assert_healthy_everywhere(lab, acked)


def test_donor_killed_mid_transfer_with_writes_loses_no_acknowledged_row(lab, site):
    client, runner, _ = site
    lab.wait_synced(size=3, timeout=60)
    db2, filer1 = lab.member("db2"), lab.member("filer1")
    prepare_table(db2)
    writer = Writer([db2, filer1])
    writer.start()
    since = lab.member("db1").log_size()
    proc = start_full_sst(lab, "db1")
    donor = next(m for m in (db2, filer1) if m.status().get("wsrep_local_state_comment") == "Donor/Desynced")
    donor.power_cut()
    time.sleep(5)  # writes go on through the survivor
    writer.stop()
    power_cut_site(lab, proc)
    assert writer.acked
    # ground truth, read before recovery: did db1's mariadbd accept the transfer (its own log)?
    # Usually db1 is cut mid-copy; on a fast run the copy finished before the donor died, and
    # then db1 holds a complete copy and may be chosen.
    log = lab.member("db1").log_since(since)
    cut = not any(line in log for line in ("SST succeeded for position", "Installed new state from SST"))

    done = runner.cmd("mailha.galera_recover", kwarg={"apply": True}, print_event=False)
    assert done["outcome"] == "applied" and done["result"] is True, done
    if cut:
        assert done["plan"]["node"] != "db1", done["reason"]
    assert_healthy_everywhere(lab, writer.acked)  # the property itself: no acknowledged row lost
