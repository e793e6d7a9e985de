"""Remediation end to end with real Salt daemons, a real named and real TCP services.

Drains are observed through ldirectord's maintenance mechanism as the IPVS module reports it
(the host kernel has no IPVS, so there is no ipvsadm table to read: see cluster.py); MX records
through queries to the real named.
"""
import time

import pytest

from tests.support.daemon import wait_until

pytestmark = pytest.mark.integration

OUTCOMES = ("drained", "restored")


def remediation_events(listener, master, node, since, outcomes=("*",)):
    patterns = [(master.id, f"mailha/remediation/{node}/{o}") for o in outcomes]
    return [e for e in listener.get_events(patterns, after_time=since)]


def wait_event(listener, master, node, outcome, since, timeout=60):
    res = listener.wait_for_events([(master.id, f"mailha/remediation/{node}/{outcome}")],
                                   after_time=since, timeout=timeout)
    assert res.found_all_events, f"no mailha/remediation/{node}/{outcome} event within {timeout}s"
    return max(res.matches, key=lambda e: e.stamp).data


def test_stopped_service_drains_and_withdraws_mx_then_restores(rem_cluster, event_listener):
    c = rem_cluster
    since = time.time()
    c.services["mail1"]["imap"].stop()
    try:
        wait_until(lambda: c.drained("mail1") == {"lb1", "lb2"} and not c.mx_of("mail1"), 60,
                   what="mail1 drained on both balancers and its MX withdrawn")
        ev = wait_event(event_listener, c.master, "mail1", "drained", since)
        assert ev["reason"].startswith("mail1 failed the re-check (every load balancer sees it "
                                       "down (lb1: down (imap), lb2: down (imap)))")
        assert ev["reason"].endswith("draining it on lb1, lb2 and withdrawing its MX")
        assert all(a["ok"] for a in ev["actions"]), ev["actions"]
        # the IPVS module's view: weight 0 on both balancers (stand-in table, see cluster.py)
        assert c.weights("lb1", "mail1") == [0] and c.weights("lb2", "mail1") == [0]
        assert c.weights("lb1", "mail2") == [1]
        assert c.mx_of("mail2") and c.drained("mail2") == set(), "mail2 untouched"
    finally:
        since = time.time()
        c.services["mail1"]["imap"].start()
    wait_until(lambda: c.drained("mail1") == set() and c.mx_of("mail1"), 60,
               what="mail1 restored on both balancers and its MX back")
    ev = wait_event(event_listener, c.master, "mail1", "restored", since)
    assert ev["reason"].endswith("restoring it on lb1, lb2 and restoring its MX")


@pytest.mark.parametrize("claimed_id", ["mail1", "lb1"], ids=["honest-id", "spoofed-lb-id"])
def test_forged_report_from_mail_minion_changes_nothing(rem_cluster, event_listener, claimed_id):
    """mail1 fires a beacon-shaped event saying mail2 is down (once with its own id, once
    pretending to be lb1): nothing is drained or withdrawn."""
    c = rem_cluster
    since = time.time()
    updates_before = c.named.applied_updates()
    forged = {"tag": "salt/beacon/mail1/mailha_health/mailha/health/mail2/down",
              "data": {"id": claimed_id, "node": "mail2", "status": "down", "previous": "up",
                       "services": {"imap": {"status": "down", "detail": "forged"}}}}
    # the same path a beacon takes: the minion forwards __beacons_return to the master
    assert c.call("mail1", "event.fire", {"beacons": [forged]}, "__beacons_return") is True
    outcome = "ignored" if claimed_id == "mail1" else "noop"
    ev = wait_event(event_listener, c.master, "mail2", outcome, since)
    if claimed_id == "mail1":
        assert ev["reason"] == ("mail1 is not authoritative for mail2 (only the load balancers "
                                "lb1, lb2 and mail2 itself are); report ignored")
    else:
        assert ev["reason"].startswith("mail2 is healthy and in service (every load balancer "
                                       "sees it up")
    assert c.drained("mail2") == set() and c.mx_of("mail2")
    assert c.named.applied_updates() == updates_before
    assert not remediation_events(event_listener, c.master, "mail2", since, OUTCOMES)


def test_operator_drain_survives_recovery(rem_cluster, event_listener):
    c = rem_cluster
    ret = c.run("mailha.drain", "mail2")
    assert ret["outcome"] == "drained", ret
    assert ret["reason"] == ("operator drain of mail2: draining it on lb1, lb2 and withdrawing "
                             "its MX; automatic remediation will not restore it")
    assert c.drained("mail2") == {"lb1", "lb2"} and not c.mx_of("mail2")
    try:
        # mail2 fails and recovers: the balancers report down, then up
        since = time.time()
        c.services["mail2"]["imap"].stop()
        wait_event(event_listener, c.master, "mail2", "noop", since)
        since = time.time()
        c.services["mail2"]["imap"].start()
        ev = wait_event(event_listener, c.master, "mail2", "noop", since)
        assert ev["reason"] == ("mail2 was drained by an operator; automatic remediation leaves "
                                "it alone (mailha.undrain mail2 returns it to service)")
        assert c.drained("mail2") == {"lb1", "lb2"} and not c.mx_of("mail2")
        since = time.time()
        ret = c.run("mailha.reconcile")["mail2"]  # the schedule does not restore it either
        if ret["outcome"] == "coalesced":  # a beacon's re-check of mail2 was queued: it decides
            ev = wait_event(event_listener, c.master, "mail2", "noop", since)
            assert "drained by an operator" in ev["reason"], ev
        else:
            assert ret["verdict"] == "operator", ret
        assert c.drained("mail2") == {"lb1", "lb2"}
    finally:
        ret = c.run("mailha.undrain", "mail2")
    assert ret["outcome"] == "restored", ret
    assert c.drained("mail2") == set() and c.mx_of("mail2")


