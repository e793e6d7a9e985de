"""One lab node: an overlay over the base tree booted by systemd-nspawn (or, for :class:`UmlNode`,
by User-mode Linux) with real systemd.

The node's identity (hostname, hosts, machine-id, minion config) and the salt-mailha package
(the repository's own tree, bind-mounted read-only and registered as an installed distribution
so Salt's loader finds its entry point) live in the node's upper layer; the base stays shared.
"""
import importlib.metadata
import os
import pathlib
import shutil
import signal
import subprocess
import time
import uuid

from salt_mailha import PACKAGE_ROOT
from salt_mailha.core.errors import CommandFailed
from salt_mailha_lab import network
from salt_mailha_lab.util import mounted, pid_alive, pid_from_file, run

GUEST_PKG_DIR = "/opt/salt-mailha"


def package_files(base_root, version):
    """Files (path relative to the node's root -> text) that make the checkout shared at
    ``GUEST_PKG_DIR`` an installed distribution in the node's /opt/salt (Salt's loader finds the
    extension through its entry point), and a glob of older versions' metadata to remove."""
    site = sorted((pathlib.Path(base_root) / "opt/salt/lib").glob("python3*/site-packages"))
    if not site:
        raise CommandFailed(f"no opt/salt/lib/python3*/site-packages under {base_root}; rebuild "
                            "the base tree ('mailha-lab down', then 'up')")
    rel = site[-1].relative_to(base_root)
    info = rel / f"salt_mailha-{version}.dist-info"
    return {
        str(info / "METADATA"): f"Metadata-Version: 2.1\nName: salt-mailha\nVersion: {version}\n",
        str(info / "entry_points.txt"): "[salt.loader]\nsalt_mailha = salt_mailha\n",
        str(info / "top_level.txt"): "salt_mailha\n",
        str(rel / "salt_mailha_lab.pth"): GUEST_PKG_DIR + "\n",
    }, str(rel / "salt_mailha-*.dist-info")


