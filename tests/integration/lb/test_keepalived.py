"""keepalived from Debian on two netns "balancers", configured by our renderer: both VIPs on
lb1; lb1 frozen or its cable cut -> both on lb2; lb1 back -> it preempts. The notify hook we
render fires one event per transition (a recorder stands in for salt-call)."""
import os
import shutil
import signal

import pytest

from salt_mailha.core import lb
from salt_mailha.core.model import load_site
from tests.integration.lb.conftest import lab_pillar
from tests.support.daemon import Daemon, wait_until
from tests.support.netns import Lan

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not shutil.which("keepalived"), reason="keepalived missing: run scripts/setup-host.sh"),
]

NET = "10.99.77"
VIPS = {f"{NET}.21", f"{NET}.22"}


@pytest.fixture(params=[False, True], ids=["multicast", "unicast"])
def pair(request, netns_ok, tmp_path):
    site = load_site(lab_pillar(NET, keepalived={"advert_int": 0.1, "vrrp_version": 3,
                                                 "unicast": request.param}))
    lan = Lan("ka", bridge_address=f"{NET}.254/24")  # the switch namespace is the client
    daemons = {}
    try:
        for name in ("lb1", "lb2"):
            node = site.node(name)
            lan.add_host(name, f"{node.address('public')}/24")
            d = tmp_path / name
            d.mkdir()
            recorder = d / "salt-call"
            recorder.write_text(f'#!/bin/sh\necho "$*" >> {d}/events\n')
            hook = d / "notify.sh"
            hook.write_text(lb.render_keepalived_notify(site, node, salt_call=str(recorder)))
            # the readiness check reads this balancer's IPVS table from d/table (the host kernel
            # has no IPVS; the real ipvsadm run of the check is in test_ipvs_guest.py); no table
            # yet: not ready, as a balancer whose ldirectord has not filled its table
            ipvsadm = d / "ipvsadm"
            ipvsadm.write_text(f"#!/bin/sh\nexec cat {d}/table\n")
            ready = d / "ipvs-ready"
            ready.write_text(lb.render_keepalived_ipvs_ready(site, node, ipvsadm=str(ipvsadm)))
            conf = d / "keepalived.conf"
            conf.write_text(lb.render_keepalived_conf(site, node, notify_script=str(hook),
                                                      ready_script=str(ready)))
            assert ("unicast_peer" in conf.read_text()) is site.keepalived.unicast
            for f in (recorder, hook, ipvsadm, ready):
                f.chmod(0o755)
            daemons[name] = Daemon(name, lan.argv(name, [
                "keepalived", "-n", "-l", "-D", "-P", "-G", "-f", conf, "-p", d / "ka.pid",
                "-r", d / "vrrp.pid", "-c", d / "chk.pid"]), d / "keepalived.log").start()
        yield lan, daemons, tmp_path, site
    finally:
        for dmn in daemons.values():
            if dmn.running():  # thaw the whole group (main + VRRP child) before stopping it
                os.killpg(dmn.pid, signal.SIGCONT)
            dmn.stop()
        lan.close()


def holder(lan):
    """Which balancer holds which VIPs right now."""
    return {name: lan.addresses(name) & VIPS for name in ("lb1", "lb2")}


def wait_holder(lan, daemons, master, what):
    other = "lb2" if master == "lb1" else "lb1"
    try:
        wait_until(lambda: holder(lan) == {master: VIPS, other: set()}, timeout=20,
                   interval=0.05, what=what)
    except TimeoutError:
        raise AssertionError(f"{what}: {holder(lan)}\n" + "\n".join(
            d.log()[-2000:] for d in daemons.values())) from None


def events(tmp_path, name):
    path = tmp_path / name / "events"
    return path.read_text().splitlines() if path.exists() else []


def client_sees(lan, host):
    """Every VIP answers the client's ping from ``host``'s MAC (GARP moved the neighbour entry)."""
    mac = lan.mac(host)
    for vip in VIPS:
        if lan.run("sw", ["ping", "-c1", "-W1", vip], check=False).returncode != 0:
            return False
        if lan.neighbour(vip) != mac:
            return False
    return True


