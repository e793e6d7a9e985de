"""Remediation decisions (core.remediation): every rule with its reason sentence."""
import pytest

from salt_mailha.core import remediation as r
from salt_mailha.core.errors import Refused
from salt_mailha.core.health import HealthTracker, HoldDown, ProbeResult

LBS = ("lb1", "lb2")
POLICY = r.Policy(probe_interval=1, down_after=3, up_after=3, max_actions=4, window=60)


def obs(*views):
    """obs(True, False) -> lb1 up, lb2 down; None = did not answer."""
    return tuple(r.Observation(lb, ok, () if ok else ("imap",)) for lb, ok in zip(LBS, views, strict=False))


def snap(views, record=None, now=1000.0, has_mx=True, others=1):
    return r.Snapshot("mail1", LBS, obs(*views), record or r.NodeRecord(), now, has_mx, others)


DRAINED = r.NodeRecord(r.AUTO, 900.0, True, (900.0,))
DRAINED_NO_MX = r.NodeRecord(r.AUTO, 900.0, False, (900.0,))
OPERATOR = r.NodeRecord(r.OPERATOR, 900.0, True, ())


def kinds(plan):
    return [(a.kind, a.target) for a in plan.actions]


@pytest.mark.parametrize(
    "snapshot,expected_actions,verdict,reason",
    [
        (snap((False, False)),
         [("drain", "lb1"), ("drain", "lb2"), ("withdraw_mx", "dns")], "down",
         "mail1 failed the re-check (every load balancer sees it down (lb1: down (imap), "
         "lb2: down (imap))); draining it on lb1, lb2 and withdrawing its MX"),
        (snap((False, None)),
         [("drain", "lb1"), ("drain", "lb2"), ("withdraw_mx", "dns")], "down",
         "mail1 failed the re-check (every load balancer sees it down (lb1: down (imap))); "
         "draining it on lb1, lb2 and withdrawing its MX"),
        (snap((False, False), has_mx=False),
         [("drain", "lb1"), ("drain", "lb2")], "down",
         "mail1 failed the re-check (every load balancer sees it down (lb1: down (imap), "
         "lb2: down (imap))); draining it on lb1, lb2"),
        (snap((False, False), others=0),
         [("drain", "lb1"), ("drain", "lb2")], "down",
         "mail1 failed the re-check (every load balancer sees it down (lb1: down (imap), "
         "lb2: down (imap))); draining it on lb1, lb2 but keeping its MX: it is the last one "
         "in service"),
        (snap((True, False)), [], "split",
         "the load balancers disagree (lb1: up, lb2: down (imap)) of mail1; nothing done"),
        (snap((None, None)), [], "unknown",
         "no load balancer answered the re-check of mail1; nothing done"),
        (snap((False, False), DRAINED), [], "down",
         "mail1 is down (every load balancer sees it down (lb1: down (imap), lb2: down (imap))) "
         "and already drained"),
        (snap((True, True)), [], "up",
         "mail1 is healthy and in service (every load balancer sees it up (lb1: up, lb2: up))"),
        (snap((True, True), DRAINED),
         [("undrain", "lb1"), ("undrain", "lb2"), ("restore_mx", "dns")], "up",
         "mail1 passes the re-check again (every load balancer sees it up (lb1: up, lb2: up)); "
         "restoring it on lb1, lb2 and restoring its MX"),
        (snap((True, True), DRAINED_NO_MX),
         [("undrain", "lb1"), ("undrain", "lb2")], "up",
         "mail1 passes the re-check again (every load balancer sees it up (lb1: up, lb2: up)); "
         "restoring it on lb1, lb2"),
        (snap((True, True), DRAINED, now=901.0), [], "up",
         "mail1 passes the re-check but was drained only 1.0 s ago; it stays drained for at "
         "least 3 s (hysteresis)"),
        (snap((True, True), r.NodeRecord(r.AUTO, 990.0, True, (950.0, 970.0, 990.0))), [], "up",
         "mail1 passes the re-check but 3 automatic action(s) in the last 60 s leave no room "
         "under the limit of 4 for a restore and a later drain; it stays drained (rate limit)"),
        (snap((True, True), OPERATOR), [], "operator",
         "mail1 was drained by an operator; automatic remediation leaves it alone "
         "(mailha.undrain mail1 returns it to service)"),
        (snap((False, False), OPERATOR), [], "operator",
         "mail1 was drained by an operator; automatic remediation leaves it alone "
         "(mailha.undrain mail1 returns it to service)"),
    ],
    ids=["down-drain", "down-one-lb-silent", "down-no-mx", "down-last-mx", "split", "no-answer",
         "down-already-drained", "up-in-service", "up-restore", "up-restore-no-mx",
         "hysteresis", "rate-limit", "operator-up", "operator-down"],
)
def test_plan_remediation(snapshot, expected_actions, verdict, reason):
    plan = r.plan_remediation(snapshot, POLICY)
    assert kinds(plan) == expected_actions
    assert plan.verdict == verdict
    assert plan.reason == reason


