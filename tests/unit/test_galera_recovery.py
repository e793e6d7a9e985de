"""recover_cluster's gather -> decide -> apply sequence with plain callables (the real members
are exercised by tests/integration/galera; here the order and the failure handling)."""

import threading

from salt_mailha.core.galera import ZERO_UUID as ZERO
from salt_mailha.core.galera import BootstrapPolicy, recover_cluster, report_from_answer

U = "d84ce8f4-e8c9-11f1-876c-fa62e30020a8"
POLICY = BootstrapPolicy(("db1", "db2", "db3"), "db1")


def answer(seqno, running=False, safe=False):
    return {"running": running, "position": f"{U}:{seqno}", "safe_to_bootstrap": safe, "source": "wsrep-recover"}


V = "99999999-2222-3333-4444-555555555555"


def cut_answer(seqno):
    """A member whose rsync SST was cut off: InnoDB recovers the donor's position."""
    return {"running": False, "position": f"{U}:{seqno}", "safe_to_bootstrap": False, "source": "incomplete",
            "complete": False, "incomplete": ["sst_in_progress is in the datadir"]}


class Members:
    """Members that answer like ``mailha_galera``: a started member reports its wsrep status
    once Synced. ``came_up`` overrides the (uuid, seqno) a node starts in."""

    def __init__(self, answers, fail=(), came_up=None):
        self.answers = answers
        self.fail = set(fail)
        self.came_up = came_up or {}
        self.calls = []
        self.seqno = None
        self.lock = threading.Lock()

    def ask(self, node):
        a = self.answers[node]
        if isinstance(a, Exception):
            raise a
        return a

    def act(self, node, action, position):
        with self.lock:
            self.calls.append((node, action, position))
        if node in self.fail:
            return "ERROR: mariadbd exited"
        if action == "stop":
            return {"node": node, "stopped": True}
        if action == "bootstrap":
            self.seqno = int(position.rsplit(":", 1)[1]) if position else 0
        # a joiner catches up with the cluster before it is Synced
        uuid, seqno = self.came_up.get(node, (U, self.seqno))
        return {"node": node, "synced": True, "wsrep_cluster_state_uuid": uuid, "wsrep_last_committed": seqno}


def test_plan_only_starts_nothing():
    m = Members({"db1": answer(11), "db2": answer(13), "db3": answer(12)})
    res = recover_cluster(POLICY, m.ask, m.act, apply=False)
    assert res["plan"]["node"] == "db2" and res["result"] is True and m.calls == []
    assert res["positions"]["db3"]["position"] == f"{U}:12"


def test_apply_bootstraps_first_then_joins_with_their_own_positions():
    m = Members({"db1": answer(11), "db2": answer(13), "db3": answer(12)})
    res = recover_cluster(POLICY, m.ask, m.act, apply=True)
    assert m.calls[0] == ("db2", "bootstrap", f"{U}:13")
    assert sorted(m.calls[1:]) == [("db1", "join", f"{U}:11"), ("db3", "join", f"{U}:12")]
    assert res["result"] is True and all(a["ok"] for a in res["applied"])


def test_failed_bootstrap_starts_nobody_else():
    m = Members({"db1": answer(11), "db2": answer(13), "db3": answer(12)}, fail={"db2"})
    res = recover_cluster(POLICY, m.ask, m.act, apply=True)
    assert [c[0] for c in m.calls] == ["db2"]
    assert res["result"] is False and "nothing else was started" in res["reason"]
    assert "mariadbd exited" in res["applied"][0]["result"]


def test_a_failed_join_fails_the_result():
    m = Members({"db1": answer(11), "db2": answer(13), "db3": answer(12)}, fail={"db3"})
    res = recover_cluster(POLICY, m.ask, m.act, apply=True)
    assert res["result"] is False and {a["node"]: a["ok"] for a in res["applied"]} == \
        {"db2": True, "db1": True, "db3": False}


