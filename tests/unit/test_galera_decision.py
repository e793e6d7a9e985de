"""choose_bootstrap_node: one snapshot of member reports in, one action and a reason out."""

import pytest

from salt_mailha.core.galera import (
    ZERO_UUID,
    BootstrapPolicy,
    GaleraPosition,
    NodeReport,
    WsrepStatus,
    choose_bootstrap_node,
    plan_first_start,
)

U = "d84ce8f4-e8c9-11f1-876c-fa62e30020a8"
V = "11111111-2222-3333-4444-555555555555"
MEMBERS = ("db1", "db2", "db3")


def stopped(node, seqno, uuid=U, safe=False):
    return NodeReport(node, running=False, position=GaleraPosition(uuid, seqno), safe_to_bootstrap=safe)


def running(node, status="Primary", size=2, last=20, uuid=U):
    st = WsrepStatus(size, status, "Synced" if status == "Primary" else "Initialized",
                     status == "Primary", True, uuid, last)
    return NodeReport(node, running=True, status=st)


def cut(node, seqno=65, uuid=U, why="sst_in_progress is in the datadir"):
    """A member whose last state transfer was cut off: its InnoDB recovers the donor's position."""
    return NodeReport(node, running=False, position=GaleraPosition(uuid, seqno) if seqno is not None else None,
                      incomplete=(why,))


def unreachable(node, why="minion did not answer"):
    return NodeReport(node, error=why)


def reports(*rs):
    return {r.node: r for r in rs}