def test_hysteresis_says_when_to_look_again():
    plan = r.plan_remediation(snap((True, True), DRAINED, now=901.0), POLICY)
    assert plan.retry_after == pytest.approx(2.0)
    assert r.plan_remediation(snap((True, True), DRAINED), POLICY).retry_after is None


def test_drain_record_and_old_actions_expire():
    old = r.NodeRecord(None, 0.0, False, (100.0, 200.0, 300.0, 400.0))
    plan = r.plan_remediation(snap((False, False), old, now=1000.0), POLICY)
    assert plan.record == r.NodeRecord(r.AUTO, 1000.0, True, (1000.0,))
    # restore once the window is clear again
    plan = r.plan_remediation(snap((True, True), plan.record, now=1061.0), POLICY)
    assert kinds(plan)[-1] == ("restore_mx", "dns")
    assert plan.record == r.NodeRecord(None, 0.0, False, (1061.0,))


def test_drains_are_never_rate_limited():
    busy = r.NodeRecord(None, 0.0, False, (990.0, 991.0, 992.0, 993.0, 994.0))
    plan = r.plan_remediation(snap((False, False), busy), POLICY)
    assert [k for k, _ in kinds(plan)] == ["drain", "drain", "withdraw_mx"]


def test_flapping_node_is_bounded_by_the_policy():
    """10 flaps in a minute, probed every second through the hold-down: at most max_actions."""
    tracker = HealthTracker(HoldDown(POLICY.down_after, POLICY.up_after))
    record, actions, t = r.NodeRecord(), [], 0.0
    pattern = ([False] * 3 + [True] * 3) * 10  # 10 flaps, 60 probes = 60 s
    for ok in pattern + [True] * 120:  # then healthy for two more windows
        change = tracker.observe("mail1", {"imap": ProbeResult(ok, "")}, now=t)
        # an event, or the reconcile schedule (which re-probes through the same hold-down)
        if change is not None or int(t) % 60 == 59:
            held = {"up": True, "down": False}.get(tracker.nodes.get("mail1"))
            plan = r.plan_remediation(
                r.Snapshot("mail1", LBS, obs(held, held), record, t, True, 1), POLICY)
            if plan.actions:
                actions.append((t, plan.verdict))
            record = plan.record
        t += 1.0
    in_first_minute = [a for a in actions if a[0] < 60]
    assert len(in_first_minute) <= POLICY.max_actions
    for start in range(0, 180):  # any sliding window
        assert len([a for a in actions if start <= a[0] < start + 60]) <= POLICY.max_actions
    assert actions[0] == (2.0, "down")
    assert record.drained_by is None, "the node ends in service once it stays healthy"


def test_operator_drain_and_undrain():
    plan = r.plan_operator_drain(snap((True, True), now=50.0))
    assert kinds(plan) == [("drain", "lb1"), ("drain", "lb2"), ("withdraw_mx", "dns")]
    assert plan.record.drained_by == r.OPERATOR and plan.record.mx_withdrawn
    assert plan.reason == ("operator drain of mail1: draining it on lb1, lb2 and withdrawing its "
                           "MX; automatic remediation will not restore it")
    # an auto-drained node taken over by the operator: MX already withdrawn, not done twice
    plan = r.plan_operator_drain(snap((False, False), DRAINED))
    assert kinds(plan) == [("drain", "lb1"), ("drain", "lb2")]
    assert plan.record.mx_withdrawn and plan.record.drained_by == r.OPERATOR
    again = r.plan_operator_drain(snap((False, False), plan.record))
    assert again.actions == () and again.reason == "mail1 is already drained by an operator"
    undo = r.plan_operator_undrain(snap((False, False), plan.record))
    assert kinds(undo) == [("undrain", "lb1"), ("undrain", "lb2"), ("restore_mx", "dns")]
    assert undo.record.drained_by is None
    assert undo.reason.endswith("(warning: every load balancer sees it down (lb1: down (imap), "
                                "lb2: down (imap)))")


