"""The base Debian tree every node overlays: built once, then reused while its inputs match.

Built with debootstrap from the machine's own apt mirror (read at run time), the service
packages installed with ``policy-rc.d`` refusing every start and then disabled (Salt starts what
a node's role needs), and Salt installed offline into ``/opt/salt`` from wheels built on the host
(the nodes have no internet). The tree is built in ``base.new`` and renamed when complete, so an
interrupted build is never mistaken for a cached one.
"""
import hashlib
import importlib.metadata
import json
import os
import pathlib
import re
import shutil
import sys

from salt_mailha.core.errors import CommandFailed, Refused
from salt_mailha_lab import aptsources
from salt_mailha_lab.util import mounted, run

BASE_FORMAT = 3  # bump when the build recipe below changes: invalidates every cached tree

BOOT_PACKAGES = (
    "systemd-sysv", "dbus", "iproute2", "ifupdown", "iputils-ping", "procps", "psmisc", "kmod",
    "python3", "python3-venv", "ca-certificates", "netbase", "less", "netcat-openbsd",
)
# Beyond what the formula installs (core.render.PACKAGES, read at build time so a new package
# there rebuilds the tree): the DNS server and client tools the lab and the drill use.
EXTRA_PACKAGES = (
    "mariadb-client", "arping", "bind9", "bind9-utils", "bind9-dnsutils", "nfs-kernel-server",
)


def service_packages():
    """Every Debian package a role's formula file installs, plus the lab's extras: the nodes
    have no internet, so ``pkg.installed`` must find them already there."""
    from salt_mailha.core.render import PACKAGES

    return tuple(sorted({p for pkgs in PACKAGES.values() for p in pkgs} | set(EXTRA_PACKAGES)))
# Installed but not started at boot: the formula decides what runs where.
DISABLED_UNITS = (
    "mariadb", "slapd", "named", "postfix", "dovecot", "keepalived", "ldirectord", "ipvsadm",
    "garb", "rsync", "nginx", "nfs-client.target", "nfs-server", "rpcbind", "rpcbind.socket",
)
MASKED_UNITS = (
    "apt-daily.timer", "apt-daily-upgrade.timer", "e2scrub_reap.service", "e2scrub_all.timer",
    "fstrim.timer", "systemd-networkd-wait-online.service", "man-db.timer",
    "dpkg-db-backup.timer", "getty@tty1.service",
)
DEBCONF = (
    "slapd slapd/no_configuration boolean true\n"
    "postfix postfix/main_mailer_type select No configuration\n"
)
MINION_UNIT = """\
[Unit]
Description=Salt minion (salt-mailha lab)
After=network.target

[Service]
ExecStart=/opt/salt/bin/salt-minion
KillMode=process
Restart=on-failure
RestartSec=2

[Install]
WantedBy=multi-user.target
"""


def wheel_requirements():
    """What the guests' /opt/salt needs: this package's install_requires (salt pinned there)."""
    reqs = []
    for req in importlib.metadata.requires("salt-mailha") or ():
        if "extra ==" in req:
            continue
        reqs.append(req.split(";")[0].strip())
    if not any(re.match(r"salt\b", r) for r in reqs):
        raise CommandFailed("salt-mailha metadata has no salt requirement; reinstall the package "
                            "(pip install -e .) so the lab knows which Salt to put in the nodes")
    return sorted(reqs)


def inputs(suite, mirror):
    """Everything the tree depends on; a change means a rebuild."""
    return {
        "format": BASE_FORMAT,
        "suite": suite,
        "mirror_sha256": hashlib.sha256(mirror.encode()).hexdigest(),
        "boot_packages": list(BOOT_PACKAGES),
        "service_packages": list(service_packages()),
        "disabled": list(DISABLED_UNITS),
        "masked": list(MASKED_UNITS),
        "wheels": wheel_requirements(),
    }


