"""Pure parts of the lab's VM nodes (salt_mailha/lab/vm.py): module order from real modinfo,
initramfs archive, NIC plan, qemu command line, agent protocol, identity share."""
import gzip
import ipaddress
import json
import pathlib
import random
import shutil
import subprocess

import pytest
import yaml

from salt_mailha.core.errors import CommandFailed, Refused
from salt_mailha.lab import pillar as labpillar
from salt_mailha.lab import vm
from salt_mailha.lab.lab import Lab

MODINFO = pathlib.Path(__file__).parent / "data" / "lab" / "modinfo"


# ------------------------------------------------------------------ kernel modules
def captured_depends(name):
    """``depends=`` of a module from the .modinfo sections captured from Debian's 6.1 kernel
    (``objcopy -O binary --only-section=.modinfo <module>.ko``)."""
    return vm.modinfo_depends((MODINFO / f"{name}.modinfo").read_bytes())


@pytest.mark.parametrize("name,deps", [
    ("ip_vs_sh", ["ip_vs"]),
    ("ip_vs", ["nf_conntrack", "nf_defrag_ipv6", "libcrc32c"]),
    ("ext4", ["jbd2", "mbcache", "crc16"]),
    ("crc32c_generic", []),
], ids=["scheduler", "ip_vs", "ext4", "no-depends"])
def test_modinfo_depends_from_real_ko(name, deps):
    assert sorted(captured_depends(name)) == sorted(deps)


def test_module_order_puts_dependencies_and_soft_dependencies_first():
    order = vm.module_order(["ext4", *vm.IPVS_MODULES], captured_depends)
    assert len(order) == len(set(order))
    for name in order:
        for dep in captured_depends(name) + vm.SOFT_BEFORE.get(name, []):
            assert order.index(dep) < order.index(name), (dep, name)
    # libcrc32c only soft-depends on a crc32c provider: without it nf_conntrack and ip_vs fail
    assert order.index("crc32c_generic") < order.index("libcrc32c") < order.index("ip_vs")
    assert order[-5:] == ["ip_vs_rr", "ip_vs_wrr", "ip_vs_wlc", "ip_vs_lc", "ip_vs_sh"]


def test_module_order_names_a_missing_module_and_a_cycle():
    def depends(name):
        return {"a": ["b"], "b": ["a"]}[name]

    with pytest.raises(CommandFailed, match="cycle: a -> b -> a"):
        vm.module_order(["a"], depends, soft={})
    with pytest.raises(KeyError):
        vm.module_order(["missing"], depends, soft={})


@pytest.mark.skipif(not shutil.which("cpio"), reason="cpio missing (apt-get install cpio)")
def test_newc_archive_is_read_by_cpio(tmp_path):
    data = vm.newc([("bin", 0o40755, None), ("bin/x", 0o100755, b"#!/bin/sh\necho hi\n"),
                    ("init", 0o100755, b"odd length!")])
    (tmp_path / "a.cpio.gz").write_bytes(gzip.compress(data))
    out = tmp_path / "out"
    out.mkdir()
    subprocess.run(["cpio", "-idm", "--quiet"], input=data, cwd=out, check=True)
    assert (out / "bin/x").read_bytes() == b"#!/bin/sh\necho hi\n"
    assert (out / "init").read_bytes() == b"odd length!"
    assert (out / "bin/x").stat().st_mode & 0o777 == 0o755


@pytest.mark.skipif(not shutil.which("sh"), reason="needs a POSIX sh")
def test_node_init_is_valid_shell_and_mounts_what_it_needs():
    proc = subprocess.run(["sh", "-n"], input=vm.NODE_INIT, text=True, capture_output=True)
    assert proc.returncode == 0, proc.stderr
    for tag in ("lower", "ident", "pkg"):  # the three 9p shares qemu_argv offers
        assert f" {tag} /" in vm.NODE_INIT
    assert "exec switch_root /newroot /sbin/init" in vm.NODE_INIT
    assert "/opt/salt-mailha/salt_mailha" in vm.NODE_INIT  # where the containers see the checkout


# ------------------------------------------------------------------ NICs and identity
def test_mac_is_stable_locally_administered_unicast_and_unique():
    macs = {vm.mac_for(f"10.99.{n}.{h}") for n in range(2) for h in range(1, 255)}
    assert len(macs) == 2 * 254
    mac = vm.mac_for("10.99.0.13")
    assert mac == "52:54:0a:63:00:0d"
    first = int(mac.split(":")[0], 16)
    assert first & 0b10 and not first & 0b01  # locally administered, unicast


@pytest.fixture(scope="module")
def lab_pillar():
    return labpillar.lab_pillar(labpillar.load_example(), rng=random.Random(3))