@pytest.mark.parametrize(
    "reporter,recheck,reason",
    [
        (None, True, "the master asked for a re-check of mail2"),
        ("lb1", True, "load balancer lb1 reported a change of mail2"),
        ("mail2", True, "mail2 reported a change of its own services"),
        ("mail1", False, "mail1 is not authoritative for mail2 (only the load balancers lb1, lb2 "
                         "and mail2 itself are); report ignored"),
    ],
    ids=["master", "balancer", "self", "other-mail-node"],
)
def test_assess_claim(reporter, recheck, reason):
    assert r.assess_claim(reporter, "mail2", LBS) == (recheck, reason)


@pytest.mark.parametrize(
    "value,message",
    [
        ("mail9", "node 'mail9' is not a node of this site (known: lb1, mail1); nothing done"),
        ("mail1; rm -rf /", "is not a node id"),
        ("../etc", "is not a node id"),
        (["mail1"], "is not a node id"),
        (None, "is not a node id"),
    ],
    ids=["unknown", "injection", "path", "list", "none"],
)
def test_check_node_refuses(value, message):
    with pytest.raises(Refused, match=message.replace("(", r"\(").replace(")", r"\)")):
        r.check_node(value, {"lb1", "mail1"})


def test_check_node_and_minion_id_accept():
    assert r.check_node("mail1", {"mail1"}) == "mail1"
    assert r.check_minion_id("lb1.example.net") == "lb1.example.net"
    with pytest.raises(Refused, match="not a valid minion id"):
        r.check_minion_id("lb1 && reboot")


def test_record_roundtrip_and_unknown_owner_is_cautious():
    rec = r.NodeRecord(r.AUTO, 5.0, True, (1.0, 2.0))
    assert r.NodeRecord.from_dict(rec.as_dict()) == rec
    assert r.NodeRecord.from_dict({"drained_by": "mallory"}).drained_by == r.OPERATOR
    assert r.NodeRecord.from_dict(None) == r.NodeRecord()


def test_policy_from_spec():
    from salt_mailha.core.model import RemediationSpec

    p = r.Policy.from_spec(RemediationSpec(probe_interval=0.5, up_after=4, window=30))
    assert (p.probe_interval, p.up_after, p.window, p.restore_after) == (0.5, 4, 30, 2.0)


# ------------------------------------------------------- a drain that failed, an MX that moved
MX_ONLY = r.NodeRecord(None, 0.0, True, (900.0,))  # drains failed everywhere, MX withdrawn


def test_healthy_node_whose_mx_alone_was_withdrawn_gets_it_back():
    plan = r.plan_remediation(snap((True, True), MX_ONLY), POLICY)
    assert kinds(plan) == [("restore_mx", "dns")] and plan.verdict == "up"
    assert "its MX is withdrawn; restoring its MX" in plan.reason
    assert plan.record.mx_withdrawn is False and plan.record.drained_by is None


def test_failed_drains_keep_the_old_record_but_an_mx_change_that_happened_is_recorded():
    from salt_mailha.runners import mailha as runner

    plan = r.plan_remediation(snap((False, False)), POLICY)
    drain1, drain2, withdraw = plan.actions
    results = [(drain1, False, "ipvsadm: Protocol not available"), (drain2, False, "same"),
               (withdraw, True, "done")]
    record = runner._record_after(r.NodeRecord(), plan, results)
    assert record.drained_by is None and record.mx_withdrawn is True
    # and nothing recorded when the withdrawal failed too
    results[2] = (withdraw, False, "REFUSED")
    assert runner._record_after(r.NodeRecord(), plan, results) == r.NodeRecord()
    # the restore side: undrains failed, the MX came back
    back = r.plan_remediation(snap((True, True), DRAINED, now=2000.0), POLICY)
    u1, u2, restore = back.actions
    record = runner._record_after(DRAINED, back, [(u1, False, "x"), (u2, False, "x"), (restore, True, "ok")])
    assert record.drained_by == r.AUTO and record.mx_withdrawn is False