def test_plan_only_changes_nothing(rem_cluster):
    c = rem_cluster
    updates_before = c.named.applied_updates()
    ret = c.run("mailha.drain", "mail1", test=True)
    assert ret["outcome"] == "planned" and ret["test"] is True
    assert [(a["kind"], a["target"]) for a in ret["actions"]] == [
        ("drain", "lb1"), ("drain", "lb2"), ("withdraw_mx", "dns")]
    ret = c.run("mailha.remediate", "mail1", test=True)
    assert ret["outcome"] == "noop" and ret["verdict"] == "up"
    assert c.drained("mail1") == set() and c.mx_of("mail1")
    assert c.named.applied_updates() == updates_before


@pytest.mark.parametrize("node", ["mail9", "mail1; reboot", "../../etc/passwd"],
                         ids=["unknown", "injection", "path"])
def test_invalid_node_is_refused(rem_cluster, node):
    c = rem_cluster
    ret = c.run("mailha.remediate", node, reporter="lb1")
    assert ret["outcome"] == "refused" and ret["result"] is False
    assert "nothing done" in ret["reason"]
    assert c.drained("mail1") == set() and c.drained("mail2") == set()


def test_status_table(rem_cluster):
    out = rem_cluster.run("mailha.status")
    # Salt's runner convention: salt-run prints data with the outputter; RunnerClient keeps both
    assert out["outputter"] == "mailha_status", out
    ret = out["data"]
    rows = ret["nodes"]
    assert rows["mail1"]["health"] == "ok" and rows["mail1"]["mx"] == "yes"
    assert rows["mail1"]["drained_by"] == "-"
    assert rows["lb1"]["roles"] == "lb"
    from salt_mailha.output import mailha_status

    text = mailha_status.output(ret)  # what salt-run prints
    assert ["node", "roles", "health"] in [line.split()[:3] for line in text.splitlines()], text
    assert rem_cluster.named.secret not in repr(ret) + text


def test_flapping_node_is_bounded(rem_cluster, event_listener):
    """mail2's IMAP flaps 6 times in about 40 s (unbounded, that is up to 12 drains and restores):
    at most max_actions (4) actions."""
    c = rem_cluster
    since = time.time()
    imap = c.services["mail2"]["imap"]
    try:
        for _ in range(6):
            imap.stop()
            time.sleep(3)
            imap.start()
            time.sleep(3)
    finally:
        if not imap.running:
            imap.start()
    time.sleep(5)  # let the last reactions finish
    actions = remediation_events(event_listener, c.master, "mail2", since, OUTCOMES)
    assert 1 <= len(actions) <= 4, [(e.tag, e.data.get("reason")) for e in actions]
    limited = remediation_events(event_listener, c.master, "mail2", since, ("noop",))
    assert any("(rate limit)" in e.data["reason"] or "(hysteresis)" in e.data["reason"]
               for e in limited), [e.data["reason"] for e in limited]
    c.run("mailha.undrain", "mail2")  # leave the site in service for whoever runs next
    assert c.drained("mail2") == set() and c.mx_of("mail2")


def test_presence_change_rechecks_only_known_real_servers(rem_cluster, event_listener):
    """The master's presence event (a minion went silent) triggers a re-check from the
    balancers; ids that are not real servers of the site are skipped."""
    import salt.utils.event

    c = rem_cluster
    since = time.time()
    with salt.utils.event.get_master_event(c.master.config, c.master.config["sock_dir"],
                                           listen=False) as bus:
        bus.fire_event({"new": [], "lost": ["mail2", "ghost", "lb2"]}, "salt/presence/change")
    ev = wait_event(event_listener, c.master, "mail2", "noop", since)
    assert ev["source"] == "presence" and ev["reporter"] is None
    assert ev["reason"].startswith("mail2 is healthy and in service")
    time.sleep(2)
    others = [e.tag for e in event_listener.get_events(
        [(c.master.id, "mailha/remediation/*")], after_time=since) if "/mail2/" not in e.tag]
    assert others == []


def test_no_secret_in_logs_or_events(rem_cluster, event_listener):
    c = rem_cluster
    secret = c.named.secret
    since = time.time()
    c.run("mailha.remediate", "mail1", reporter="lb1")
    c.run("mailha.drain", "mail1", test=True)
    c.run("mailha.status")
    wait_event(event_listener, c.master, "mail1", "planned", since)
    events = event_listener.get_events([(c.master.id, "mailha/remediation/*")], after_time=since)
    assert len(events) >= 2
    assert all(secret not in repr(e.data) for e in events)
    logs = [c.master.config["log_file"]] + [m.config["log_file"] for m in c.minions.values()]
    for path in logs:
        with open(path, errors="replace") as fh:
            assert secret not in fh.read(), path


def test_only_the_acting_master_acts(rem_cluster):
    """With ``mailha_acting_master`` naming another master, this one only plans."""
    import salt.runner

    c = rem_cluster
    opts = dict(c.master.config.copy(), mailha_acting_master="other-master")
    ret = salt.runner.RunnerClient(opts).cmd("mailha.remediate", arg=["mail1"],
                                             kwarg={"reporter": "lb1"}, print_event=False)
    assert ret["test"] is True
    assert ret["note"] == ("master rem-master is not the acting master (other-master); "
                           "plan only")
    assert c.drained("mail1") == set() and c.mx_of("mail1")