def test_identity_gives_a_vm_its_addresses_and_one_default_route(lab_pillar):
    gw = "10.99.0.1"
    lb = vm.nics_from_identity(Lab.identity(lab_pillar, gw, "lb1"))
    nets = list(lab_pillar["mailha"]["networks"].values())
    assert [(n.dev, n.address, n.gateway) for n in lb] == [
        ("eth0", lab_pillar["mailha"]["nodes"]["lb1"]["addresses"]["public"], gw),
        ("eth1", lab_pillar["mailha"]["nodes"]["lb1"]["addresses"]["private"], None)]
    for n in lb:
        assert ipaddress.ip_address(n.address) in ipaddress.ip_network(nets[n.index])
    ns1 = vm.nics_from_identity(Lab.identity(lab_pillar, gw, "ns1"))
    assert [n.dev for n in ns1] == ["eth0"]  # public only


def test_identity_gives_balancers_the_beacons_and_nobody_else(lab_pillar):
    lb = Lab.identity(lab_pillar, "10.99.0.1", "lb1")
    db = Lab.identity(lab_pillar, "10.99.0.1", "db1")
    assert db["minion_extra"] is None
    if (labpillar.EXAMPLE.parent.parent / "examples/minion.d/mailha.conf").exists():
        assert "beacons" in lb["minion_extra"]  # the loop over all nodes once hid this


@pytest.mark.parametrize("nics,msg", [
    ([], "at least one address"),
    ([(0, "10.99.0.300", 24, None)], "address of eth0: '10.99.0.300' is not an IPv4"),
    ([(12, "10.99.0.3", 24, None)], "at most 10 site networks"),
    ([(0, "10.99.0.3", 33, None)], "prefix length 33"),
    ([(0, "10.99.0.3", 24, "gw; rm -rf /")], "gateway of eth0: 'gw; rm -rf /' is not an IPv4"),
], ids=["none", "bad-address", "bad-index", "bad-prefix", "bad-gateway"])
def test_nics_are_validated_before_they_reach_a_command(nics, msg):
    with pytest.raises(Refused, match=msg):
        vm.nics_from_identity({"nics": nics})


def test_interfaces_text_configures_each_nic():
    text = vm.interfaces_text([vm.Nic(0, "10.99.0.13", 24, "10.99.0.1"),
                               vm.Nic(1, "10.99.1.13", 24)])
    assert "auto eth0\niface eth0 inet static\n    address 10.99.0.13/24\n    gateway 10.99.0.1\n" \
        in text
    assert "auto eth1\niface eth1 inet static\n    address 10.99.1.13/24\n" in text
    assert text.count("gateway") == 1
    assert "iface lo inet loopback" in text


def test_balancer_vm_beacons_get_a_tcg_probe_timeout():
    example = ("# comment\nbeacons:\n  mailha_health:\n    - interval: 1\n    - timeout: 0.5\n"
               "  other:\n    - timeout: 10\n")
    conf = yaml.safe_load(vm.tcg_beacons(example))
    assert conf["beacons"]["mailha_health"] == [{"interval": 1}, {"timeout": vm.TCG_PROBE_TIMEOUT}]
    assert conf["beacons"]["other"] == [{"timeout": 10}]  # already longer: kept
    assert yaml.safe_load(vm.tcg_beacons("{}")) == {}


# ------------------------------------------------------------------ qemu command line
def test_qemu_argv_taps_shares_and_tcg_limits(tmp_path):
    boot = vm.Boot(tmp_path / "vmlinuz", tmp_path / "initrd", ())
    paths = {k: tmp_path / k for k in ("base", "ident", "pkg", "disk", "console", "monitor",
                                       "agent", "pidfile")}
    nics = [vm.Nic(0, "10.99.0.13", 24, "10.99.0.1"), vm.Nic(1, "10.99.1.13", 24)]
    argv = vm.qemu_argv("lb1", boot, paths, nics)
    joined = " ".join(argv)
    assert argv[argv.index("-accel") + 1] == "tcg,tb-size=96"  # 1 GiB default cache per VM
    assert argv[argv.index("-smp") + 1] == "1"
    assert argv[argv.index("-m") + 1] == str(vm.MEMORY_MB)
    assert "ifname=mh-lb1-0," in joined and "ifname=mh-lb1-1," in joined  # set_link's names
    assert "mac=52:54:0a:63:00:0d" in joined and "mac=52:54:0a:63:01:0d" in joined
    lower = next(a for a in argv if "mount_tag=lower" in a)
    assert f"path={tmp_path / 'base'}," in lower and "readonly=on" in lower
    assert all("readonly=on" in a for a in argv if "mount_tag=" in a)  # the guest writes its disk
    assert f"file={tmp_path / 'disk'},if=virtio,format=raw" in joined
    assert f"name={vm.AGENT_PORT}" in joined