CASES = [
    # id, reports, policy kwargs, kind, node, steps, words in the reason
    ("highest-seqno-wins", reports(stopped("db1", 11), stopped("db2", 13), stopped("db3", 12)), {},
     "bootstrap", "db2", [("bootstrap", "db2"), ("join", "db1"), ("join", "db3")], ["highest seqno 13"]),
    ("tie-broken-by-safe-to-bootstrap", reports(stopped("db1", 13), stopped("db2", 13, safe=True),
                                                stopped("db3", 12)), {},
     "bootstrap", "db2", [("bootstrap", "db2"), ("join", "db1"), ("join", "db3")], ["tied with db1", "safe_to_bootstrap"]),
    ("tie-broken-by-pillar-order", reports(stopped("db1", 11), stopped("db2", 13), stopped("db3", 13)), {},
     "bootstrap", "db2", [("bootstrap", "db2"), ("join", "db1"), ("join", "db3")], ["tied with db3", "pillar order"]),
    ("primary-live-means-join", reports(running("db1"), running("db2"), stopped("db3", 5)), {},
     "join", "db1", [("join", "db3")], ["Primary component", "never bootstrap"]),
    ("primary-live-even-when-forced", reports(running("db1"), stopped("db2", 30), stopped("db3", 5)),
     {"force_node": "db2"}, "refuse", "db1", [], ["even when forced", "split"]),
    ("all-running-primary-nothing-to-do", reports(running("db1", size=3), running("db2", size=3),
                                                  running("db3", size=3)), {},
     "none", "db1", [], ["every member is running"]),
    ("one-unreachable-refuses", reports(stopped("db1", 11), stopped("db2", 13), unreachable("db3")), {},
     "refuse", None, [], ["db3: minion did not answer", "name the node to force"]),
    ("missing-report-refuses", reports(stopped("db1", 11), stopped("db2", 13)), {},
     "refuse", None, [], ["db3: did not answer"]),
    ("forced-node-overrides-missing", reports(stopped("db1", 11), stopped("db2", 13), unreachable("db3")),
     {"force_node": "db1"}, "bootstrap", "db1", [("bootstrap", "db1"), ("join", "db2")],
     ["forced by the operator", "highest is db2 13", "no position from db3"]),
    ("forced-node-without-position", reports(stopped("db1", 11), stopped("db2", 13), unreachable("db3")),
     {"force_node": "db3"}, "refuse", None, [], ["db3 has no position"]),
    ("forced-node-not-a-member", reports(stopped("db1", 11)), {"force_node": "mail1"},
     "refuse", None, [], ["not a Galera member"]),
    ("uuid-mismatch-names-the-odd-node", reports(stopped("db1", 11), stopped("db2", 13), stopped("db3", 40, uuid=V)),
     {}, "refuse", None, [], ["disagree", f"db3 on {V}", "db3 belong to another history"]),
    ("uuid-mismatch-even-when-forced", reports(stopped("db1", 11), stopped("db2", 13), stopped("db3", 40, uuid=V)),
     {"force_node": "db1"}, "refuse", None, [], ["disagree"]),
    ("zero-uuid-with-seqno-is-another-history", reports(stopped("db1", 11), stopped("db2", 13),
                                                        stopped("db3", 4, uuid=ZERO_UUID)),
     {}, "refuse", None, [], ["db3 belong to another history"]),
    ("empty-node-joins-by-sst", reports(stopped("db1", 11), stopped("db2", 13), stopped("db3", -1, uuid=ZERO_UUID)),
     {}, "bootstrap", "db2", [("bootstrap", "db2"), ("join", "db1"), ("join", "db3")], ["highest seqno 13"]),
    ("brand-new-cluster", reports(*(stopped(m, -1, uuid=ZERO_UUID) for m in MEMBERS)), {"bootstrap_node": "db2"},
     "new", "db2", [("bootstrap", "db2"), ("join", "db1"), ("join", "db3")], ["new cluster", "galera:bootstrap_node"]),
    ("brand-new-without-bootstrap-node", reports(*(stopped(m, -1, uuid=ZERO_UUID) for m in MEMBERS)), {},
     "refuse", None, [], ["set galera:bootstrap_node"]),
    ("non-primary-survivors-promote-highest", reports(running("db1", "non-Primary", 1, 20),
                                                     running("db2", "non-Primary", 1, 21), unreachable("db3")),
     {"force_node": "db2"}, "bootstrap", "db2", [("pc_bootstrap", "db2")], ["forced"]),
    ("non-primary-survivors-with-every-report", reports(running("db1", "non-Primary", 1, 20),
                                                       running("db2", "non-Primary", 1, 21), stopped("db3", 19)),
     {}, "bootstrap", "db2", [("pc_bootstrap", "db2"), ("join", "db3")], ["highest seqno 21"]),
    ("seqno-minus-one-loses", reports(stopped("db1", -1), stopped("db2", 0), stopped("db3", -1)), {},
     "bootstrap", "db2", [("bootstrap", "db2"), ("join", "db1"), ("join", "db3")], ["highest seqno 0"]),
    # --- state transfers cut off (issue 19)
    ("issue-scenario-tie-never-picks-the-cut-copy", reports(cut("db1", 65), stopped("db2", 65), stopped("db3", 65)),
     {}, "bootstrap", "db2", [("bootstrap", "db2"), ("resync", "db1"), ("join", "db3")],
     ["db2 has the highest seqno 65", "tied with db3", "db1 needs a full SST (sst_in_progress",
      "resyncs after the bootstrap"]),
    ("cut-copy-with-a-higher-seqno-is-still-no-candidate", reports(cut("db1", 99), stopped("db2", 65),
                                                                    stopped("db3", 64)),
     {}, "bootstrap", "db2", [("bootstrap", "db2"), ("resync", "db1"), ("join", "db3")], ["highest seqno 65"]),
    ("cut-copy-without-any-position-counts-as-reported", reports(cut("db1", None), stopped("db2", 65),
                                                                  stopped("db3", 65)),
     {}, "bootstrap", "db2", [("bootstrap", "db2"), ("resync", "db1"), ("join", "db3")], ["db1 needs a full SST"]),
    ("no-complete-copy-refuses-naming-the-nodes", reports(cut("db1"), stopped("db2", -1, uuid=ZERO_UUID),
                                                          stopped("db3", -1, uuid=ZERO_UUID)),
     {}, "refuse", None, [], ["no complete copy", "db1 needs a full SST", "db2, db3 hold no Galera history",
                              "nothing is started"]),
    ("no-complete-copy-even-when-forced", reports(cut("db1"), stopped("db2", -1, uuid=ZERO_UUID),
                                                  stopped("db3", -1, uuid=ZERO_UUID)),
     {"force_node": "db2"}, "refuse", None, [], ["no complete copy", "even when forced"]),
    ("two-cut-copies-and-one-silent-member", reports(cut("db1"), cut("db2"), unreachable("db3")),
     {"force_node": None}, "refuse", None, [], ["db3: minion did not answer"]),
    ("forcing-a-cut-copy-is-refused", reports(cut("db1"), stopped("db2", 64), stopped("db3", 64)),
     {"force_node": "db1"}, "refuse", None, [], ["forced node db1 does not hold a complete copy", "even when forced"]),
    ("primary-live-cut-copy-resyncs", reports(running("db1"), running("db2"), cut("db3")), {},
     "join", "db1", [("resync", "db3")], ["db3 needs a full SST"]),
    # --- no recoverable position anywhere
    ("all-at-minus-one-refuses", reports(stopped("db1", -1), stopped("db2", -1), stopped("db3", -1)), {},
     "refuse", None, [], ["seqno -1", "no member has a recoverable position", "force=<node>"]),
    ("all-at-minus-one-with-an-empty-node-refuses", reports(stopped("db1", -1), stopped("db2", -1),
                                                             stopped("db3", -1, uuid=ZERO_UUID)), {},
     "refuse", None, [], ["seqno -1"]),
    ("all-at-minus-one-forced", reports(stopped("db1", -1), stopped("db2", -1), stopped("db3", -1)),
     {"force_node": "db2"}, "bootstrap", "db2", [("bootstrap", "db2"), ("join", "db1"), ("join", "db3")],
     ["forced by the operator", "no member has a recoverable seqno"]),
    # --- every safe_to_bootstrap the plan overrides is said
    ("safe-flag-on-a-lower-node-is-named", reports(stopped("db1", 12, safe=True), stopped("db2", 13),
                                                   stopped("db3", 11)), {},
     "bootstrap", "db2", [("bootstrap", "db2"), ("join", "db1"), ("join", "db3")],
     ["overrides safe_to_bootstrap: 1 on db1", "safe_to_bootstrap is 0 on db2"]),
    ("chosen-safe-node-overrides-nothing", reports(stopped("db1", 12), stopped("db2", 13, safe=True),
                                                   stopped("db3", 11)), {},
     "bootstrap", "db2", [("bootstrap", "db2"), ("join", "db1"), ("join", "db3")], []),
]