def test_an_exception_while_asking_is_an_unreachable_member():
    m = Members({"db1": answer(11), "db2": answer(13), "db3": TimeoutError("no answer in 120s")})
    res = recover_cluster(POLICY, m.ask, m.act, apply=True)
    assert res["plan"]["kind"] == "refuse" and "db3: minion error: TimeoutError" in res["reason"]
    assert m.calls == []


def test_report_from_answer_never_guesses():
    assert report_from_answer("db1", None).error == "minion did not answer"
    assert "minion error" in report_from_answer("db1", "'mailha_galera.position' is not available.").error
    assert "unusable answer" in report_from_answer("db1", {"position": "bogus"}).error
    assert report_from_answer("db1", {"running": False, "position": None, "error": "recover failed"}).error == \
        "recover failed"
    r = report_from_answer("db1", {"running": True, "position": f"{U}:5", "status": {
        "wsrep_cluster_size": 3, "wsrep_cluster_status": "Primary", "wsrep_local_state_comment": "Synced",
        "wsrep_ready": True, "wsrep_connected": True, "wsrep_cluster_state_uuid": U, "wsrep_last_committed": 7}})
    assert r.status.primary and str(r.effective_position) == f"{U}:7"


def test_a_bootstrap_that_starts_another_history_stops_there():
    """The issue's failure: the node came up as a NEW cluster (another UUID). Nothing joins it,
    it is stopped, and the result says so."""
    m = Members({"db1": answer(11), "db2": answer(13), "db3": answer(12)}, came_up={"db2": (V, 0)})
    res = recover_cluster(POLICY, m.ask, m.act, apply=True)
    assert m.calls == [("db2", "bootstrap", f"{U}:13"), ("db2", "stop", None)]
    assert res["result"] is False
    assert f"came up in cluster {V}:0, not {U}" in res["reason"] and "nothing else was started" in res["reason"]
    assert "the other members are untouched" in res["reason"]


def test_a_bootstrap_below_the_planned_seqno_stops_there():
    m = Members({"db1": answer(11), "db2": answer(13), "db3": answer(12)}, came_up={"db2": (U, 9)})
    res = recover_cluster(POLICY, m.ask, m.act, apply=True)
    assert [c[1] for c in m.calls] == ["bootstrap", "stop"] and res["result"] is False
    assert "below the planned 13" in res["reason"]


def test_a_member_that_joins_another_history_fails_the_result():
    m = Members({"db1": answer(11), "db2": answer(13), "db3": answer(12)}, came_up={"db3": (V, 40)})
    res = recover_cluster(POLICY, m.ask, m.act, apply=True)
    assert res["result"] is False
    assert {a["node"]: a["ok"] for a in res["applied"]} == {"db2": True, "db1": True, "db3": False}
    assert f"db3: it came up in cluster {V}:40" in res["reason"]


def test_the_issue_scenario_bootstraps_a_complete_member_and_resyncs_the_cut_one():
    m = Members({"db1": cut_answer(13), "db2": answer(13), "db3": answer(13)})
    res = recover_cluster(POLICY, m.ask, m.act, apply=True)
    assert m.calls[0] == ("db2", "bootstrap", f"{U}:13")
    assert sorted(m.calls[1:]) == [("db1", "resync", None), ("db3", "join", f"{U}:13")]
    assert res["result"] is True
    assert res["positions"]["db1"]["complete"] is False and res["positions"]["db2"]["complete"] is True


def test_nothing_is_started_without_a_complete_copy():
    empty = {"running": False, "position": f"{ZERO}:-1", "safe_to_bootstrap": False, "source": "no datadir"}
    m = Members({"db1": cut_answer(13), "db2": empty, "db3": empty})
    res = recover_cluster(POLICY, m.ask, m.act, apply=True)
    assert res["plan"]["kind"] == "refuse" and m.calls == [] and res["result"] is False
    assert "no complete copy" in res["reason"] and "db1" in res["reason"]


def test_report_from_answer_carries_the_evidence():
    r = report_from_answer("db1", cut_answer(13))
    assert r.incomplete == ("sst_in_progress is in the datadir",) and r.needs_sst and r.error is None
    assert "unusable answer" in report_from_answer("db1", {**cut_answer(1), "incomplete": "text"}).error
