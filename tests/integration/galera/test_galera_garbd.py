"""Two data members and garbd, all brought up by our states: losing one data member leaves the
other Primary and writable (garbd's vote keeps the quorum)."""

import time

import pytest

from tests.integration.galera.harness import prepare_table

pytestmark = pytest.mark.integration


def states(ret):
    assert "_raw" not in ret, ret.get("_raw")
    return {k.split("_|-")[1]: v for k, v in ret.items()}


def test_two_data_members_and_garbd_survive_the_loss_of_one(garbd_lab):
    lab = garbd_lab
    db1, db2, arb = lab.member("db1"), lab.member("db2"), lab.member("arb")

    rc, ret = arb.apply("mailha.garbd", test=True)
    r = states(ret)["mailha-garbd"]
    assert r["result"] is None and r["comment"] == "would start garbd" and arb.garbd_pid() is None

    for _node, (rc, ret) in lab.apply_all().items():
        assert rc == 0 and all(r["result"] is True for r in states(ret).values()), ret
    rc, ret = arb.apply("mailha.garbd")
    r = states(ret)["mailha-garbd"]
    assert r["result"] is True and r["changes"] == {"old": {"running": False}, "new": {"running": True}}
    lab.wait_synced(size=3, timeout=30)  # 2 mariadbd + garbd
    rc, ret = arb.apply("mailha.garbd")
    assert not next(iter(ret.values()))["changes"]

    prepare_table(db2)
    db1.kill9()
    deadline = time.monotonic() + 20
    while int(db2.status().get("wsrep_cluster_size", 0)) != 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    st = db2.status()
    assert (st["wsrep_cluster_size"], st["wsrep_cluster_status"], st["wsrep_local_state_comment"]) == \
        ("2", "Primary", "Synced")
    db2.sql("INSERT INTO t.acked (v) VALUES ('written-after-db1-died')")
    assert db2.sql("SELECT COUNT(*) FROM t.acked WHERE v='written-after-db1-died'")[0][0] == 1