def test_a_restore_that_missed_one_balancer_stays_drained_to_be_restored_again():
    """Seen in the lab's drill: lb2's undrain did not answer in time, the node was recorded as
    restored and stayed at weight 0 on lb2 for good."""
    from salt_mailha.runners import mailha as runner

    back = r.plan_remediation(snap((True, True), DRAINED, now=2000.0), POLICY)
    u1, u2, restore = back.actions
    record = runner._record_after(DRAINED, back, [(u1, True, "done"), (u2, False, "no answer from the minion"),
                                                  (restore, True, "ok")])
    assert record.drained_by == r.AUTO and record.mx_withdrawn is False
    again = r.plan_remediation(snap((True, True), record, now=2001.0), POLICY)
    assert [a.kind for a in again.actions] == ["undrain", "undrain"], again.reason
    # a drain that reached one balancer is recorded: its restore will undrain both
    plan = r.plan_remediation(snap((False, False)), POLICY)
    d1, d2, withdraw = plan.actions
    assert runner._record_after(r.NodeRecord(), plan, [(d1, True, "done"), (d2, False, "x"),
                                                       (withdraw, True, "done")]).drained_by == r.AUTO


# ------------------------------------------------------- one re-check at a time per node (gate)
# Real flock on files under tmp_path, real threads and a real second process: no fakes.
import subprocess  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402


def _hold(gate, node, entered, release, seen):
    with gate.enter(node) as turn:
        seen.append((turn, time.monotonic()))
        entered.set()
        release.wait(10)


def _start(gate, node, seen):
    entered, release = threading.Event(), threading.Event()
    t = threading.Thread(target=_hold, args=(gate, node, entered, release, seen), daemon=True)
    t.start()
    return t, entered, release


def test_gate_runs_one_queues_one_folds_the_rest(tmp_path):
    gate = r.NodeGate(str(tmp_path), "site")
    seen_run, seen_queued = [], []
    runner, entered, release_run = _start(gate, "mail1", seen_run)
    assert entered.wait(5) and seen_run[0][0] == r.RUN
    queued, q_entered, release_queued = _start(gate, "mail1", seen_queued)
    time.sleep(0.1)
    assert not q_entered.is_set(), "the second report waits for the running re-check"
    folded_at = []
    for _ in range(5):  # every further report returns at once without a re-check
        with gate.enter("mail1") as turn:
            assert turn == r.FOLDED
            folded_at.append(time.monotonic())
    # another node is not held back by mail1, nor are plan-only reports (their own gate name)
    with gate.enter("mail2") as turn:
        assert turn == r.RUN
    with r.NodeGate(str(tmp_path), "site.plan").enter("mail1") as turn:
        assert turn == r.RUN
    release_run.set()
    assert q_entered.wait(5) and seen_queued[0][0] == r.QUEUED
    # the queued re-check begins after every report folded into it, and counts them
    assert seen_queued[0][1] > max(folded_at)
    assert gate.take_folded("mail1") == 5 and gate.take_folded("mail1") == 0
    # a report while the queued one re-checks queues again: that change is not lost
    third, t_entered, release_third = _start(gate, "mail1", [])
    time.sleep(0.1)
    assert not t_entered.is_set()
    release_queued.set()
    assert t_entered.wait(5)
    release_third.set()
    for t in (runner, queued, third):
        t.join(5)
    with gate.enter("mail1") as turn:
        assert turn == r.RUN, "the gate is free again"


