"""qemu TCG guests with Debian's kernel: the lab's balancers with real IPVS, and the test guest.

This host's kernel has no IPVS and cannot load modules, and its /dev/kvm (PVM) cannot run a
stock kernel, so a guest runs under TCG (see shared/notes/LAB.md). Nothing is installed for it:
``apt-get download`` fetches ``linux-image-<abi>-amd64`` (whichever ``linux-image-amd64``
depends on) and ``busybox-static``; :func:`build_boot` turns them into a kernel and a small
initramfs (static busybox, the requested modules in dependency order, an ``/init`` script),
cached per kernel, init script and module list.

A lab VM node (:class:`VmNode`) boots with that initramfs into a real system: the lab's base tree
shared read-only over 9p as the overlay's lower layer, the node's own ext4 disk image
(``state.img``, persistent across power cuts) holding the upper layer, this node's identity
(hostname, hosts, network, minion config) copied from a third 9p share into the upper layer at
every boot, and the checkout's ``salt_mailha`` shared at the same path as in the containers; then
``switch_root`` to systemd. Its NICs are taps named like the containers' host-side veths
(``mh-<node>-<i>``) in the bridge namespace, so ``network.set_link`` cuts a VM's cables too.
Commands run in the guest through a tiny agent on a virtio-serial port (the base tree has no
qemu-guest-agent and no sshd).
"""
import contextlib
import dataclasses
import fcntl
import gzip
import hashlib
import io
import ipaddress
import json
import os
import pathlib
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid

import yaml

from salt_mailha import PACKAGE_ROOT
from salt_mailha.core.errors import CommandFailed, Refused
from salt_mailha.lab import network
from salt_mailha.lab.nodes import GUEST_PKG_DIR, package_files
from salt_mailha.lab.util import pid_alive, pid_from_file, run

# Soft dependencies modinfo does not list as ``depends=`` (a crc32c provider must come first).
SOFT_BEFORE = {"libcrc32c": ["crc32c_generic"], "ext4": ["crc32c_generic"],
               "jbd2": ["crc32c_generic"]}
IPVS_MODULES = ["ip_vs", "ip_vs_rr", "ip_vs_wrr", "ip_vs_wlc", "ip_vs_lc", "ip_vs_sh"]
NODE_MODULES = ["virtio_pci", "virtio_blk", "virtio_net", "virtio_console", "9pnet_virtio", "9p",
                "overlay", "ext4", "autofs4", *IPVS_MODULES]
AGENT_PORT = "mailha.agent"
AGENT_PATH = "/usr/local/lib/mailha-lab/agent.py"
# TCG: a 96 MB translation cache (the 1 GiB default doubles a VM's RSS), one vCPU each.
MEMORY_MB = 1024
STATE_DISK_SIZE = "2G"
TCG_PROBE_TIMEOUT = 3.0  # seconds: a balancer VM's beacon probes (see tcg_beacons)

# /init of a lab VM node. The identity share is copied over the upper layer at every boot (the
# container nodes get theirs written into the mounted overlay by Node.prepare); NICs are renamed
# by MAC to the names the lab gives them (eth<i> = the i-th site network).
NODE_INIT = r"""#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
fail() { echo "MAILHA-VM $*"; sync; poweroff -f; }
for m in $(cat /modlist); do insmod /lib/modules/$m.ko || echo "MAILHA-VM insmod $m failed"; done
echo "MAILHA-VM initrd-ok uptime=$(cut -d' ' -f1 /proc/uptime)"
P=trans=virtio,version=9p2000.L,msize=262144
mkdir -p /lower /state /ident /newroot
mount -t 9p -o $P,ro,cache=loose lower /lower || fail "9p base tree failed"
mount -t ext4 -o noatime /dev/vda /state || fail "state disk /dev/vda failed"
mount -t 9p -o $P,ro ident /ident || fail "9p identity share failed"
mkdir -p /state/upper /state/work
while read mac name; do
  for d in /sys/class/net/*; do
    [ "$(cat $d/address)" = "$mac" ] && ip link set "${d##*/}" name "tmp$name"
  done
done < /ident/nics
for d in /sys/class/net/tmp*; do [ -e "$d" ] && ip link set "${d##*/}" name "${d##*/tmp}"; done
for f in $(cat /ident/delete); do rm -rf /state/upper$f; done
cp -af /ident/root/. /state/upper/ || fail "identity copy failed"
umount /ident
mount -t overlay overlay -o lowerdir=/lower,upperdir=/state/upper,workdir=/state/work /newroot \
  || fail "overlay failed"
mkdir -p /newroot@PKG@/salt_mailha
mount -t 9p -o $P,ro pkg /newroot@PKG@/salt_mailha || fail "9p package share failed"
echo "MAILHA-VM switch_root uptime=$(cut -d' ' -f1 /proc/uptime)"
mount --move /proc /newroot/proc; mount --move /sys /newroot/sys; mount --move /dev /newroot/dev
exec switch_root /newroot /sbin/init
""".replace("@PKG@", GUEST_PKG_DIR)

