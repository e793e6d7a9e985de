"""Pure parts of the lab's User-mode Linux machines and nodes (lab/salt_mailha_lab/uml.py, UmlNode):
apt policy parsing, the private sources line, the kernel command line, the guest's agent and
units, the management console's wire format, NIC plans and the DR verdict of the drill."""
import ipaddress
import json
import pathlib
import random
import socket
import struct
import subprocess
import threading

import pytest

from salt_mailha.core.errors import CommandFailed, Refused
from salt_mailha.core.ipvs import parse_stats
from salt_mailha.core.model import load_site
from salt_mailha_lab import drill, uml
from salt_mailha_lab import pillar as labpillar
from salt_mailha_lab.lab import Lab
from salt_mailha_lab.nodes import UmlNode, interfaces_text, mac_for, nics_from_identity

# `apt-cache policy user-mode-linux libc6` with the lab's private testing configuration
# (captured 2026-12-02 on a Debian 12 host; the mirror's name replaced)
POLICY = """\
user-mode-linux:
  Installed: (none)
  Candidate: 7.2um1
  Version table:
     7.2um1 500
        500 http://mirror.lab.invalid/debian testing/main amd64 Packages
libc6:
  Installed: (none)
  Candidate: 2.43-7
  Version table:
     2.43-7 500
        500 http://mirror.lab.invalid/debian testing/main amd64 Packages
"""

# `ipvsadm -Ln --stats --exact` on the lab's UML directors after a drill round (captured
# 2026-12-02: lb1 held both VIPs, lb2 was the backup)
STATS_DR = """\
IP Virtual Server version 1.2.1 (size=256)
Prot LocalAddress:Port               Conns   InPkts  OutPkts  InBytes OutBytes
  -> RemoteAddress:Port
TCP  10.99.0.21:80                       3       15        0      912        0
  -> 10.99.0.17:80                       0        0        0        0        0
  -> 10.99.0.18:80                       3       15        0      912        0
TCP  10.99.0.21:443                      3       23        0     3209        0
  -> 10.99.0.17:443                      0        0        0        0        0
  -> 10.99.0.18:443                      3       23        0     3209        0
TCP  10.99.0.21:465                      4       31        0     3459        0
  -> 10.99.0.17:465                      1        4        0      240        0
  -> 10.99.0.18:465                      3       27        0     3219        0
TCP  10.99.0.21:587                      3       27        0     1410        0
  -> 10.99.0.17:587                      1        9        0      474        0
  -> 10.99.0.18:587                      2       18        0      936        0
TCP  10.99.0.21:993                      3       27        0     3171        0
  -> 10.99.0.17:993                      1        9        0     1061        0
  -> 10.99.0.18:993                      2       18        0     2110        0
TCP  10.99.0.21:995                      4       31        0     3379        0
  -> 10.99.0.17:995                      1        3        0      180        0
  -> 10.99.0.18:995                      3       28        0     3199        0
TCP  10.99.0.22:3306                     3       28        0     2504        0
  -> 10.99.0.15:3306                     2       18        0     1635        0
  -> 10.99.0.16:3306                     1       10        0      869        0
"""
STATS_IDLE = """\
IP Virtual Server version 1.2.1 (size=256)
Prot LocalAddress:Port               Conns   InPkts  OutPkts  InBytes OutBytes
  -> RemoteAddress:Port
TCP  10.99.0.21:80                       0        0        0        0        0
  -> 10.99.0.17:80                       0        0        0        0        0
  -> 10.99.0.18:80                       0        0        0        0        0
TCP  10.99.0.21:443                      0        0        0        0        0
  -> 10.99.0.17:443                      0        0        0        0        0
  -> 10.99.0.18:443                      0        0        0        0        0
TCP  10.99.0.21:465                      0        0        0        0        0
  -> 10.99.0.17:465                      0        0        0        0        0
  -> 10.99.0.18:465                      0        0        0        0        0
TCP  10.99.0.21:587                      0        0        0        0        0
  -> 10.99.0.17:587                      0        0        0        0        0
  -> 10.99.0.18:587                      0        0        0        0        0
TCP  10.99.0.21:993                      0        0        0        0        0
  -> 10.99.0.17:993                      0        0        0        0        0
  -> 10.99.0.18:993                      0        0        0        0        0
TCP  10.99.0.21:995                      0        0        0        0        0
  -> 10.99.0.17:995                      0        0        0        0        0
  -> 10.99.0.18:995                      0        0        0        0        0
TCP  10.99.0.22:3306                     0        0        0        0        0
  -> 10.99.0.15:3306                     0        0        0        0        0
  -> 10.99.0.16:3306                     0        0        0        0        0
"""
# the same table as if replies had come back through the director (NAT): OutPkts counted
STATS_NAT = STATS_DR.replace("   27        0     1410        0", "   27       25     1410     9120")