class Node:
    kind = "container"
    boot_timeout = 120

    def __init__(self, name, run_dir, base_root):
        self.name = name
        self.dir = pathlib.Path(run_dir) / "nodes" / name
        self.base = pathlib.Path(base_root)
        self.upper, self.work, self.merged = (self.dir / d for d in ("upper", "work", "merged"))
        self.console = self.dir / "console.log"
        self.pidfile = self.dir / "nspawn.pid"

    # ------------------------------------------------------------------ state
    def pid(self):
        return pid_from_file(self.pidfile)

    def leader(self):
        """PID (host view) of the container's systemd: the nspawn process's child."""
        pid = self.pid()
        if not pid:
            return None
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    fields = fh.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                return int(entry)
        return None

    def running(self):
        return self.pid() is not None

    # ------------------------------------------------------------------ start
    def prepare(self, identity, log):
        """Mount the overlay and write this node's identity into its upper layer."""
        for d in (self.upper, self.work, self.merged):
            d.mkdir(parents=True, exist_ok=True)
        if not mounted(self.merged):
            run(["mount", "-t", "overlay", "overlay", "-o",
                 f"lowerdir={self.base},upperdir={self.upper},workdir={self.work}", self.merged],
                log=log)
        m = self.merged
        (m / "etc/hostname").write_text(self.name + "\n")
        (m / "etc/hosts").write_text(identity["hosts"])
        (m / "etc/resolv.conf").write_text(identity["resolv"])
        mid = m / "etc/machine-id"
        if not mid.read_text().strip():
            mid.write_text(uuid.uuid4().hex + "\n")
        minion_d = m / "etc/salt/minion.d"
        minion_d.mkdir(parents=True, exist_ok=True)
        (minion_d / "lab.conf").write_text(
            f"id: {self.name}\nmaster: {identity['master']}\n"
            "acceptance_wait_time: 2\nrandom_reauth_delay: 0\nauth_timeout: 10\n"
            "log_level_logfile: info\n")
        beacons = minion_d / "mailha.conf"
        if identity.get("minion_extra"):
            beacons.write_text(identity["minion_extra"])
        else:
            beacons.unlink(missing_ok=True)
        self._register_package(m)

    @staticmethod
    def _register_package(root):
        """Make the bind-mounted source importable and visible to Salt's entry-point scan."""
        files, old_info = package_files(root, importlib.metadata.version("salt-mailha"))
        for old in root.glob(old_info):
            shutil.rmtree(old)
        for rel, text in files.items():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_text(text)
        (root / GUEST_PKG_DIR.lstrip("/") / "salt_mailha").mkdir(parents=True, exist_ok=True)

    def start(self, log, binds=()):
        """Boot the node (systemd as its PID 1) in its own netns; ``binds`` are (host dir, node
        path) pairs shared read-write; returns the nspawn pid."""
        argv = [
            "systemd-nspawn", "--quiet", "--directory", self.merged, "--machine", self.name,
            "--boot", "--register=no", "--keep-unit", "--link-journal=no", "--resolv-conf=off",
            "--timezone=off", f"--network-namespace-path=/run/netns/{network.netns(self.name)}",
            "--capability=CAP_NET_ADMIN,CAP_NET_RAW,CAP_SYS_MODULE", "--console=read-only",
            f"--bind-ro={PACKAGE_ROOT}:{GUEST_PKG_DIR}/salt_mailha",
            *(f"--bind={host}:{path}" for host, path in binds),
        ]
        env = {**os.environ, "SYSTEMD_NSPAWN_API_VFS_WRITABLE": "network"}
        with open(log, "a") as fh:
            fh.write("$ " + " ".join(map(str, argv)) + "\n")
        with open(self.console, "ab") as out:
            proc = subprocess.Popen([str(a) for a in argv], stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, env=env, start_new_session=True)
        self.pidfile.write_text(str(proc.pid))
        return proc.pid

    def wait_booted(self, timeout=90):
        """Until ``systemctl is-system-running`` inside answers running/degraded."""
        return self._wait_systemd(timeout, "systemd-nspawn")

    def _wait_systemd(self, timeout, machine=None):
        """Poll systemd inside until running/degraded; with ``machine``, fail at once when the
        node's process (that name) is gone."""
        deadline = time.monotonic() + timeout
        state = "no answer"
        while time.monotonic() < deadline:
            if machine and not self.running():
                raise RuntimeError(f"node {self.name}: {machine} exited; see {self.console}")
            proc = self.exec(["systemctl", "is-system-running"], check=False, timeout=10)
            if proc is not None:
                state = proc.stdout.strip()
                if state in ("running", "degraded"):
                    return state
            time.sleep(0.5)
        raise TimeoutError(f"node {self.name}: systemd not up within {timeout}s (last: {state}); "
                           f"see {self.console}")

    def exec(self, argv, check=True, timeout=60, log=None):
        """Run ``argv`` inside the node (all its namespaces) without ssh."""
        leader = self.leader()
        if not leader:
            return None
        return run(["nsenter", "-t", leader, "-a", "--", *argv], capture=True, check=check,
                   timeout=timeout, log=log)

    # ------------------------------------------------------------------ stop
    def stop(self, log, timeout=30):
        """SIGTERM nspawn (clean container shutdown), SIGKILL after ``timeout``; unmount."""
        pid = self.pid()
        if pid:
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while pid_alive(pid) and time.monotonic() < deadline:
                _reap(pid)
                time.sleep(0.2)
            if pid_alive(pid):
                os.kill(pid, signal.SIGKILL)
                time.sleep(0.5)
                _reap(pid)
        self.pidfile.unlink(missing_ok=True)
        self.unmount(log)

    def crash(self, log, timeout=30):
        """Power cut: SIGKILL the container's PID 1 (its whole PID namespace dies with it),
        then let nspawn exit and unmount."""
        leader = self.leader()
        if leader:
            os.kill(leader, signal.SIGKILL)
        pid = self.pid()
        deadline = time.monotonic() + timeout
        while pid and pid_alive(pid) and time.monotonic() < deadline:
            _reap(pid)
            time.sleep(0.2)
        self.stop(log, timeout=5)  # whatever is left: SIGTERM, SIGKILL, unmount

    def unmount(self, log):
        for _ in range(3):
            if not mounted(self.merged):
                return
            run(["umount", self.merged], log=log, check=False)
            if mounted(self.merged):
                time.sleep(1)
        if mounted(self.merged):
            run(["umount", "--lazy", self.merged], log=log)


def _reap(pid):
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


# ---------------------------------------------------------------------- UML nodes
def mac_for(address):
    """A stable, locally administered unicast MAC from an IPv4 address (52:54:<4 bytes>): a
    node that comes back after a power cut keeps the MAC its neighbours have cached."""
    import ipaddress

    return "52:54:" + ":".join(f"{b:02x}" for b in ipaddress.IPv4Address(address).packed)


def nics_from_identity(identity):
    """``[(index, address, prefixlen, gateway)]`` from ``Lab.identity()['nics']``, validated
    (they reach the guest's network config)."""
    import ipaddress

    out = []
    for index, address, prefixlen, gateway in identity.get("nics") or ():
        if not isinstance(index, int) or not 0 <= index < 10:
            raise CommandFailed(f"lab network index {index!r}: the lab has at most 10 networks")
        ipaddress.IPv4Address(address)
        if not isinstance(prefixlen, int) or not 8 <= prefixlen <= 30:
            raise CommandFailed(f"prefix length {prefixlen!r} of {address}: expected 8..30")
        if gateway is not None:
            ipaddress.IPv4Address(gateway)
        out.append((index, address, prefixlen, gateway))
    if not out:
        raise CommandFailed("a UML node needs an address on at least one site network")
    return out


