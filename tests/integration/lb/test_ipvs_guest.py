"""Real IPVS with direct routing, in ONE User-mode Linux guest (Debian testing's kernel, run by
salt_mailha_lab.uml; the host kernel has none). Inside: netns client/director/r1/r2 on a bridge. Our mailha_dr state makes r1/r2 DR real
servers; our mailha_ipvs module (through Salt's loader, host venv over 9p) reads the table, drains
and undrains; real HTTP from the client reaches the real servers directly. Then ldirectord, with
the ldirectord.cf our renderer makes, owns the table and drain/undrain go through its
maintenancedir without a fight; on the ``sh`` service (schedflags=sh-fallback, rendered for
quiescent sites) a client whose source hashes to a drained real server is served by the other one.
The guest-side driver is ipvs_guest.py."""
import json
import shutil
import sys
from pathlib import Path

import pytest
import yaml

from tests.integration.lb.conftest import lab_pillar
from tests.support import uml_ipvs

pytestmark = [pytest.mark.integration, pytest.mark.ipvs]

HERE = Path(__file__).resolve().parent
NET = "10.99.88"
VIP, R1, R2 = f"{NET}.21", f"{NET}.17", f"{NET}.18"

GUEST_SH = """\
set -x
echo "nameserver 127.0.0.1" > /etc/resolv.conf   # guest overlay only: no DNS waits (no NIC)
ip link add br0 type bridge; ip link set br0 up
for spec in cl:10 dir:13 r1:17 r2:18; do
  ns=${{spec%%:*}}; host=${{spec##*:}}
  ip netns add $ns
  ip link add v-$ns type veth peer name eth0 netns $ns
  ip link set v-$ns master br0 up
  ip -n $ns link set eth0 up
  ip -n $ns addr add {net}.$host/24 dev eth0
done
ip -n dir link set lo up; ip -n cl link set lo up
ip -n dir addr add {vip}/24 dev eth0           # what keepalived does on the MASTER
for ns in r1 r2; do
  mkdir -p /tmp/www-$ns; echo $ns > /tmp/www-$ns/index.html; echo ldirectord > /tmp/www-$ns/ldirectord.txt
  ip netns exec $ns busybox httpd -p 80 -h /tmp/www-$ns
  ip netns exec $ns busybox httpd -p 8080 -h /tmp/www-$ns
done
{python} -B {driver} {share} {share}/pillar.yaml
"""


@pytest.fixture(scope="module")
def guest_results(tmp_path_factory):
    ok, reason = uml_ipvs.available()
    if not ok:
        pytest.fail(reason)
    if not shutil.which("ldirectord") or not shutil.which("ipvsadm"):
        pytest.fail(f"{uml_ipvs.SKIP_REASON}; needs ipvsadm and ldirectord on the host "
                    "(scripts/setup-host.sh)")
    share = tmp_path_factory.mktemp("ipvs-guest")
    pillar = lab_pillar(NET, ldirectord={"checkinterval": 1, "checktimeout": 10, "failurecount": 1})
    pillar["mailha"]["services"] = {"http": {"vip": "mail", "port": 80, "check": "http", "scheduler": "rr"},
                                    "web": {"vip": "mail", "port": 8080, "check": "http", "scheduler": "sh"}}
    (share / "pillar.yaml").write_text(yaml.safe_dump(pillar, sort_keys=False))
    (share / "guest.sh").write_text(GUEST_SH.format(
        net=NET, vip=VIP, python=sys.executable, driver=HERE / "ipvs_guest.py", share=share))
    vm = uml_ipvs.IpvsGuest().build()
    result = vm.run(share, share / "guest.sh", timeout=600)
    path = share / "results.json"
    if not path.exists():
        pytest.fail(f"guest wrote no results (UML rc={result.returncode}, {result.seconds:.0f}s)\n"
                    f"{result.console[-3000:]}\n{result.guest_log[-5000:]}")
    data = json.loads(path.read_text())
    if "error" in data:
        pytest.fail(f"guest driver failed:\n{data['error']}\n{result.guest_log[-5000:]}")
    print(f"guest run: {result.seconds:.1f}s wall")
    return {s["name"]: s for s in data["steps"]}


def test_dr_state_makes_real_servers(guest_results):
    for node in ("mail1", "mail2"):
        test, first, again = guest_results[f"dr-{node}"]["runs"]
        assert test["result"] is None and "lo" in test["changes"]
        assert first["result"] is True and "lo" in first["changes"]
        assert (again["result"], again["changes"]) == (True, [])
        live = guest_results[f"dr-{node}-live"]
        assert VIP + "/32" in live["lo"] and live["arp_ignore"] == "1"


def test_direct_routing_and_drain_without_ldirectord(guest_results):
    before = guest_results["direct-before"]
    assert set(before["who"]) == {"r1", "r2"}, before  # answered by the real servers, round robin
    (http,) = before["table"]
    assert http["key"] == f"tcp:{VIP}:80"
    assert {r["address"]: (r["forward"], r["weight"]) for r in http["real_servers"]} == {
        R1: ("dr", 1), R2: ("dr", 1)}
    assert guest_results["direct-drain"]["ret"]["drained"] == [f"tcp:{VIP}:80 {R1}:80"]
    drained = guest_results["direct-drained"]
    assert drained["table"] == {f"tcp:{VIP}:80": {R1: 0, R2: 1}}
    assert set(drained["who"]) == {"r2"}, drained  # new connections no longer reach r1
    conns = {r["address"]: r["stats"]["conns"] for r in drained["stats"][0]["real_servers"]}
    assert conns[R1] > 0 and conns[R2] > conns[R1]
    zero = guest_results["direct-set-weight-0"]
    assert zero["ret"] == {"service": f"tcp:{VIP}:80", "real": f"{R1}:80", "old": 0, "new": 0}
    assert zero["table"][f"tcp:{VIP}:80"][R1] == 0  # 0 stays 0
    assert guest_results["direct-undrain"]["ret"]["via"] == "ipvsadm"
    undrained = guest_results["direct-undrained"]
    assert undrained["table"][f"tcp:{VIP}:80"] == {R1: 1, R2: 1}
    assert set(undrained["who"]) == {"r1", "r2"}


