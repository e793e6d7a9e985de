"""A throw-away qemu TCG guest with Debian's 6.1 kernel, for what this host kernel cannot do (IPVS).

The host kernel here has no IPVS and no loadable modules, and /dev/kvm is unusable, so the guest
runs under TCG (see shared/notes/REAL-SERVICES.md section 5). Nothing is installed in the guest:
the initramfs loads the needed modules, mounts the host root read-only over 9p with a tmpfs
overlay, and ``switch_root``s into it, so the guest runs the host's ipvsadm, ldirectord, python
and our venv. A second, writable 9p share (``share_dir``) is mounted at the same path inside the
guest to pass a script in and results out.

The kernel and initramfs come from :func:`salt_mailha.lab.vm.build_boot` (the lab's VM nodes use
the same builder): ``apt-get download`` of ``linux-image-<abi>-amd64`` and ``busybox-static``,
cached under ``~/.cache/salt-mailha/ipvs-vm/<kernel>-<key>`` (override with ``MAILHA_VM_CACHE``).

Usage::

    vm = IpvsGuest()
    vm.build()                       # cached after the first time
    result = vm.run("/path/to/share", "/path/to/share/guest.sh", timeout=600)
    result.console                   # serial console text
"""
import gzip
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from salt_mailha.lab import vm as labvm

SKIP_REASON = "host kernel has no IPVS; runs in qemu TCG guest"

# Root modules the guest needs; their `depends=` closure is added in load order (soft
# dependencies such as libcrc32c's crc32c provider are known to salt_mailha.lab.vm.module_order).
ROOT_MODULES = [
    "virtio_pci", "9pnet_virtio", "9p", "overlay", "veth", "bridge",
    "ip_vs", "ip_vs_rr", "ip_vs_wrr", "ip_vs_wlc", "ip_vs_lc", "ip_vs_sh",
]

# /tmp is left as the host's (read-only lower, writes to the tmpfs upper): a checkout and its venv
# under /tmp must stay visible to the guest, which runs the host's venv python.
INIT_SCRIPT = r"""#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
for m in $(cat /modlist); do insmod /lib/modules/$m.ko || echo "MAILHA-VM insmod $m failed"; done
echo "MAILHA-VM initrd-ok uptime=$(cut -d' ' -f1 /proc/uptime)"
mkdir -p /host /ovl /newroot
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=262144 hostroot /host || { echo "MAILHA-VM 9p failed"; poweroff -f; }
mount -t tmpfs tmpfs /ovl; mkdir -p /ovl/up /ovl/work
mount -t overlay overlay -o lowerdir=/host,upperdir=/ovl/up,workdir=/ovl/work /newroot || { echo "MAILHA-VM overlay failed"; poweroff -f; }
mount --move /proc /newroot/proc; mount --move /sys /newroot/sys; mount --move /dev /newroot/dev
mount -t tmpfs tmpfs /newroot/run
SHARE=$(cat /share_path); SCRIPT=$(cat /script_path)
mkdir -p /newroot$SHARE
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 vmshare /newroot$SHARE || { echo "MAILHA-VM share failed"; poweroff -f; }
exec switch_root /newroot /bin/sh -c "/bin/sh $SCRIPT > $SHARE/guest.log 2>&1; echo MAILHA-VM guest-rc=\$?; echo o > /proc/sysrq-trigger; sleep 30"
"""


def cache_root():
    return Path(os.environ.get("MAILHA_VM_CACHE", Path.home() / ".cache" / "salt-mailha" / "ipvs-vm"))


def available():
    """(ok, reason): can a guest be built and run here?"""
    for tool in ("qemu-system-x86_64", "apt-get", "apt-cache", "dpkg-deb"):
        if not shutil.which(tool):
            return False, f"{SKIP_REASON}, but {tool} is missing (run scripts/setup-host.sh)"
    if os.geteuid() != 0:
        return False, f"{SKIP_REASON}; needs root for the 9p share of / and netns in the guest"
    return True, ""


@dataclass
class GuestResult:
    returncode: int
    console: str
    guest_log: str
    seconds: float


class IpvsGuest:
    def __init__(self, cache_dir=None):
        self.cache_dir = Path(cache_dir) if cache_dir else cache_root()
        self.kernel = self.initrd = None

    def build(self):
        """Kernel + initramfs from apt (salt_mailha.lab.vm.build_boot), cached after the first
        time; the cache is keyed on the init script and module list too."""
        boot = labvm.build_boot(INIT_SCRIPT, ROOT_MODULES, self.cache_dir)
        self.kernel, self.initrd = boot.kernel, boot.initrd
        return self

    def run(self, share_dir, script, timeout=600, memory_mb=1024):
        """Boot, run ``/bin/sh script`` inside the guest (output in share_dir/guest.log), power off."""
        if self.kernel is None:
            self.build()
        share_dir = Path(share_dir).resolve()
        # The share/script paths go in a tiny second initramfs appended to the cached one.
        extra = labvm.newc([("share_path", 0o100644, str(share_dir).encode()),
                       ("script_path", 0o100644, str(script).encode())])
        initrd = share_dir / ".initrd.cpio"
        with open(initrd, "wb") as f:
            f.write(self.initrd.read_bytes())
            f.write(gzip.compress(extra))
        argv = [
            "qemu-system-x86_64", "-accel", "tcg", "-m", str(memory_mb), "-smp", "2",
            "-nographic", "-no-reboot", "-kernel", str(self.kernel), "-initrd", str(initrd),
            "-append", "console=ttyS0 panic=-1 loglevel=4 quiet",
            "-virtfs", "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap",
            "-virtfs", f"local,path={share_dir},mount_tag=vmshare,security_model=none,multidevs=remap",
            "-nic", "none", "-serial", "stdio", "-display", "none", "-monitor", "none",
        ]
        start = time.monotonic()
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)
        seconds = time.monotonic() - start
        initrd.unlink(missing_ok=True)
        log = share_dir / "guest.log"
        return GuestResult(
            returncode=proc.returncode,
            console=proc.stdout.decode(errors="replace") + proc.stderr.decode(errors="replace"),
            guest_log=log.read_text(errors="replace") if log.exists() else "",
            seconds=seconds,
        )