@pytest.mark.parametrize("reps, policy, kind, node, steps, words", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_choose_bootstrap_node(reps, policy, kind, node, steps, words):
    action, reason = choose_bootstrap_node(reps, BootstrapPolicy(MEMBERS, **policy))
    assert action.kind == kind, reason
    assert action.node == node
    assert [(s.action, s.node) for s in action.steps] == steps
    for w in words:
        assert w in reason


def test_steps_carry_each_nodes_own_start_position():
    action, _ = choose_bootstrap_node(reports(stopped("db1", 11), stopped("db2", 13), stopped("db3", 12)),
                                      BootstrapPolicy(MEMBERS))
    assert {s.node: str(s.position) for s in action.steps} == {"db1": f"{U}:11", "db2": f"{U}:13", "db3": f"{U}:12"}
    assert action.as_dict()["steps"][0] == {"action": "bootstrap", "node": "db2", "position": f"{U}:13"}


def test_no_members_refuses():
    action, reason = choose_bootstrap_node({}, BootstrapPolicy(()))
    assert action.kind == "refuse" and "db or quorum" in reason


def test_decision_is_deterministic_whatever_the_report_order():
    a = reports(stopped("db3", 13), stopped("db1", 13), stopped("db2", 13))
    b = reports(stopped("db1", 13), stopped("db2", 13), stopped("db3", 13))
    assert choose_bootstrap_node(a, BootstrapPolicy(MEMBERS)) == choose_bootstrap_node(b, BootstrapPolicy(MEMBERS))
    assert choose_bootstrap_node(a, BootstrapPolicy(MEMBERS))[0].node == "db1"


def test_no_override_is_claimed_when_the_chosen_node_is_the_safe_one():
    _, reason = choose_bootstrap_node(reports(stopped("db1", 12), stopped("db2", 13, safe=True), stopped("db3", 11)),
                                      BootstrapPolicy(MEMBERS))
    assert "safe_to_bootstrap" not in reason


def test_a_cut_copy_never_sets_a_position():
    action, _ = choose_bootstrap_node(reports(cut("db1", 99), stopped("db2", 65), stopped("db3", 64)),
                                      BootstrapPolicy(MEMBERS))
    assert {s.node: s.position for s in action.steps}["db1"] is None


FIRST_START = [
    # id, node, bootstrap_node, incomplete, has_history, primary, answering, plan, words
    ("primary-join", "db2", "db1", (), True, ["db1"], ["db1"], "join", ["db1 in a Primary component"]),
    ("primary-cut-copy-resyncs", "db2", "db1", ("sst_in_progress is in the datadir",), False, ["db1"], ["db1"],
     "resync", ["needs a full SST"]),
    ("fresh-bootstrap-node", "db1", "db1", (), False, [], [], "bootstrap", ["no Galera history"]),
    ("bootstrap-node-with-a-cut-copy-refuses", "db1", "db1", ("grastate.dat is empty but InnoDB recovers x",),
     False, [], [], "refuse", ["not a complete copy", "galera_recover"]),
    ("bootstrap-node-with-history-waits", "db1", "db1", (), True, [], [], "wait", ["galera_recover"]),
    ("bootstrap-node-with-others-answering-refuses", "db1", "db1", (), False, [], ["db2"], "refuse",
     ["second cluster"]),
    ("other-waits", "db2", "db1", (), False, [], [], "wait", ["no member answers"]),
    ("other-with-a-cut-copy-waits", "db2", "db1", ("x",), False, [], [], "wait", []),
]


@pytest.mark.parametrize("node, boot, incomplete, history, primary, answering, plan, words",
                         [c[1:] for c in FIRST_START], ids=[c[0] for c in FIRST_START])
def test_plan_first_start(node, boot, incomplete, history, primary, answering, plan, words):
    got, reason = plan_first_start(node, boot, incomplete, history, primary, answering)
    assert got == plan, reason
    for w in words:
        assert w in reason
