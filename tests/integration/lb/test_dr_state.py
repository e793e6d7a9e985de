"""mailha_dr.configured through real ``salt-call --local`` run inside a network namespace (a db
real server on a netns LAN): test=True predicts and changes nothing; apply puts the db VIP on lo
as lo:0 and sets the ARP sysctls in that namespace only (so the node no longer answers ARP for
the VIP), writes the reboot files under a scratch root; a second apply and test=True report no
changes; a wrong-tier VIP on lo is removed."""
import json
import pathlib

import pytest

from tests.integration.lb.conftest import LocalMinion, lab_pillar
from tests.support.daemon import wait_until
from tests.support.netns import Lan

pytestmark = pytest.mark.integration

NET = "10.99.77"
DB_VIP, MAIL_VIP, DB1 = f"{NET}.22", f"{NET}.21", f"{NET}.15"
FILES = {"etc/network/interfaces.d/mailha-lo0": 0o644, "etc/sysctl.d/90-mailha-dr.conf": 0o644}


@pytest.fixture
def node(netns_ok, tmp_path):
    lan = Lan("dr", bridge_address=f"{NET}.254/24")
    lan.add_host("db1", f"{DB1}/24")
    # mailha_live: the scratch root alone is a rehearsal (files only); this namespace is disposable
    minion = LocalMinion(tmp_path, lab_pillar(NET), "db1", wrap=lambda argv: lan.argv("db1", argv), live=True)
    root = minion.root

    def apply(test=False):
        return minion.state("mailha_dr.configured", test=test, name="mailha-dr")

    def live():
        lo = json.loads(lan.run("db1", ["ip", "-j", "addr", "show", "dev", "lo"]).stdout)
        addrs = {(a["local"], a["prefixlen"], a.get("label")) for a in lo[0]["addr_info"]
                 if a["family"] == "inet"}
        sysctl = {k: lan.run("db1", ["cat", f"/proc/sys/net/ipv4/conf/{k}"]).stdout.strip()
                  for k in ("all/arp_ignore", "all/arp_announce", "lo/arp_ignore", "lo/arp_announce")}
        return addrs, sysctl

    def files():
        return {str(p.relative_to(root)): p.stat().st_mode & 0o777 for p in root.rglob("*")
                if p.is_file()}

    try:
        yield apply, live, files, lan
    finally:
        lan.close()


def host_sysctls():
    return {k: pathlib.Path(f"/proc/sys/net/ipv4/conf/{k}").read_text() for k in
            ("all/arp_ignore", "all/arp_announce")}


def test_dr_state_in_netns(node):
    apply, live, files, lan = node
    host_before = host_sysctls()
    fresh = live()

    ret = apply(test=True)
    assert ret["result"] is None, ret
    assert ret["changes"]["lo"] == {"old": ["127.0.0.1"], "new": ["10.99.77.22", "127.0.0.1"]}
    assert ret["changes"]["net.ipv4.conf.all.arp_ignore"] == {"old": "0", "new": "1"}
    assert set(ret["changes"]) >= {"/etc/network/interfaces.d/mailha-lo0",
                                   "/etc/sysctl.d/90-mailha-dr.conf"}
    assert "would add the db VIP 10.99.77.22/32 on lo as lo:0" in ret["comment"]
    assert live() == fresh and files() == {}, "test=True changed something"

    ret = apply()
    assert ret["result"] is True and ret["changes"], ret
    addrs, sysctl = live()
    assert (DB_VIP, 32, "lo:0") in addrs and not any(a[0] == MAIL_VIP for a in addrs)
    assert sysctl == {"all/arp_ignore": "1", "all/arp_announce": "2",
                      "lo/arp_ignore": "1", "lo/arp_announce": "2"}
    assert files() == FILES
    assert host_sysctls() == host_before, "the host namespace must not change"
    # what the sysctls are for: the node answers for its own address, never ARP for the VIP
    wait_until(lambda: lan.run("sw", ["ping", "-c1", "-W1", DB1], check=False).returncode == 0,
               timeout=10, what="client pings db1's own address")
    assert lan.run("sw", ["ping", "-c2", "-W1", DB_VIP], check=False).returncode != 0
    assert lan.neighbour(DB_VIP) is None

    for test in (False, True):
        ret = apply(test=test)
        assert (ret["result"], ret["changes"]) == (True, {}), ret
        assert "already a DR real server of 10.99.77.22 (lo:0)" in ret["comment"]

    # drift: the mail VIP (another tier's) on lo is predicted, then removed
    lan.run("db1", ["ip", "addr", "add", f"{MAIL_VIP}/32", "dev", "lo", "label", "lo:9"])
    before = live()
    ret = apply(test=True)
    assert ret["result"] is None and "remove the mail VIP 10.99.77.21/32 from lo" in ret["comment"]
    assert live() == before
    ret = apply()
    assert ret["result"] is True and (MAIL_VIP, 32, "lo:9") not in live()[0]
    assert (DB_VIP, 32, "lo:0") in live()[0]