# The guest side of exec: one JSON request per line on the virtio-serial port, one JSON reply
# per line (system python3, stdlib only; started by systemd before everything else).
AGENT = r'''"""mailha-lab exec agent: runs argv lists sent by the host over virtio-serial."""
import glob, json, os, subprocess, time

def port():
    for d in glob.glob("/sys/class/virtio-ports/*"):
        with open(d + "/name") as fh:
            if fh.read().strip() == "@PORT@":
                return "/dev/" + os.path.basename(d)

def reply(req):
    try:
        p = subprocess.run(req["argv"], input=req.get("input") or "", capture_output=True,
                           text=True, timeout=req.get("timeout", 60))
        return {"id": req.get("id"), "rc": p.returncode, "stdout": p.stdout, "stderr": p.stderr}
    except subprocess.TimeoutExpired:
        return {"id": req.get("id"), "rc": 124, "stdout": "", "stderr": "timed out in the guest"}
    except Exception as exc:
        return {"id": req.get("id"), "rc": 127, "stdout": "", "stderr": f"{type(exc).__name__}: {exc}"}

def main():
    path = port()
    while path is None:
        time.sleep(0.5)
        path = port()
    fd, buf = os.open(path, os.O_RDWR), b""
    while True:
        chunk = os.read(fd, 65536)
        if not chunk:  # no host connected: nothing to read yet
            time.sleep(0.3)
            continue
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            try:
                req = json.loads(line)
            except ValueError:
                continue
            data = (json.dumps(reply(req)) + "\n").encode()
            while data:
                data = data[os.write(fd, data):]

main()
'''.replace("@PORT@", AGENT_PORT)

AGENT_UNIT = f"""\
[Unit]
Description=mailha-lab exec agent (virtio-serial {AGENT_PORT})
DefaultDependencies=no
Conflicts=shutdown.target
Before=shutdown.target

[Service]
ExecStart=/usr/bin/python3 -I {AGENT_PATH}
Restart=always
RestartSec=1

[Install]
WantedBy=sysinit.target
"""


# ---------------------------------------------------------------------- kernel and initramfs
def kernel_package():
    """The linux-image-<abi>-amd64 package apt's linux-image-amd64 currently depends on."""
    out = subprocess.run(["apt-cache", "depends", "linux-image-amd64"], capture_output=True,
                         text=True, check=True).stdout
    m = re.search(r"Depends:\s*(linux-image-[0-9][\w.+-]*-amd64)\b", out)
    if not m:
        raise CommandFailed("cannot find a kernel package in `apt-cache depends "
                            f"linux-image-amd64` (is apt configured? run apt-get update):\n{out}")
    return m.group(1)


def modinfo_depends(data):
    """The ``depends=`` list of a ``.ko`` file's bytes."""
    deps = re.search(rb"(?:^|\x00)depends=([^\x00]*)\x00", data)
    return [d for d in (deps.group(1).decode().split(",") if deps else []) if d]


def module_order(roots, depends, soft=SOFT_BEFORE):
    """Load order for ``roots`` and their dependency closure (dependencies first).
    ``depends(name)`` gives a module's ``depends=`` list and raises KeyError if it is missing."""
    order = []

    def add(name, chain):
        if name in order:
            return
        if name in chain:
            raise CommandFailed(f"module dependency cycle: {' -> '.join(chain + (name,))}")
        for dep in soft.get(name, []) + depends(name):
            add(dep.replace("-", "_"), chain + (name,))
        order.append(name)

    for m in roots:
        add(m.replace("-", "_"), ())
    return order