def test_parse_policy_takes_candidates_and_leaves_out_none():
    assert uml.parse_policy(POLICY) == {"user-mode-linux": "7.2um1", "libc6": "2.43-7"}
    gone = POLICY.replace("Candidate: 7.2um1", "Candidate: (none)")
    assert uml.parse_policy(gone) == {"libc6": "2.43-7"}


def test_sources_line_names_testing_and_the_archive_keyring():
    line = uml.sources_line("http://mirror.lab.invalid/debian")
    assert line == ("deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] "
                    "http://mirror.lab.invalid/debian testing main\n")
    with pytest.raises(Refused):
        uml.sources_line("http://a b")


def test_nic_args_skip_absent_networks_and_refuse_odd_tap_names():
    assert uml.nic_args(["mh-lb1-0", None, "mh-lb1-2"], ["52:54:0a:63:00:0d", None, None]) == [
        "vec0:transport=tap,ifname=mh-lb1-0,mac=52:54:0a:63:00:0d",
        "vec2:transport=tap,ifname=mh-lb1-2"]
    for bad in ("a,transport=raw", "x" * 16, "tap 0"):
        with pytest.raises(Refused):
            uml.nic_args([bad])


def test_machine_argv_runs_in_the_namespace_with_seccomp_hostfs_and_systemd(tmp_path):
    kernel = uml.Kernel(pathlib.Path("/k/linux.uml"), pathlib.Path("/k/mods/7.2.7"), "7.2.7", {})
    m = uml.Machine("lb1", kernel, tmp_path / "root", tmp_path / "st", taps=["mh-lb1-0"],
                    netns="mhlab-net")
    argv = m.argv()
    assert argv[:5] == ["ip", "netns", "exec", "mhlab-net", "/k/linux.uml"]
    for arg in ("seccomp=on", "rootfstype=hostfs", f"rootflags={tmp_path / 'root'}",
                "init=/lib/systemd/systemd", "umid=lb1", f"uml_dir={tmp_path / 'st' / 'uml'}",
                "vec0:transport=tap,ifname=mh-lb1-0"):
        assert arg in argv
    assert not m.running() and m.exec(["true"]) is None


def test_guest_files_agent_units_and_a_poweroff_on_ctrl_alt_del(tmp_path):
    root = tmp_path / "root"
    m = uml.Machine("lb1", None, root, tmp_path / "st")
    m.install_guest_files()
    compile((root / uml.AGENT_PATH).read_text(), "agent.py", "exec")
    units = root / "etc/systemd/system"
    assert (units / "sysinit.target.wants/mailha-uml-agent.service").readlink() == \
        pathlib.Path("/etc/systemd/system/mailha-uml-agent.service")
    assert (units / "ctrl-alt-del.target").readlink() == \
        pathlib.Path("/lib/systemd/system/poweroff.target")
    assert "Before=network-pre.target networking.service" in \
        (units / "mailha-uml-nics.service").read_text()
    assert (root / uml.SPOOL).stat().st_mode & 0o777 == 0o700
    m.install_guest_files()  # again: links replaced, not an error


def test_nic_rename_unit_renames_vector_nics_to_eth(tmp_path):
    """The unit's shell line, run against a fake /sys/class/net with an ``ip`` that records."""
    unit = uml.RENAME_UNIT
    line = next(li for li in unit.splitlines() if li.startswith("ExecStart="))
    script = line.split("-c '", 1)[1].rsplit("'", 1)[0].replace("$$", "$")
    sysnet = tmp_path / "sys"
    for dev in ("lo", "vec0", "vec1"):
        (sysnet / dev).mkdir(parents=True)
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "ip").write_text(f"#!/bin/sh\necho \"$@\" >> {tmp_path / 'calls'}\n")
    (fake / "ip").chmod(0o755)
    subprocess.run(["sh", "-c", script.replace("/sys/class/net", str(sysnet))], check=True,
                   env={"PATH": f"{fake}:/usr/bin:/bin"})
    assert (tmp_path / "calls").read_text().splitlines() == [
        "link set vec0 name eth0", "link set vec1 name eth1"]


