"""A throw-away qemu TCG guest with Debian's 6.1 kernel, for what this host kernel cannot do (IPVS).

The host kernel here has no IPVS and no loadable modules, and /dev/kvm is unusable, so the guest
runs under TCG (see shared/notes/REAL-SERVICES.md section 5). Nothing is installed in the guest:
the initramfs loads the needed modules, mounts the host root read-only over 9p with a tmpfs
overlay, and ``switch_root``s into it, so the guest runs the host's ipvsadm, ldirectord, python
and our venv. A second, writable 9p share (``share_dir``) is mounted at the same path inside the
guest to pass a script in and results out.

Only apt is consulted on the host: ``apt-get download`` of ``linux-image-<abi>-amd64`` (whichever
``linux-image-amd64`` depends on) and ``busybox-static``; the kernel, modules and initramfs are
cached under ``~/.cache/salt-mailha/ipvs-vm/<kernel>`` (override with ``MAILHA_VM_CACHE``).

Usage::

    vm = IpvsGuest()
    vm.build()                       # cached after the first time
    result = vm.run("/path/to/share", "/path/to/share/guest.sh", timeout=600)
    result.console                   # serial console text
"""
import gzip
import hashlib
import io
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

SKIP_REASON = "host kernel has no IPVS; runs in qemu TCG guest"

# Root modules the guest needs; their `depends=` closure is added in load order.
ROOT_MODULES = [
    "virtio_pci", "9pnet_virtio", "9p", "overlay", "veth", "bridge",
    "ip_vs", "ip_vs_rr", "ip_vs_wrr", "ip_vs_wlc", "ip_vs_lc", "ip_vs_sh",
]
# Soft dependencies modinfo does not list as `depends=` (libcrc32c needs a crc32c provider).
SOFT_BEFORE = {"libcrc32c": ["crc32c_generic"]}

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


def kernel_package():
    """The linux-image-<abi>-amd64 package apt's linux-image-amd64 currently depends on."""
    out = subprocess.run(["apt-cache", "depends", "linux-image-amd64"], capture_output=True,
                         text=True, check=True).stdout
    m = re.search(r"Depends:\s*(linux-image-[0-9][\w.+-]*-amd64)\b", out)
    if not m:
        raise RuntimeError(f"cannot find a kernel package in `apt-cache depends linux-image-amd64`:\n{out}")
    return m.group(1)


def _modinfo(path):
    data = Path(path).read_bytes()
    deps = re.search(rb"(?:^|\x00)depends=([^\x00]*)\x00", data)
    return [d for d in (deps.group(1).decode().split(",") if deps else []) if d]


def _newc(entries):
    """A cpio 'newc' archive from (name, mode, bytes) entries (directories have data=None)."""
    out = io.BytesIO()
    for ino, (name, mode, data) in enumerate(entries + [("TRAILER!!!", 0, b"")], start=1):
        data = data or b""
        nameb = name.encode() + b"\x00"
        hdr = "070701" + "".join(f"{v:08x}" for v in (
            ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(nameb), 0))
        out.write(hdr.encode() + nameb)
        out.write(b"\x00" * (-(110 + len(nameb)) % 4))
        out.write(data)
        out.write(b"\x00" * (-len(data) % 4))
    return out.getvalue()


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
        """Download (apt), extract and assemble kernel + initramfs once; reuse the cache after."""
        pkg = kernel_package()
        # keyed on the init script too: a changed /init must never reuse an old initramfs
        kdir = self.cache_dir / f"{pkg}-{hashlib.sha256(INIT_SCRIPT.encode()).hexdigest()[:12]}"
        kernel, initrd = kdir / "vmlinuz", kdir / "initrd.cpio.gz"
        if kernel.exists() and initrd.exists():
            self.kernel, self.initrd = kernel, initrd
            return self
        dl = kdir / "dl"
        shutil.rmtree(kdir, ignore_errors=True)
        dl.mkdir(parents=True)
        subprocess.run(["apt-get", "download", "-q", pkg, "busybox-static"], cwd=dl, check=True,
                       stdout=subprocess.DEVNULL)
        root = kdir / "root"
        for deb in sorted(dl.glob("*.deb")):
            subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
        kver = pkg[len("linux-image-"):]
        mods = {p.name[:-3]: p for p in (root / "lib/modules" / kver).rglob("*.ko")}
        order = []

        def add(name):
            name = name.replace("-", "_") if name not in mods else name
            if name in order:
                return
            if name not in mods:
                raise RuntimeError(f"module {name} not found in {pkg}")
            for dep in SOFT_BEFORE.get(name, []) + _modinfo(mods[name]):
                add(dep)
            order.append(name)

        for m in ROOT_MODULES:
            add(m)
        entries = [(d, 0o40755, None) for d in
                   ("bin", "dev", "proc", "sys", "host", "ovl", "newroot", "lib", "lib/modules")]
        entries.append(("bin/busybox", 0o100755, (root / "bin/busybox").read_bytes()))
        entries.append(("init", 0o100755, INIT_SCRIPT.encode()))
        entries.append(("modlist", 0o100644, ("\n".join(order) + "\n").encode()))
        entries += [(f"lib/modules/{m}.ko", 0o100644, mods[m].read_bytes()) for m in order]
        shutil.copy(root / "boot" / f"vmlinuz-{kver}", kernel)
        (kdir / "modlist").write_text("\n".join(order) + "\n")
        initrd.write_bytes(gzip.compress(_newc(entries), compresslevel=1))
        shutil.rmtree(dl)
        shutil.rmtree(root)
        self.kernel, self.initrd = kernel, initrd
        return self

    def run(self, share_dir, script, timeout=600, memory_mb=1024):
        """Boot, run ``/bin/sh script`` inside the guest (output in share_dir/guest.log), power off."""
        if self.kernel is None:
            self.build()
        share_dir = Path(share_dir).resolve()
        # The share/script paths go in a tiny second initramfs appended to the cached one.
        extra = _newc([("share_path", 0o100644, str(share_dir).encode()),
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