def newc(entries):
    """A cpio 'newc' archive from (name, mode, bytes) entries (directories have data=None)."""
    out = io.BytesIO()
    for ino, (name, mode, data) in enumerate([*entries, ("TRAILER!!!", 0, b"")], start=1):
        data = data or b""
        nameb = name.encode() + b"\x00"
        hdr = "070701" + "".join(f"{v:08x}" for v in (
            ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(nameb), 0))
        out.write(hdr.encode() + nameb)
        out.write(b"\x00" * (-(110 + len(nameb)) % 4))
        out.write(data)
        out.write(b"\x00" * (-len(data) % 4))
    return out.getvalue()


@dataclasses.dataclass(frozen=True)
class Boot:
    kernel: pathlib.Path
    initrd: pathlib.Path
    modules: tuple


def build_boot(init_script, modules, cache_dir):
    """Kernel + initramfs (busybox, ``modules`` and their dependencies, ``/init``), built once
    per kernel package, init script and module list under ``cache_dir`` and reused after."""
    cache_dir = pathlib.Path(cache_dir)
    pkg = kernel_package()
    key = hashlib.sha256((init_script + "\0" + ",".join(modules)).encode()).hexdigest()[:12]
    kdir = cache_dir / f"{pkg}-{key}"
    kernel, initrd, modlist = kdir / "vmlinuz", kdir / "initrd.cpio.gz", kdir / "modlist"
    if kernel.exists() and initrd.exists() and modlist.exists():
        return Boot(kernel, initrd, tuple(modlist.read_text().split()))
    cache_dir.mkdir(parents=True, exist_ok=True)
    work = pathlib.Path(tempfile.mkdtemp(prefix=".build-", dir=cache_dir))
    try:
        dl, root, out = work / "dl", work / "root", work / "out"
        for d in (dl, out):
            d.mkdir()
        run(["apt-get", "download", "-q", pkg, "busybox-static"], capture=True, cwd=dl)
        for deb in sorted(dl.glob("*.deb")):
            run(["dpkg-deb", "-x", deb, root])
        kver = pkg[len("linux-image-"):]
        mods = {p.name[:-3]: p for p in (root / "lib/modules" / kver).rglob("*.ko")}

        def depends(name):
            if name not in mods:
                raise CommandFailed(f"module {name} is not in {pkg}")
            return modinfo_depends(mods[name].read_bytes())

        order = module_order(modules, depends)
        entries = [(d, 0o40755, None) for d in ("bin", "dev", "proc", "sys", "lib", "lib/modules")]
        entries.append(("bin/busybox", 0o100755, (root / "bin/busybox").read_bytes()))
        entries.append(("init", 0o100755, init_script.encode()))
        entries.append(("modlist", 0o100644, ("\n".join(order) + "\n").encode()))
        entries += [(f"lib/modules/{m}.ko", 0o100644, mods[m].read_bytes()) for m in order]
        shutil.copy(root / "boot" / f"vmlinuz-{kver}", out / "vmlinuz")
        (out / "initrd.cpio.gz").write_bytes(gzip.compress(newc(entries), compresslevel=1))
        (out / "modlist").write_text("\n".join(order) + "\n")
        shutil.rmtree(kdir, ignore_errors=True)
        out.rename(kdir)  # complete or absent: a concurrent or interrupted build never half-shows
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return Boot(kernel, initrd, tuple(order))


# ---------------------------------------------------------------------- pure node plumbing
def mac_for(address):
    """A stable, locally administered unicast MAC from an IPv4 address (52:54:<4 bytes>)."""
    packed = ipaddress.IPv4Address(address).packed
    return "52:54:" + ":".join(f"{b:02x}" for b in packed)


@dataclasses.dataclass(frozen=True)
class Nic:
    index: int  # the site network's position: eth<index>, br<index>, tap mh-<node>-<index>
    address: str
    prefixlen: int
    gateway: str = None  # set on the network that carries the default route

    @property
    def dev(self):
        return f"eth{self.index}"

    @property
    def mac(self):
        return mac_for(self.address)