def test_diff_against_model(guest_results):
    assert guest_results["diff"]["diff"] == []


def test_argument_errors_touch_nothing(guest_results):
    errors = guest_results["errors"]["errors"]
    assert "invalid argument weight: 70000 is out of range" in errors["bad-weight"]
    assert "invalid argument vip: '10.99.88' is not an IPv4/IPv6 address" in errors["bad-vip"]
    assert f"{NET}.99:80 is not a real server of tcp:{VIP}:80" in errors["not-real"]
    assert f"no tcp service {VIP}:81" in errors["no-service"]
    assert guest_results["errors"]["table"] == {f"tcp:{VIP}:80": {R1: 1, R2: 1}, f"tcp:{VIP}:8080": {R1: 1, R2: 1}}


def test_ldirectord_drain_through_maintenancedir(guest_results):
    up = guest_results["ld-up"]
    assert up["up"] and up["table"][f"tcp:{VIP}:80"] == {R1: 1, R2: 1}, up
    assert set(up["who"]) == {"r1", "r2"}
    drain = guest_results["ld-drain"]
    assert drain["files"] == [f"{R1}:80"]
    drained = guest_results["ld-drained"]
    assert drained["table"][f"tcp:{VIP}:80"] == {R1: 0, R2: 1}, drained  # ldirectord agrees
    assert set(drained["who"]) == {"r2"}
    undrain = guest_results["ld-undrain"]
    assert undrain["files"] == [] and undrain["ret"]["via"] == "ldirectord"
    assert undrain["ret"]["pending"] == [], undrain  # ldirectord restored the weight itself
    # undrain reloaded ldirectord; the reload left mail1 at 0 for its check to restore, and did
    # not hand it new connections before checking it (readdquiescent=no does: 1, 0, then 1)
    reload = undrain["reload"]
    assert reload and "Reloading" in reload[0], reload
    assert not [line for line in reload if f"real server: {R1}:80 " in line], reload
    undrained = guest_results["ld-undrained"]
    assert undrained["seen"] == [{R1: 1, R2: 1}], undrained  # restored for good, no reload flap
    assert set(undrained["who"]) == {"r1", "r2"}


def test_keepalived_readiness_check_reads_the_real_table(guest_results):
    """The script keepalived tracks (mailha_ipvs_ready) on real ipvsadm output: not ready while the
    table is empty, ready once ldirectord filled every service, still ready with one server
    drained (the other serves)."""
    assert guest_results["ready-empty"]["rc"] == 1, guest_results["ready-empty"]
    assert guest_results["ld-up"]["ready"] == 0, guest_results["ld-up"]
    assert guest_results["ld-drained"]["ready"] == 0, guest_results["ld-drained"]


def test_undrain_restores_a_drain_ldirectord_never_saw(guest_results):
    """ldirectord was stopped across drain and undrain (as when one of its checks blocks): it never
    marked mail1 down, so on its own it would leave the weight at 0 for good. undrain reloads it."""
    unseen = guest_results["ld-unseen-drain"]
    assert unseen["ret"]["reloaded"] == [unseen["ldirectord"]], unseen
    assert unseen["restored"] and unseen["table"][f"tcp:{VIP}:80"] == {R1: 1, R2: 1}, unseen


def test_undrain_of_an_old_drain_leaves_ldirectord_alone(guest_results):
    """A drain older than ldirectord's check round has been seen: undrain only removes the file,
    ldirectord restores the weight itself, and no reload restarts its checks."""
    old = guest_results["ld-old-drain"]
    assert old["ret"]["reloaded"] == [] and old["ret"]["pending"] == [], old
    assert old["reloads"] == 0 and old["table"][f"tcp:{VIP}:80"] == {R1: 1, R2: 1}, old


def test_sh_client_of_a_drained_server_is_served_by_the_other(guest_results):
    """ldirectord (quiescent) drains the server the client's address hashes to: weight 0 in the
    kernel table, and the same client's new connections reach the other server instead of timing
    out (sh-fallback); after the undrain the client is back on its hashed server."""
    before = guest_results["sh-before"]
    (hashed,) = set(before["who"])  # source hashing: one client, one server
    other = {"r1": "r2", "r2": "r1"}[hashed]
    address = {"r1": R1, "r2": R2}
    drained = guest_results["sh-drained"]
    assert drained["table"] == {address[hashed]: 0, address[other]: 1}, drained
    assert drained["who"] == [other] * len(drained["who"]), drained
    assert before["schedflags"] == ["sh-fallback"], before  # what ldirectord gave the kernel
    undrained = guest_results["sh-undrained"]
    assert undrained["table"] == {R1: 1, R2: 1}
    assert set(undrained["who"]) == {hashed}