def test_gate_of_a_dead_process_is_released(tmp_path):
    """A master process killed during a re-check never leaves the node gated (flock)."""
    code = ("import sys, time\n"
            "from salt_mailha.core.remediation import NodeGate\n"
            "with NodeGate(sys.argv[1], 'site').enter('mail1') as turn:\n"
            "    print(turn, flush=True)\n"
            "    time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout.readline().strip() == r.RUN
        gate = r.NodeGate(str(tmp_path), "site")
        queued = []
        t = threading.Thread(target=lambda: queued.append(
            gate.enter("mail1", timeout=30).__enter__()), daemon=True)
        t.start()
        time.sleep(0.2)
        assert queued == [], "held by the other process"
        proc.kill()
        t.join(10)
        assert queued == [r.QUEUED]
    finally:
        proc.kill()
        proc.wait(10)


def test_gate_queued_report_gives_up_with_a_reason(tmp_path):
    gate = r.NodeGate(str(tmp_path), "site")
    seen = []
    t, entered, release = _start(gate, "mail1", seen)
    assert entered.wait(5)
    try:
        with pytest.raises(Refused, match=r"a re-check of mail1 held .*gate-site-mail1.run for "
                                          r"0.2 s; this report gave up"):
            with gate.enter("mail1", timeout=0.2):
                pass
        # the queue slot was released: the next report queues rather than folds
        q = []
        t2, q_entered, q_release = _start(gate, "mail1", q)
        time.sleep(0.1)
        assert not q_entered.is_set()
    finally:
        release.set()
    assert q_entered.wait(5) and q[0][0] == r.QUEUED
    q_release.set()
    t.join(5)
    t2.join(5)


# ------------------------------------------------------- how long the re-check waits for balancers


@pytest.mark.parametrize("opts,attempts,expect", [
    ({}, 1, (11, 1.0)),                                     # 1 s probe + 10 s job start-up
    ({}, 3, (15, 1.0)),                                     # 3 probes, 2 intervals of 1 s, + 10 s
    ({"mailha_probe_timeout": 0.5, "mailha_job_startup": 2}, 1, (3, 0.5)),   # 2.5 s rounded up
    ({"mailha_job_startup": "4"}, 1, (5, 1.0)),             # a string from a YAML config
], ids=["defaults", "attempts", "rounded-up", "string"])
def test_recheck_wait_is_whole_seconds(monkeypatch, opts, attempts, expect):
    """LocalClient.cmd replaces a float timeout with the master's ``timeout`` option: the wait
    must be an int (the old float wait of 4.0 s was silently 5 s)."""
    from salt_mailha.core.model import load_site
    from salt_mailha.runners import mailha as runner
    from tests.support.example import example_pillar

    monkeypatch.setattr(runner, "__opts__", opts, raising=False)
    wait, probe = runner._recheck_wait(load_site(example_pillar()), attempts)
    assert (wait, probe) == expect and isinstance(wait, int)


@pytest.mark.parametrize("key,value", [("mailha_job_startup", -1), ("mailha_job_startup", "soon"),
                                       ("mailha_probe_timeout", 0), ("mailha_job_startup", True)])
def test_recheck_wait_refuses_bad_options(monkeypatch, key, value):
    from salt_mailha.core.errors import MailhaError
    from salt_mailha.core.model import load_site
    from salt_mailha.runners import mailha as runner
    from tests.support.example import example_pillar

    monkeypatch.setattr(runner, "__opts__", {key: value}, raising=False)
    with pytest.raises(MailhaError, match=f"master option {key}: .* fix it in the master config"):
        runner._recheck_wait(load_site(example_pillar()), 1)


def test_refusal_event_and_log_carry_no_secret(monkeypatch, caplog):
    """A refusal's reason can quote what a minion or a state answered; the event fired and the
    log line carry it redacted. When the pillar cannot be read at all, the refusal still fires."""
    from salt_mailha.core.model import load_site
    from salt_mailha.runners import mailha as runner
    from tests.support.example import example_pillar

    site = load_site(example_pillar())
    secret = next(s.reveal() for s in site.secrets() if s.reveal().startswith("CHANGE-ME"))
    fired = []
    monkeypatch.setattr(runner, "__opts__", {"id": "master1"}, raising=False)
    monkeypatch.setattr(runner, "_site", lambda: site)
    monkeypatch.setattr(runner, "_fire", lambda tag, data: fired.append((tag, data)))
    with caplog.at_level("WARNING"):
        out = runner._refused("mail1", f"lb1 answered: access denied for 'monitor'@'%' ({secret})",
                              reporter=f"x {secret}")
    (tag, data), = fired
    assert tag == "mailha/remediation/mail1/refused" and data == out
    assert secret not in repr(out) and secret not in caplog.text
    assert "access denied for 'monitor'@'%' (<redacted>)" in out["reason"] and out["reporter"] == "x <redacted>"

    def broken():
        raise RuntimeError("pillar render failed")

    monkeypatch.setattr(runner, "_site", broken)
    fired.clear()
    assert runner._refused("bad node!", "no such node")["reason"] == "no such node"
    assert fired[0][0] == "mailha/remediation/invalid/refused"
