"""A flood of health events about one node: a bounded number of re-checks, every report
accounted for, and the node ends as its real state says (real master, minions, named)."""
import time

import pytest

from tests.integration.remediation import cluster
from tests.support.daemon import wait_until

pytestmark = pytest.mark.integration

BURST = 300


def fire_burst(c, node, statuses):
    """Beacon-shaped reports from lb1 on the master bus, as the master receives a beacon's."""
    import salt.utils.event

    with salt.utils.event.get_master_event(c.master.config, c.master.config["sock_dir"],
                                           listen=False) as bus:
        for i, status in enumerate(statuses):
            bus.fire_event({"id": "lb1", "node": node, "status": status, "previous": "unknown",
                            "services": {"imap": {"status": status, "detail": f"burst {i}"}},
                            "site": "remtest"},
                           f"salt/beacon/lb1/mailha_health/mailha/health/{node}/{status}")


def _real(report):
    return not any(str(s.get("detail", "")).startswith("burst ")
                   for s in report.data.get("services", {}).values())


def settle(listener, master, node, since, status, timeout=180):
    """Wait until both balancers' own beacons reported ``node`` ``status`` and every report
    about ``node`` since ``since`` got its runner answer; ``(reports, answers, decisions)``."""
    def collect():
        reports = listener.get_events(
            [(master.id, f"salt/beacon/*/mailha_health/mailha/health/{node}/*")], after_time=since)
        answers = [e.data["return"] for e in listener.get_events(
            [(master.id, "salt/run/*/ret")], after_time=since)
            if e.data.get("fun") == "runner.mailha.remediate"
            and isinstance(e.data.get("return"), dict) and e.data["return"].get("node") == node]
        decisions = [e.data for e in listener.get_events(
            [(master.id, f"mailha/remediation/{node}/*")], after_time=since)]
        return reports, answers, decisions

    def done():
        reports, answers, _ = collect()
        real = {r.data["id"] for r in reports if _real(r) and r.data["status"] == status}
        return real == {"lb1", "lb2"} and len(reports) >= BURST and len(answers) == len(reports)

    wait_until(done, timeout, interval=0.5, what=f"a runner answer to every report about {node}")
    time.sleep(1)  # a decision event may trail its runner's return by a few milliseconds
    return collect()


def check_accounting(reports, answers, decisions):
    """Every report reached the runner once; it either re-checked or was folded into a
    re-check that counted it; re-checks stay far below the reports."""
    folded = [a for a in answers if a["outcome"] == "coalesced"]
    rechecks = decisions
    assert len(answers) == len(reports)
    # a report either re-checked or was folded (a re-check held back by the hysteresis looks
    # again as source "hysteresis": the runner's own follow-up, which may be folded too)
    own = [d for d in rechecks if d.get("source") == "event"]
    folded_reports = [a for a in folded if a["source"] == "event"]
    assert len(own) + len(folded_reports) == len(reports), (len(own), len(folded), len(reports))
    assert sum(d.get("folded", 0) for d in rechecks) == len(folded)
    assert 1 <= len(rechecks) <= BURST // 10, [(d["outcome"], d["folded"]) for d in rechecks]
    assert all(a["reason"].endswith("this report is folded into the queued one") for a in folded)
    return rechecks


