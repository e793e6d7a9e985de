"""One lab node: an overlay over the base tree booted by systemd-nspawn with real systemd.

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
from salt_mailha.lab import network
from salt_mailha.lab.util import mounted, pid_alive, pid_from_file, run

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
        deadline = time.monotonic() + timeout
        state = "no answer"
        while time.monotonic() < deadline:
            if not self.running():
                raise RuntimeError(f"node {self.name}: systemd-nspawn exited; see {self.console}")
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