def interfaces_text(nics):
    """ifupdown config of a UML node (a container's addresses are set from outside instead)."""
    lines = ["# written by mailha-lab at every boot"]
    for index, address, prefixlen, gateway in nics:
        lines += ["", f"auto eth{index}", f"iface eth{index} inet static",
                  f"    address {address}/{prefixlen}"]
        if gateway:
            lines.append(f"    gateway {gateway}")
    return "\n".join(lines) + "\n"


class UmlNode(Node):
    """A lab node as a User-mode Linux machine (salt_mailha_lab.uml): its own Linux kernel with
    IPVS, the same overlay root as a container (served to the guest over hostfs), systemd as
    init, NICs on taps ``mh-<node>-<i>`` in the bridge namespace (so ``network.set_link`` cuts
    them like a container's veths); it configures its own addresses (ifupdown)."""

    kind = "uml"
    boot_timeout = 180

    def __init__(self, name, run_dir, base_root, kernel=None):
        super().__init__(name, run_dir, base_root)
        self.kernel = kernel
        self.nics_file = self.dir / "nics.json"
        self.pkg_mount = self.merged / GUEST_PKG_DIR.lstrip("/") / "salt_mailha"

    def nics(self):
        import json

        try:
            return [tuple(n) for n in json.loads(self.nics_file.read_text())]
        except (OSError, ValueError) as exc:
            raise CommandFailed(f"node {self.name}: no NIC plan in {self.nics_file} ({exc})") \
                from None

    def machine(self):
        from salt_mailha_lab import uml

        try:
            nics = self.nics()
        except CommandFailed:
            nics = []
        width = max((n[0] for n in nics), default=-1) + 1
        taps, macs = [None] * width, [None] * width
        for index, address, _p, _g in nics:
            taps[index] = network.host_veth(self.name, index)
            macs[index] = mac_for(address)
        return uml.Machine(self.name, self.kernel, self.merged, self.dir, taps=taps,
                           netns=network.BRIDGE_NS, macs=macs)

    def pid(self):
        return self.machine().pid()

    def leader(self):
        """No host-visible init: the guest's processes live in its own kernel."""
        return None

    def prepare(self, identity, log):
        import json

        nics = nics_from_identity(identity)
        super().prepare(identity, log)
        self.nics_file.write_text(json.dumps(nics))
        ifaces = self.merged / "etc/network/interfaces.d/mailha-lab"
        ifaces.parent.mkdir(parents=True, exist_ok=True)
        ifaces.write_text(interfaces_text(nics))
        # a persistent journal (journald's "auto" storage): it survives a power cut in the upper
        (self.merged / "var/log/journal").mkdir(parents=True, exist_ok=True)
        if not mounted(self.pkg_mount):
            run(["mount", "--bind", "-o", "ro", PACKAGE_ROOT, self.pkg_mount], log=log)

    def start(self, log, binds=()):
        if binds:
            raise CommandFailed(f"node {self.name}: a UML node cannot share host directories "
                                f"({', '.join(str(h) for h, _ in binds)}); run it as a container")
        if self.kernel is None:
            raise CommandFailed(f"node {self.name}: no UML kernel recorded (run 'mailha-lab up')")
        for index, *_ in self.nics():
            network.ensure_tap(self.name, index, log)
        return self.machine().start(log=log)

    def wait_booted(self, timeout=90):
        timeout = max(timeout, self.boot_timeout)
        started = time.monotonic()
        self.machine().wait_agent(timeout)
        return self._wait_systemd(max(1.0, timeout - (time.monotonic() - started)))

    def exec(self, argv, check=True, timeout=60, log=None, input=None):
        return self.machine().exec(argv, check=check, timeout=timeout, input=input, log=log)

    def request_stop(self):
        self.machine().request_stop()

    def stop(self, log, timeout=20):
        """Clean stop (ctrl-alt-del -> poweroff), halt or power cut after ``timeout``; unmount."""
        how = self.machine().stop(timeout=timeout)
        with open(log, "a") as fh:
            fh.write(f"node {self.name}: UML stopped ({how})\n")
        self.unmount(log)

    def crash(self, log, timeout=30):
        """Power cut: SIGKILL the UML process group; what the guest had not written back to
        its upper layer is lost, as on a real machine."""
        self.machine().kill(timeout)
        self.unmount(log)

    def unplug(self, log):
        try:
            indexes = [n[0] for n in self.nics()]
        except CommandFailed:
            return
        for index in indexes:
            network.delete_link(network.host_veth(self.name, index), log)

    def unmount(self, log):
        if mounted(self.pkg_mount):
            run(["umount", self.pkg_mount], log=log, check=False)
            if mounted(self.pkg_mount):
                run(["umount", "--lazy", self.pkg_mount], log=log, check=False)
        super().unmount(log)