def test_burst_of_reports_ends_drained_then_restored(rem_cluster, event_listener):
    c = rem_cluster
    imap = c.services["mail2"]["imap"]
    since = time.time()
    imap.stop()
    try:
        # the flood says up and down in turn, its last word "down" (and mail2 is down)
        fire_burst(c, "mail2", ["up", "down"] * (BURST // 2))
        reports, answers, decisions = settle(event_listener, c.master, "mail2", since, "down")
        rechecks = check_accounting(reports, answers, decisions)
        assert [d["outcome"] for d in rechecks].count("drained") == 1, rechecks
        wait_until(lambda: c.drained("mail2") == {"lb1", "lb2"} and not c.mx_of("mail2"), 30,
                   what="mail2 drained on both balancers and its MX withdrawn")
    finally:
        since = time.time()
        imap.start()
    # and back: the flood's last word "up" (and mail2 is up again)
    fire_burst(c, "mail2", ["down", "up"] * (BURST // 2))
    reports, answers, decisions = settle(event_listener, c.master, "mail2", since, "up")
    rechecks = check_accounting(reports, answers, decisions)
    wait_until(lambda: c.drained("mail2") == set() and c.mx_of("mail2"), 60,
               what="mail2 restored on both balancers and its MX back")
    restored = [d for d in rechecks if d["outcome"] == "restored"]
    assert len(restored) == 1 and restored[0]["reason"].endswith(
        "restoring it on lb1, lb2 and restoring its MX"), [d["reason"] for d in rechecks]
    for lb in ("lb1", "lb2"):  # ldirectord's part, for the tests that look at weights next
        cluster.ldirectord_restores(c.roots, lb, cluster.node_address(c.pillar, "mail2"))


def test_plan_only_recheck_held_by_hysteresis_returns_the_plan(rem_cluster):
    """test=True on a node drained moments ago: the hysteresis plan comes back at once; the
    runner neither waits for the hold nor follows up with a real (acting) re-check."""
    c = rem_cluster
    imap = c.services["mail2"]["imap"]
    imap.stop()
    try:
        wait_until(lambda: c.drained("mail2") == {"lb1", "lb2"}, 30, what="mail2 drained")
    finally:
        imap.start()
    try:
        ret = c.run("mailha.remediate", "mail2", test=True)
        # the plan of this call (hysteresis; or, on a loaded machine where the reactor got there
        # first, in service or the rate limit), never the result of an acting follow-up
        assert ret["test"] is True and ret["source"] == "event", ret
        assert ret["outcome"] in ("noop", "planned"), ret
    finally:
        # leave mail2 in service (the rate limit may hold its automatic restore back)
        ret = c.run("mailha.undrain", "mail2")
        for lb in ("lb1", "lb2"):
            cluster.ldirectord_restores(c.roots, lb, cluster.node_address(c.pillar, "mail2"))
    assert ret["outcome"] == "restored", ret
    assert c.drained("mail2") == set() and c.mx_of("mail2")


HOSTILE = ["mail1; reboot", "mail1\n      - fun: cmd.run", "{{ 7 * 7 }}", {"node": "mail1"},
           "../../etc/passwd"]


def test_hostile_event_fields_reach_the_runner_only_as_refused_data(rem_cluster, event_listener):
    """Beacon-shaped events with hostile node ids go through the reactor's direct runner call
    as plain data: each one refused by the runner, nothing drained, no DNS update."""
    import salt.utils.event

    c = rem_cluster
    since = time.time()
    updates_before = c.named.applied_updates()
    with salt.utils.event.get_master_event(c.master.config, c.master.config["sock_dir"],
                                           listen=False) as bus:
        for node in HOSTILE:
            bus.fire_event({"id": "lb1", "node": node, "status": "down"},
                           "salt/beacon/lb1/mailha_health/mailha/health/x/down")
    def refused_events():
        return [e.data for e in event_listener.get_events(
            [(c.master.id, "mailha/remediation/invalid/refused")], after_time=since)]

    wait_until(lambda: len(refused_events()) >= len(HOSTILE), 60, what="every event refused")
    time.sleep(1)
    refused = refused_events()
    assert len(refused) == len(HOSTILE), refused
    assert all(r["result"] is False and r["reason"].endswith("is not a node id (lower-case "
                                                            "letters, digits and '-'); nothing done")
               for r in refused), [r["reason"] for r in refused]
    assert c.drained("mail1") == set() and c.drained("mail2") == set()
    assert c.named.applied_updates() == updates_before