def _enabled_units(root):
    out = run(["chroot", root, "systemctl", "list-unit-files", "--state=enabled", "--no-legend"],
              capture=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


class BaseTree:
    def __init__(self, cache_dir):
        self.cache = pathlib.Path(cache_dir)
        self.root = self.cache / "base"
        self.stamp = self.cache / "base.stamp.json"
        self.wheels = self.cache / "wheels"

    def current(self, wanted):
        try:
            stamp = json.loads(self.stamp.read_text())
        except (OSError, ValueError):
            return False
        stamp.pop("uml", None)  # what the tree's UML modules came from: see install_uml
        return self.root.is_dir() and stamp == wanted

    def install_uml(self, kernel, in_use):
        """Put the UML kernel's modules into the tree (the balancers ``modprobe ip_vs`` there)
        and record the packages' versions in the stamp. Returns True when it changed the tree."""
        from salt_mailha_lab import uml

        stamp = json.loads(self.stamp.read_text())
        have = (self.root / "lib/modules" / kernel.release / "modules.dep").exists()
        if have and stamp.get("uml") == kernel.versions:
            return False
        if in_use:
            raise Refused(f"UML kernel {kernel.versions} is new to the base tree but lab nodes "
                          "still overlay it; run 'mailha-lab down' first")
        modules = self.root / "lib/modules"
        for old in (modules.iterdir() if modules.is_dir() else ()):
            if old.name != kernel.release and (old / uml.MARKER).exists():
                shutil.rmtree(old)
        uml.install_modules(kernel, self.root)
        stamp["uml"] = dict(kernel.versions)
        self.stamp.write_text(json.dumps(stamp, indent=1, sort_keys=True))
        return True

    def ensure(self, progress, in_use):
        """Build the tree unless the cached one matches. Returns True when it (re)built."""
        suite, mirror = aptsources.host_mirror()
        wanted = inputs(suite, mirror)
        if self.current(wanted):
            progress.say(f"base tree: cached ({self.root})")
            return False
        if in_use:
            raise Refused("the base tree's inputs changed but lab nodes still overlay it; run "
                          "'mailha-lab down' first (an overlay's lower dir must never change)")
        new = self.cache / "base.new"
        with progress.step("build salt wheels on the host") as log:
            self._wheels(wanted["wheels"], log)
        with progress.step(f"debootstrap {suite} (cold: a few minutes)") as log:
            self._discard(new)
            new.parent.mkdir(parents=True, exist_ok=True)
            run(["debootstrap", "--variant=minbase", "--include=" + ",".join(BOOT_PACKAGES),
                 suite, new, mirror], log=log, timeout=1800)
        with progress.step("install service packages (disabled)") as log:
            self._chrooted(new, log, lambda: self._packages(new, log))
        with progress.step("install salt offline into /opt/salt") as log:
            self._chrooted(new, log, lambda: self._salt(new, wanted["wheels"], log))
        with progress.step("finish base tree") as log:
            self._finish(new, log)
            self._discard(self.root)
            self.stamp.unlink(missing_ok=True)
            new.rename(self.root)
            self.stamp.write_text(json.dumps(wanted, indent=1, sort_keys=True))
        return True

    def _wheels(self, reqs, log):
        self.wheels.mkdir(parents=True, exist_ok=True)
        pip = pathlib.Path(sys.executable).with_name("pip")
        run([pip, "wheel", "-q", "-w", self.wheels, *reqs], log=log, timeout=1800)

    @staticmethod
    def _discard(tree):
        if not tree.exists():
            return
        for sub in ("dev/pts", "dev", "proc", "sys"):
            if mounted(tree / sub):
                raise Refused(f"{tree / sub} is still mounted; unmount it before the lab "
                              "deletes the tree")
        shutil.rmtree(tree)

    @staticmethod
    def _chrooted(root, log, body):
        """Run ``body`` with proc, sys and dev mounted in ``root`` and services refused."""
        policy = root / "usr/sbin/policy-rc.d"
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
        shutil.copyfile("/etc/resolv.conf", root / "etc/resolv.conf")
        done = []
        try:
            for src, sub, args in (("proc", "proc", ["-t", "proc"]), ("sysfs", "sys", ["-t", "sysfs"]),
                                   ("/dev", "dev", ["--bind"]), ("devpts", "dev/pts", ["-t", "devpts"])):
                run(["mount", *args, src, root / sub], log=log)
                done.append(root / sub)
            body()
        finally:
            for path in reversed(done):
                run(["umount", path], log=log, check=False)
            policy.unlink(missing_ok=True)

    @staticmethod
    def _packages(root, log):
        env = {"DEBIAN_FRONTEND": "noninteractive", "LC_ALL": "C"}
        run(["chroot", root, "debconf-set-selections"], log=log, input=DEBCONF)
        run(["chroot", root, "apt-get", "update", "-q"], log=log, env=env)
        enabled_before = _enabled_units(root)
        scripts_before = set(os.listdir(root / "etc/init.d"))
        run(["chroot", root, "apt-get", "install", "-y", "-q", "--no-install-recommends",
             *service_packages()], log=log, env=env, timeout=1800)
        run(["chroot", root, "apt-get", "clean"], log=log, env=env)
        # Whatever the packages enabled (units, sockets such as mariadb.socket, LSB scripts
        # such as slapd's) is switched off: the formula starts what a role needs.
        units = root / "lib/systemd/system"
        present = {u for u in DISABLED_UNITS
                   if (units / (u if "." in u else u + ".service")).exists()}
        present |= _enabled_units(root) - enabled_before
        if present:
            run(["chroot", root, "systemctl", "disable", *sorted(present)], log=log)
        for script in sorted(set(os.listdir(root / "etc/init.d")) - scripts_before):
            run(["chroot", root, "update-rc.d", script, "disable"], log=log, check=False)
        run(["chroot", root, "systemctl", "mask", *MASKED_UNITS], log=log)

    def _salt(self, root, reqs, log):
        run(["chroot", root, "python3", "-m", "venv", "/opt/salt"], log=log)
        staged = root / "tmp/lab-wheels"
        shutil.rmtree(staged, ignore_errors=True)
        shutil.copytree(self.wheels, staged)
        try:
            run(["chroot", root, "/opt/salt/bin/pip", "install", "-q", "--no-index",
                 "--find-links", "/tmp/lab-wheels", *reqs], log=log, timeout=1800)
        finally:
            shutil.rmtree(staged, ignore_errors=True)

    @staticmethod
    def _finish(root, log):
        (root / "etc/systemd/system/salt-minion.service").write_text(MINION_UNIT)
        run(["chroot", root, "systemctl", "enable", "salt-minion.service"], log=log)
        for tool in ("salt-call", "salt-minion"):
            link = root / "usr/local/bin" / tool
            link.unlink(missing_ok=True)
            link.symlink_to(f"/opt/salt/bin/{tool}")
        (root / "etc/fstab").write_text("")  # nspawn: nothing to mount (LAB.md gotcha 5)
        # never ship identity in the base: each node gets its own in its upper layer
        for p in ("etc/machine-id", "etc/salt/minion_id", "var/lib/dbus/machine-id"):
            (root / p).unlink(missing_ok=True)
        (root / "etc/machine-id").write_text("")
        shutil.rmtree(root / "etc/salt/pki", ignore_errors=True)
        (root / "etc/resolv.conf").write_text("")