def _ipv4(value, what):
    try:
        return ipaddress.IPv4Address(value)
    except ValueError:
        raise Refused(f"{what}: {value!r} is not an IPv4 address (a VM node's site networks are "
                      "IPv4, like the lab's 10.99.n.0/24)") from None


def nics_from_identity(identity):
    """:class:`Nic` list from ``Lab.identity()['nics']`` (validated: they reach commands)."""
    out = []
    for index, address, prefixlen, gateway in identity.get("nics") or ():
        if not isinstance(index, int) or not 0 <= index < 10:
            raise Refused(f"lab network index {index!r}: the lab has at most 10 site networks")
        _ipv4(address, f"address of eth{index}")
        if not isinstance(prefixlen, int) or not 8 <= prefixlen <= 30:
            raise Refused(f"prefix length {prefixlen!r} of {address}: expected 8..30")
        if gateway is not None:
            _ipv4(gateway, f"gateway of eth{index}")
        out.append(Nic(index, address, prefixlen, gateway))
    if not out:
        raise Refused("a VM node needs at least one address on a site network (identity nics)")
    return out


def interfaces_text(nics):
    """ifupdown config of a VM node (a container's addresses are set from outside instead)."""
    lines = ["# written by mailha-lab at every boot", "auto lo", "iface lo inet loopback"]
    for n in nics:
        lines += ["", f"auto {n.dev}", f"iface {n.dev} inet static",
                  f"    address {n.address}/{n.prefixlen}"]
        if n.gateway:
            lines.append(f"    gateway {n.gateway}")
    return "\n".join(lines) + "\n"


def qemu_argv(name, boot, paths, nics, memory_mb=MEMORY_MB):
    """The qemu command line of a lab VM node. ``paths``: ``base``, ``ident``, ``pkg``,
    ``disk``, ``console``, ``monitor``, ``agent``, ``pidfile``."""
    p = {k: str(v) for k, v in paths.items()}
    argv = [
        "qemu-system-x86_64", "-name", f"{network.netns(name)}", "-accel", "tcg,tb-size=96",
        "-cpu", "max", "-m", str(memory_mb), "-smp", "1", "-nodefaults", "-no-user-config",
        "-display", "none", "-no-reboot",
        "-kernel", str(boot.kernel), "-initrd", str(boot.initrd),
        "-append", "console=ttyS0 net.ifnames=0 panic=-1 quiet systemd.show_status=0",
        "-chardev", f"file,id=con,path={p['console']},append=on", "-serial", "chardev:con",
        "-monitor", f"unix:{p['monitor']},server=on,wait=off", "-pidfile", p["pidfile"],
        "-drive", f"file={p['disk']},if=virtio,format=raw,cache=unsafe",
        "-virtfs", f"local,path={p['base']},mount_tag=lower,security_model=none,readonly=on,"
                   "multidevs=remap",
        "-virtfs", f"local,path={p['ident']},mount_tag=ident,security_model=none,readonly=on",
        "-virtfs", f"local,path={p['pkg']},mount_tag=pkg,security_model=none,readonly=on",
        "-chardev", f"socket,id=agent,path={p['agent']},server=on,wait=off",
        "-device", "virtio-serial-pci", "-device", f"virtserialport,chardev=agent,name={AGENT_PORT}",
    ]
    for n in nics:
        argv += ["-netdev", f"tap,id=n{n.index},ifname={network.host_veth(name, n.index)},"
                            "script=no,downscript=no",
                 "-device", f"virtio-net-pci,netdev=n{n.index},mac={n.mac}"]
    return argv


def tcg_beacons(minion_conf, floor=TCG_PROBE_TIMEOUT):
    """The minion config example with every beacon ``timeout`` raised to at least ``floor``:
    under TCG a probe's TLS handshake alone can take longer than the example's 0.5 s, and a
    timed-out probe is a "down" event the reactor drains on."""
    conf = yaml.safe_load(minion_conf) or {}
    for items in (conf.get("beacons") or {}).values():
        for item in items if isinstance(items, list) else ():
            if isinstance(item, dict) and isinstance(item.get("timeout"), (int, float)):
                item["timeout"] = max(item["timeout"], floor)
    return ("# examples/minion.d/mailha.conf, probe timeouts raised for a qemu TCG guest\n"
            + yaml.safe_dump(conf, sort_keys=False))