def test_failover_and_preempt(pair):
    lan, daemons, tmp_path, _site = pair
    wait_holder(lan, daemons, "lb1", "both VIPs on lb1 after election")
    wait_until(lambda: client_sees(lan, "lb1"), timeout=10, what="client reaches VIPs at lb1")
    wait_until(lambda: len(events(tmp_path, "lb1")) >= 2, timeout=10, what="lb1 master events")
    assert {e.split()[2] for e in events(tmp_path, "lb1")} >= {
        "mailha/keepalived/mail/master", "mailha/keepalived/db/master"}

    # a hung balancer (both keepalived processes frozen) loses the VIPs
    os.killpg(daemons["lb1"].pid, signal.SIGSTOP)
    # frozen lb1 cannot remove its addresses; what counts is that lb2 took them and the client
    # now reaches them at lb2's MAC
    wait_until(lambda: holder(lan)["lb2"] == VIPS, timeout=20, interval=0.05,
               what="VIPs on lb2 after lb1 froze")
    wait_until(lambda: client_sees(lan, "lb2"), timeout=10, what="client reaches VIPs at lb2")
    wait_until(lambda: {"mailha/keepalived/mail/master", "mailha/keepalived/db/master"} <= {
        e.split()[2] for e in events(tmp_path, "lb2")}, timeout=10, what="lb2 master events")
    os.killpg(daemons["lb1"].pid, signal.SIGCONT)
    wait_holder(lan, daemons, "lb1", "lb1 preempts after thawing")

    # a pulled cable: lb2 takes over; plugged back: lb1 preempts again
    lan.cut("lb1")
    wait_until(lambda: holder(lan)["lb2"] == VIPS, timeout=20, interval=0.05,
               what="VIPs on lb2 after lb1's link was cut")
    wait_until(lambda: client_sees(lan, "lb2"), timeout=10, what="client reaches VIPs at lb2")
    lan.restore("lb1")
    wait_holder(lan, daemons, "lb1", "lb1 preempts after its link is back")
    wait_until(lambda: client_sees(lan, "lb1"), timeout=10, what="client back at lb1")
    assert all(e.split()[3] in ("node=lb1", "node=lb2") for e in events(tmp_path, "lb1"))


def ipvs_table(site, weight=1, dead_port=None):
    """``ipvsadm -Ln`` text of a balancer whose ldirectord filled the table: every service of the
    pillar, its real servers at ``weight`` (0 for every server of ``dead_port``)."""
    out = ["IP Virtual Server version 1.2.1 (size=4096)",
           "Prot LocalAddress:Port Scheduler Flags",
           "  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn"]
    for svc in site.services:
        vip = site.vips[svc.vip]
        out.append(f"TCP  {vip.address}:{svc.port} {svc.scheduler}")
        for n in site.real_servers(vip.name):
            w = 0 if svc.port == dead_port else weight
            out.append(f"  -> {n.address(vip.network)}:{svc.port}      Route   {w}      0          0")
    return "\n".join(out) + "\n"


def test_a_balancer_that_cannot_forward_does_not_hold_the_vips(pair):
    """lb1 (first in the pillar) takes and keeps the VIPs only while its IPVS table holds every
    service with a live real server: a balancer back from a power cut, before ldirectord's first
    checks, would otherwise preempt into an empty table."""
    lan, daemons, tmp_path, site = pair
    (tmp_path / "lb2" / "table").write_text(ipvs_table(site))
    wait_holder(lan, daemons, "lb2", "the VIPs on lb2, the only ready balancer")
    (tmp_path / "lb1" / "table").write_text(ipvs_table(site))
    wait_holder(lan, daemons, "lb1", "lb1 preempts once its table is ready")
    # every server of one service at weight 0 on lb1 only (lb1 lost them; lb2 still reaches them)
    (tmp_path / "lb1" / "table").write_text(ipvs_table(site, dead_port=site.services[0].port))
    wait_holder(lan, daemons, "lb2", "the VIPs move to lb2, which can still forward")
