"""A throw-away User-mode Linux guest with IPVS, for what this host kernel cannot do.

The host kernel has no IPVS (shared/notes/REAL-SERVICES.md section 5); the guest is Debian
testing's ``linux.uml`` run by :mod:`salt_mailha_lab.uml` (fetched and patched once, cached with
the lab's under ``$MAILHA_LAB_CACHE/uml``, default ``/var/cache/salt-mailha/lab``). Nothing is
installed in the guest: its root is an overlay of the host's own root (read-only lower, a tmpfs
upper), so it runs the host's ipvsadm, ldirectord, busybox, python and our venv. The kernel's
modules and the share directory (``share_dir``: a script in, results out) are host directories
mounted into the guest over hostfs at their host paths.

Usage::

    vm = IpvsGuest().build()         # the kernel (cached after the first time)
    result = vm.run("/path/to/share", "/path/to/share/guest.sh", timeout=600)
    result.console, result.guest_log, result.seconds
"""
import os
import shutil
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

SKIP_REASON = "host kernel has no IPVS; runs in a User-mode Linux guest"
MODULES = ("veth", "bridge", "ip_vs", "ip_vs_rr", "ip_vs_wrr", "ip_vs_wlc", "ip_vs_lc", "ip_vs_sh")
INIT = "/mailha-ipvs-init"

# The guest's init (busybox from the host root: static); the script's output goes to the share.
# /tmp stays the host's (read-only lower, writes to the tmpfs upper): a checkout and its venv
# under /tmp must stay visible to the guest, which runs the host's venv python.
INIT_SCRIPT = """#!/bin/busybox sh
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev 2>/dev/null
mount -t tmpfs tmpfs /run
mkdir -p /lib/modules/{release} {share}
mount -t hostfs none /lib/modules/{release} -o {modules} || echo "MAILHA-UML modules mount failed"
mount -t hostfs none {share} -o {share} || echo "MAILHA-UML share mount failed"
for m in {modules_list}; do modprobe $m || echo "MAILHA-UML modprobe $m failed"; done
ip link set lo up
echo "MAILHA-UML ready uptime=$(cut -d' ' -f1 /proc/uptime)"
/bin/sh {script} > {share}/guest.log 2>&1
echo "MAILHA-UML guest-rc=$?"
sync
/bin/busybox poweroff -f
"""


def cache_root():
    return Path(os.environ.get("MAILHA_LAB_CACHE", "/var/cache/salt-mailha/lab"))


def available():
    """(ok, reason): can a guest be fetched and run here?"""
    for tool in ("apt-get", "apt-cache", "dpkg-deb", "patchelf", "busybox"):
        if not shutil.which(tool):
            return False, f"{SKIP_REASON}, but {tool} is missing (run scripts/setup-host.sh)"
    if os.geteuid() != 0:
        return False, f"{SKIP_REASON}; needs root (overlay and tmpfs mounts, netns in the guest)"
    if not os.path.exists("/dev/net/tun"):
        return False, f"{SKIP_REASON}; needs /dev/net/tun"
    return True, ""


@dataclass
class GuestResult:
    returncode: int  # 0: the guest powered off by itself; 124: killed at the timeout
    console: str
    guest_log: str
    seconds: float


class IpvsGuest:
    def __init__(self, cache_dir=None, memory="768M"):
        self.cache_dir = Path(cache_dir) if cache_dir else cache_root()
        self.memory = memory
        self.kernel = None

    def build(self):
        """The UML kernel (``salt_mailha_lab.uml.ensure_kernel``; cached)."""
        from salt_mailha_lab import uml

        self.cache_dir.mkdir(parents=True, exist_ok=True)
        self.kernel = uml.ensure_kernel(self.cache_dir)
        return self

    def run(self, share_dir, script, timeout=600):
        """Boot, run ``/bin/sh script`` in the guest (output in share_dir/guest.log), power off."""
        from salt_mailha_lab import uml

        if self.kernel is None:
            self.build()
        share = Path(share_dir).resolve()
        work = share / ".uml"
        ovl, root, state = work / "ovl", work / "root", work / "state"
        for d in (ovl, root, state):
            d.mkdir(parents=True, exist_ok=True)
        mounted = []
        machine = None
        start = time.monotonic()
        rc = 124
        try:
            subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=0755", "tmpfs", str(ovl)], check=True)
            mounted.append(ovl)
            (ovl / "up").mkdir()
            (ovl / "work").mkdir()
            subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                            f"lowerdir=/,upperdir={ovl / 'up'},workdir={ovl / 'work'}", str(root)],
                           check=True)
            mounted.append(root)
            init = root / INIT.lstrip("/")
            init.write_text(INIT_SCRIPT.format(
                release=self.kernel.release, modules=self.kernel.modules, share=share, script=script,
                modules_list=" ".join(MODULES)))
            init.chmod(0o755)
            machine = uml.Machine(f"ipvs-{uuid.uuid4().hex[:8]}", self.kernel, root=root, state_dir=state,
                                  memory=self.memory, init=INIT, rename_nics=False)
            machine.start()
            deadline = time.monotonic() + timeout
            while machine.running() and time.monotonic() < deadline:
                time.sleep(0.2)
            if machine.running():
                machine.kill()
            else:
                rc = 0
        finally:
            seconds = time.monotonic() - start
            if machine is not None and machine.running():
                machine.kill()
            for m in reversed(mounted):
                subprocess.run(["umount", "-l", str(m)], check=False)
        console = (state / "console.log").read_text(errors="replace") if (state / "console.log").exists() else ""
        log = share / "guest.log"
        shutil.rmtree(work, ignore_errors=True)
        return GuestResult(returncode=rc, console=console,
                           guest_log=log.read_text(errors="replace") if log.exists() else "", seconds=seconds)