def agent_request(argv, timeout, input=None, rid=None):
    """One request line for the guest agent (argv validated: a list of strings)."""
    if not isinstance(argv, (list, tuple)) or not argv or \
            not all(isinstance(a, (str, os.PathLike)) for a in argv):
        raise Refused(f"guest command must be a non-empty argv list of strings, got {argv!r}")
    req = {"id": rid or uuid.uuid4().hex, "argv": [str(a) for a in argv], "timeout": timeout}
    if input is not None:
        req["input"] = input
    return req, (json.dumps(req) + "\n").encode()


def agent_reply(lines, rid):
    """The reply to request ``rid`` among ``lines`` (stale replies of timed-out requests are
    skipped), or None."""
    for line in lines:
        try:
            rep = json.loads(line)
        except ValueError:
            continue
        if isinstance(rep, dict) and rep.get("id") == rid:
            return rep
    return None


# ---------------------------------------------------------------------- the node
class VmNode:
    """A lab node as a qemu TCG VM: same interface as :class:`salt_mailha.lab.nodes.Node`."""

    kind = "vm"
    boot_timeout = 420  # TCG: a cold boot to a running minion takes minutes on a loaded machine

    def __init__(self, name, run_dir, base_root, boot=None):
        self.name = name
        self.dir = pathlib.Path(run_dir) / "nodes" / name
        self.base = pathlib.Path(base_root)
        self.boot = boot
        self.disk = self.dir / "state.img"
        self.ident = self.dir / "identity"
        self.console = self.dir / "console.log"
        self.pidfile = self.dir / "qemu.pid"
        self.monitor = self.dir / "monitor.sock"
        self.agent = self.dir / "agent.sock"
        self.nics_file = self.dir / "nics.json"
        self.qemu_log = self.dir / "qemu.log"

    # ------------------------------------------------------------------ state
    def pid(self):
        pid = pid_from_file(self.pidfile)
        return None if pid is None or _gone(pid) else pid

    def leader(self):
        """No host-visible init: the guest's processes live in its own kernel."""
        return None

    def running(self):
        return self.pid() is not None

    def nics(self):
        try:
            return [Nic(*n) for n in json.loads(self.nics_file.read_text())]
        except (OSError, ValueError, TypeError) as exc:
            raise CommandFailed(f"node {self.name}: no NIC plan in {self.nics_file} ({exc}); "
                                "prepare() writes it") from None

    # ------------------------------------------------------------------ start
    def prepare(self, identity, log):
        """Write this node's identity into its share (copied into the upper layer at every
        boot) and create its state disk once; what the guest wrote there survives restarts."""
        import importlib.metadata

        nics = nics_from_identity(identity)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.nics_file.write_text(json.dumps([dataclasses.astuple(n) for n in nics]))
        staging = self.dir / "identity.new"
        shutil.rmtree(staging, ignore_errors=True)
        root = staging / "root"
        mid = self.dir / "machine-id"
        if not mid.exists():
            mid.write_text(uuid.uuid4().hex + "\n")
        files = {
            "etc/hostname": self.name + "\n",
            "etc/hosts": identity["hosts"],
            "etc/resolv.conf": identity["resolv"],
            "etc/machine-id": mid.read_text(),
            "etc/network/interfaces.d/mailha-lab": interfaces_text(nics),
            "etc/salt/minion.d/lab.conf": (
                f"id: {self.name}\nmaster: {identity['master']}\n"
                "acceptance_wait_time: 2\nrandom_reauth_delay: 0\nauth_timeout: 30\n"
                "log_level_logfile: info\n"),
            AGENT_PATH.lstrip("/"): AGENT,
            "etc/systemd/system/mailha-lab-agent.service": AGENT_UNIT,
            # software emulation runs 10-50x slower: ldirectord's perl start alone outlasted
            # systemd's default 90 s on a loaded host
            "etc/systemd/system.conf.d/mailha-lab-tcg.conf":
                "[Manager]\nDefaultTimeoutStartSec=600s\nDefaultTimeoutStopSec=120s\n",
        }
        delete = []
        if identity.get("minion_extra"):
            files["etc/salt/minion.d/mailha.conf"] = tcg_beacons(identity["minion_extra"])
        else:
            delete.append("/etc/salt/minion.d/mailha.conf")
        pkg, old_info = package_files(self.base, importlib.metadata.version("salt-mailha"))
        files.update(pkg)
        delete.append("/" + old_info)
        for rel, text in files.items():
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        links = {
            # without udev no dev-ttyS0.device ever appears: the serial getty would hold the
            # boot for 90 s, then fail
            "etc/systemd/system/serial-getty@ttyS0.service": "/dev/null",
            # binfmt_misc is a module the initramfs does not load; nothing here needs it
            "etc/systemd/system/proc-sys-fs-binfmt_misc.automount": "/dev/null",
            "etc/systemd/system/systemd-binfmt.service": "/dev/null",
            "etc/systemd/system/sysinit.target.wants/mailha-lab-agent.service":
                "/etc/systemd/system/mailha-lab-agent.service",
        }
        for rel, target in links.items():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).symlink_to(target)
        (root / "etc/resolv.conf").chmod(0o644)
        (staging / "nics").write_text("".join(f"{n.mac} {n.dev}\n" for n in nics))
        (staging / "delete").write_text("\n".join(delete) + "\n")
        shutil.rmtree(self.ident, ignore_errors=True)
        staging.rename(self.ident)
        if not self.disk.exists():
            tmp = self.disk.with_suffix(".new")
            run(["truncate", "-s", STATE_DISK_SIZE, tmp], log=log)
            run(["mkfs.ext4", "-q", "-F", "-L", f"{self.name}-state", tmp], log=log)
            tmp.rename(self.disk)

    def start(self, log, binds=()):
        """Plug the taps into the bridges and boot the VM in the bridge namespace; returns the
        qemu pid."""
        if binds:
            raise Refused(f"node {self.name}: a VM node cannot share host directories "
                          f"({', '.join(str(h) for h, _ in binds)}); run it as a container")
        if self.boot is None:
            raise CommandFailed(f"node {self.name}: no kernel/initramfs (Lab builds them in up)")
        nics = self.nics()
        for n in nics:
            network.ensure_tap(self.name, n.index, log)
        for stale in (self.monitor, self.agent):
            stale.unlink(missing_ok=True)
        for sock in (self.monitor, self.agent):
            if len(str(sock)) > 107:
                raise Refused(f"{sock} is longer than a unix socket path may be (107); set "
                              "MAILHA_LAB_DIR to a shorter directory")
        argv = ["ip", "netns", "exec", network.BRIDGE_NS, *qemu_argv(self.name, self.boot, {
            "base": self.base, "ident": self.ident, "pkg": PACKAGE_ROOT, "disk": self.disk,
            "console": self.console, "monitor": self.monitor, "agent": self.agent,
            "pidfile": self.pidfile}, nics)]
        with open(log, "a") as fh:
            fh.write("$ " + " ".join(map(str, argv)) + "\n")
        with open(self.qemu_log, "ab") as out:
            proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        # ip netns exec execs qemu: same pid; written now so a failed start is still stoppable
        self.pidfile.write_text(str(proc.pid))
        return proc.pid

    def wait_booted(self, timeout=None):
        """Until ``systemctl is-system-running`` in the guest answers running/degraded."""
        timeout = max(timeout or 0, self.boot_timeout)
        deadline = time.monotonic() + timeout
        state = "no answer from the guest agent"
        while time.monotonic() < deadline:
            if not self.running():
                raise RuntimeError(f"node {self.name}: qemu exited; see {self.qemu_log} and "
                                   f"{self.console}")
            proc = self.exec(["systemctl", "is-system-running"], check=False, timeout=20)
            if proc is not None:
                state = proc.stdout.strip() or proc.stderr.strip()
                if state in ("running", "degraded"):
                    return state
            time.sleep(1)
        raise TimeoutError(f"node {self.name}: systemd not up within {timeout}s (last: {state}); "
                           f"see {self.console}")

    def exec(self, argv, check=True, timeout=60, log=None, input=None):
        """Run ``argv`` in the guest through its agent; None while the agent cannot answer."""
        req, line = agent_request(argv, timeout, input=input)
        if not self.running():
            return None
        lock = self.dir / "agent.lock"
        with open(lock, "w") as lk:
            fcntl.flock(lk, fcntl.LOCK_EX)
            try:
                rep = self._ask(line, req["id"], timeout + 15)
            except OSError:
                rep = None
        if rep is None:
            return None
        proc = subprocess.CompletedProcess(req["argv"], rep.get("rc", 1), rep.get("stdout", ""),
                                           rep.get("stderr", ""))
        if log:
            with open(log, "a") as fh:
                fh.write(f"$ [{self.name}] {' '.join(proc.args)}\n{proc.stdout}{proc.stderr}")
        if check and proc.returncode != 0:
            raise CommandFailed(f"{argv[0]} exited {proc.returncode} in VM {self.name}: "
                                f"{proc.stderr.strip()[-200:]}")
        return proc

    def _ask(self, line, rid, timeout):
        deadline = time.monotonic() + timeout
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(5)
            s.connect(str(self.agent))
            s.sendall(line)
            buf = b""
            while time.monotonic() < deadline:
                s.settimeout(max(0.1, deadline - time.monotonic()))
                try:
                    chunk = s.recv(65536)
                except TimeoutError:
                    break
                if not chunk:
                    break
                buf += chunk
                *done, buf = buf.split(b"\n")
                rep = agent_reply(done, rid)
                if rep is not None:
                    return rep
        return None

    # ------------------------------------------------------------------ stop
    def monitor_command(self, command, timeout=5):
        """One human-monitor command (``quit``, ``system_powerdown``...); returns its output, or
        None if the monitor is unreachable. Waits for the next prompt (or qemu closing the
        socket, as ``quit`` does): the monitor reads input byte by byte and drops what is
        still unread when the client hangs up."""
        deadline = time.monotonic() + timeout
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(timeout)
                s.connect(str(self.monitor))
                buf = b""
                while not buf.endswith(b"(qemu) "):
                    chunk = s.recv(4096)
                    if not chunk:
                        return None
                    buf += chunk
                s.sendall(command.encode() + b"\n")
                out = b""
                while b"\n(qemu) " not in out and time.monotonic() < deadline:
                    s.settimeout(max(0.1, deadline - time.monotonic()))
                    chunk = s.recv(4096)
                    if not chunk:  # qemu closed the monitor: quit
                        break
                    out += chunk
            return out.decode(errors="replace")
        except OSError:
            return None

    def request_stop(self):
        """Begin stopping without waiting (``down`` stops every node at once)."""
        if self.running():
            self.monitor_command("quit")

    def stop(self, log, timeout=15):
        """Monitor ``quit``, then SIGTERM, then SIGKILL by pid; taps stay (``unplug`` removes
        them), the state disk stays."""
        pid = self.pid()
        if pid:
            steps = ((lambda: self.monitor_command("quit")), lambda: os.kill(pid, signal.SIGTERM),
                     lambda: os.kill(pid, signal.SIGKILL))
            for act in steps:
                with contextlib.suppress(ProcessLookupError):
                    act()
                if _wait_gone(pid, timeout):
                    break
            if log:
                with open(log, "a") as fh:
                    fh.write(f"node {self.name}: qemu {pid} stopped\n")
        self.pidfile.unlink(missing_ok=True)
        for sock in (self.monitor, self.agent):
            sock.unlink(missing_ok=True)

    def crash(self, log, timeout=30):
        """Power cut: SIGKILL qemu. The state disk keeps what the guest had written to it."""
        pid = self.pid()
        if pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            _wait_gone(pid, timeout)
        self.stop(log, timeout=5)

    def unplug(self, log):
        """Remove the node's taps (``down``; deleting the bridge namespace would too)."""
        try:
            indexes = [n.index for n in self.nics()]
        except CommandFailed:  # never prepared: no taps either
            return
        for index in indexes:
            network.delete_link(network.host_veth(self.name, index), log)

    def unmount(self, log):
        """Nothing is mounted on the host for a VM."""


def _gone(pid):
    """Exited: no such process, or a zombie (a qemu whose parent was an earlier ``up`` is
    reaped by the host's init only now and then)."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return not pid_alive(pid)


def _wait_gone(pid, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _gone(pid):
            return True
        time.sleep(0.2)
    return _gone(pid)