def test_agent_runs_a_request_from_the_spool_and_answers_atomically(tmp_path):
    """The guest agent's own code, pointed at a temporary spool, answers Machine.exec's files."""
    spool = tmp_path / "spool"
    code = uml.AGENT.replace(f'"/{uml.SPOOL}"', repr(str(spool)))
    thread = threading.Thread(target=exec, args=(compile(code, "agent", "exec"), {}), daemon=True)
    thread.start()
    m = uml.Machine("t", None, tmp_path, tmp_path / "st")
    m.spool = spool
    m.running = lambda: True
    spool.mkdir(exist_ok=True)
    proc = m.exec(["sh", "-c", "cat; echo err >&2; exit 3"], check=False, input="secret-in",
                  timeout=10)
    assert (proc.returncode, proc.stdout, proc.stderr) == (3, "secret-in", "err\n")
    with pytest.raises(CommandFailed, match="exited 1 in UML t"):
        m.exec(["false"], timeout=10)
    assert not list(spool.iterdir())  # request and reply files are gone
    with pytest.raises(Refused):
        m.exec("rm -rf /")


def test_mconsole_speaks_the_uml_wire_format(tmp_path):
    sock = tmp_path / "mconsole"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(str(sock))
    seen = []

    def serve():
        data, peer = server.recvfrom(4096)
        seen.append(struct.unpack_from("<III", data) + (data[12:12 + seen_len(data)],))
        server.sendto(struct.pack("<III", 0, 1, 6) + b"Linux ", peer)
        server.sendto(struct.pack("<III", 0, 0, 5) + b"7.2.7", peer)

    def seen_len(data):
        return struct.unpack_from("<III", data)[2]

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    assert uml.mconsole(sock, "version") == "Linux 7.2.7"
    t.join(5)
    server.close()
    assert seen == [(0xCAFEBABE, 2, 7, b"version")]
    assert uml.mconsole(tmp_path / "nobody", "cad", timeout=0.5) is None


# ------------------------------------------------------------------ lab nodes
@pytest.fixture(scope="module")
def lab_pillar():
    return labpillar.lab_pillar(labpillar.load_example(), rng=random.Random(3))


def test_mac_is_stable_locally_administered_unicast_and_unique():
    macs = {mac_for(f"10.99.{n}.{h}") for n in range(2) for h in range(1, 255)}
    assert len(macs) == 2 * 254
    mac = mac_for("10.99.0.13")
    assert mac == "52:54:0a:63:00:0d"
    first = int(mac.split(":")[0], 16)
    assert first & 0b10 and not first & 0b01  # locally administered, unicast


def test_identity_gives_a_uml_node_its_addresses_and_one_default_route(lab_pillar):
    gw = "10.99.0.1"
    lb = nics_from_identity(Lab.identity(lab_pillar, gw, "lb1"))
    addrs = lab_pillar["mailha"]["nodes"]["lb1"]["addresses"]
    assert lb == [(0, addrs["public"], 24, gw), (1, addrs["private"], 24, None)]
    nets = list(lab_pillar["mailha"]["networks"].values())
    for index, address, _p, _g in lb:
        assert ipaddress.ip_address(address) in ipaddress.ip_network(nets[index])
    text = interfaces_text(lb)
    assert f"auto eth0\niface eth0 inet static\n    address {addrs['public']}/24\n" \
           f"    gateway {gw}\n" in text
    assert text.count("gateway") == 1


@pytest.mark.parametrize("nics,msg", [
    ([], "at least one site network"),
    ([(12, "10.99.0.3", 24, None)], "at most 10 networks"),
    ([(0, "10.99.0.3", 33, None)], "prefix length 33"),
], ids=["none", "bad-index", "bad-prefix"])
def test_nics_are_validated_before_they_reach_the_guest(nics, msg):
    with pytest.raises(CommandFailed, match=msg):
        nics_from_identity({"nics": nics})
    with pytest.raises(ValueError):
        nics_from_identity({"nics": [(0, "10.99.0.300", 24, None)]})


def test_uml_nodes_are_the_balancers_by_default(lab_pillar, tmp_path):
    assert Lab.uml_nodes(lab_pillar, "uml") == ["lb1", "lb2"]
    assert Lab.uml_nodes(lab_pillar, "container") == []
    with pytest.raises(CommandFailed, match="choose one of uml, container"):
        Lab.uml_nodes(lab_pillar, "vm")
    lab = Lab(run_dir=tmp_path, cache_dir=tmp_path / "cache")
    assert lab.balancers() == "uml"  # nothing up yet: the default