# ------------------------------------------------------------------ agent protocol
def test_agent_request_is_one_json_line_and_refuses_a_shell_string():
    req, line = vm.agent_request(["systemctl", "is-system-running"], 10, rid="r1")
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert json.loads(line) == {"id": "r1", "argv": ["systemctl", "is-system-running"],
                                "timeout": 10}
    with pytest.raises(Refused, match="argv list"):
        vm.agent_request("systemctl is-system-running; reboot", 10)
    with pytest.raises(Refused, match="argv list"):
        vm.agent_request([], 10)


def test_agent_reply_skips_stale_replies_and_noise():
    lines = [b"garbage", json.dumps({"id": "old", "rc": 0}).encode(), b"[1]",
             json.dumps({"id": "new", "rc": 3, "stdout": "x"}).encode()]
    assert vm.agent_reply(lines, "new") == {"id": "new", "rc": 3, "stdout": "x"}
    assert vm.agent_reply(lines[:3], "new") is None


def test_agent_script_is_valid_python_for_the_guest():
    compile(vm.AGENT, "agent.py", "exec")
    assert f'== "{vm.AGENT_PORT}"' in vm.AGENT


# ------------------------------------------------------------------ the lab's choice
def test_vm_nodes_are_the_balancers_when_asked(lab_pillar):
    assert Lab.vm_nodes(lab_pillar, "vm") == ["lb1", "lb2"]
    assert Lab.vm_nodes(lab_pillar, "container") == []
    with pytest.raises(CommandFailed, match="choose one of container, vm"):
        Lab.vm_nodes(lab_pillar, "kvm")


def test_lab_node_kind_follows_lab_json(tmp_path):
    lab = Lab(run_dir=tmp_path, cache_dir=tmp_path / "cache")
    assert lab.balancers() == "container" and lab.node("lb1").kind == "container"
    (tmp_path / "lab.json").write_text(json.dumps({
        "balancers": "vm", "vm_nodes": ["lb1"],
        "vm_boot": {"kernel": "/k", "initrd": "/i", "modules": ["ip_vs"]}}))
    node = lab.node("lb1")
    assert (lab.balancers(), node.kind, lab.node("db1").kind) == ("vm", "vm", "container")
    assert node.boot.kernel == pathlib.Path("/k") and node.leader() is None
    assert not node.running()


# ------------------------------------------------------------------ identity share and disk
@pytest.mark.skipif(not shutil.which("mkfs.ext4"), reason="mkfs.ext4 missing (e2fsprogs)")
def test_prepare_writes_identity_share_and_keeps_the_state_disk(tmp_path, lab_pillar):
    base = tmp_path / "base"
    (base / "opt/salt/lib/python3.11/site-packages").mkdir(parents=True)
    node = vm.VmNode("lb1", tmp_path / "run", base)
    log = tmp_path / "log"
    node.prepare(Lab.identity(lab_pillar, "10.99.0.1", "lb1"), log)
    root = node.ident / "root"
    assert (root / "etc/hostname").read_text() == "lb1\n"
    assert "address 10.99.0.13/24" in (root / "etc/network/interfaces.d/mailha-lab").read_text()
    assert "id: lb1\nmaster: 10.99.0.1\n" in (root / "etc/salt/minion.d/lab.conf").read_text()
    assert (root / "etc/systemd/system/serial-getty@ttyS0.service").readlink() == \
        pathlib.Path("/dev/null")
    assert (root / "opt/salt/lib/python3.11/site-packages/salt_mailha_lab.pth").read_text() == \
        "/opt/salt-mailha\n"
    assert "DefaultTimeoutStartSec=600s" in \
        (root / "etc/systemd/system.conf.d/mailha-lab-tcg.conf").read_text()
    assert (node.ident / "nics").read_text() == "52:54:0a:63:00:0d eth0\n52:54:0a:63:01:0d eth1\n"
    assert "/opt/salt/lib/python3.11/site-packages/salt_mailha-*.dist-info" in \
        (node.ident / "delete").read_text()
    blkid = subprocess.run(["blkid", "-o", "value", "-s", "TYPE", node.disk], capture_output=True,
                           text=True)
    assert blkid.stdout.strip() == "ext4"
    disk_id, machine_id = node.disk.stat().st_ino, (root / "etc/machine-id").read_text()
    node.prepare(Lab.identity(lab_pillar, "10.99.0.1", "lb1"), log)  # a restart: same disk
    assert node.disk.stat().st_ino == disk_id
    assert (node.ident / "root/etc/machine-id").read_text() == machine_id
    assert [tuple(n) for n in json.loads(node.nics_file.read_text())] == [
        (0, "10.99.0.13", 24, "10.99.0.1"), (1, "10.99.1.13", 24, None)]


def test_start_refuses_host_shares(tmp_path):
    node = vm.VmNode("mail1", tmp_path, tmp_path)
    with pytest.raises(Refused, match="cannot share host directories"):
        node.start(tmp_path / "log", binds=((tmp_path, "/srv/vmail"),))