def test_lab_node_kind_follows_lab_json(tmp_path):
    lab = Lab(run_dir=tmp_path, cache_dir=tmp_path / "cache")
    kernel = uml.Kernel(pathlib.Path("/k/linux.uml"), pathlib.Path("/k/m"), "7.2.7",
                        {"user-mode-linux": "7.2um1"})
    (tmp_path / "lab.json").write_text(json.dumps({
        "balancers": "uml", "uml_nodes": ["lb1"], "uml_kernel": kernel.to_json()}))
    node = lab.node("lb1")
    assert (lab.balancers(), node.kind, lab.node("db1").kind) == ("uml", "uml", "container")
    assert node.kernel == kernel and node.leader() is None and not node.running()
    (tmp_path / "nodes/lb1").mkdir(parents=True)
    (tmp_path / "nodes/lb1/nics.json").write_text(json.dumps([[0, "10.99.0.13", 24, "10.99.0.1"],
                                                              [1, "10.99.1.13", 24, None]]))
    m = node.machine()
    assert m.taps == ["mh-lb1-0", "mh-lb1-1"] and m.netns == "mhlab-net"
    assert m.macs == ["52:54:0a:63:00:0d", "52:54:0a:63:01:0d"]
    assert m.root == tmp_path / "nodes/lb1/merged"


def test_uml_node_refuses_host_shares(tmp_path):
    node = UmlNode("lb1", tmp_path, tmp_path / "base")
    with pytest.raises(CommandFailed, match="cannot share host directories"):
        node.start(tmp_path / "log", binds=((tmp_path, "/srv"),))


# ------------------------------------------------------------------ drill: VIPs and DR
def test_vip_checks_speak_each_service_protocol(lab_pillar):
    site = load_site(lab_pillar)
    checks = {c.name: c.request for c in drill.build_checks(site, "pw", ipvs=True)}
    mail, db = site.vips["mail"].address, site.vips["db"].address
    assert checks["vip db mysql:3306"] == {"hosts": [db], "port": 3306, "kind": "sql_write",
                                           "user": "labdrill", "password": "pw",
                                           "database": "labdrill"}
    assert checks["vip mail https:443"]["kind"] == "http" and checks["vip mail https:443"]["tls"]
    assert checks["vip mail http:80"]["tls"] is False
    assert checks["vip mail imaps:993"]["expect"] == "* OK"
    assert checks["vip mail pop3s:995"]["expect"] == "+OK"
    assert checks["vip mail smtps:465"] == {"hosts": [mail], "port": 465,
                                            "kind": "tls_greeting", "expect": "220"}
    assert checks["vip mail submission:587"]["kind"] == "smtp"
    assert checks[drill.DR_CHECK] == {"kind": "dr"}


def test_dr_check_needs_the_balancers_and_is_skipped_only_without_ipvs(lab_pillar):
    site = load_site(lab_pillar)
    dr = next(c for c in drill.build_checks(site, ipvs=True) if c.name == drill.DR_CHECK)
    assert dr.needs == ("lb1", "lb2") and not dr.skip
    dr = next(c for c in drill.build_checks(site) if c.name == drill.DR_CHECK)
    assert dr.skip == drill.IPVS_REASON


@pytest.mark.parametrize("stats,ok,detail", [
    ({"lb1": STATS_DR, "lb2": STATS_IDLE}, True, "IPVS lb1 in 182 out 0; lb2 in 0 out 0"),
    ({"lb1": STATS_NAT}, False, "IPVS lb1 in 182 out 25"),
    ({"lb2": STATS_IDLE}, False, "IPVS lb2 in 0 out 0"),
    ({}, False, "no balancer's IPVS table could be read"),
], ids=["dr", "replies-through-director", "no-traffic-yet", "no-table"])
def test_dr_verdict_from_real_ipvsadm_stats(stats, ok, detail):
    assert drill.dr_verdict({k: parse_stats(v) for k, v in stats.items()}) == (ok, detail)


def test_vip_check_needs_a_streak_not_one_lucky_probe(lab_pillar, monkeypatch):
    """With a dead real server still in the rotation every other connection fails: the VIP
    check must not pass on the one that landed on the live server."""
    site = load_site(lab_pillar)
    check = next(c for c in drill.build_checks(site, ipvs=True) if c.name == "vip mail imaps:993")
    answers = iter([True, False, True, False, True, False])
    monkeypatch.setattr(drill, "probe", lambda req: {"ok": next(answers), "detail": "x"})
    assert drill.evaluate(check, site, "mail1") == (False, "failed after 1 in a row: x")
    answers = iter([True] * drill.VIP_STREAK)
    assert drill.evaluate(check, site, "mail1") == (True, "x")
    # other checks still need one passing probe
    ldap = next(c for c in drill.build_checks(site) if c.name == "ldap write on a server")
    answers = iter([True])
    assert drill.evaluate(ldap, site, "mail1") == (True, "x")
