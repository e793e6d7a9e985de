"""User-mode Linux machines: a Linux kernel with IPVS as an ordinary host process.

This host's kernel has no IPVS and its KVM cannot boot a stock kernel; User-mode Linux (UML)
runs Debian's ``linux.uml`` as a process, guest code natively, system calls intercepted with
seccomp (``seccomp=on``; see shared/notes/UML.md for what was measured).

API (small on purpose; the lab's balancers and the tests' directors use the same calls)::

    from salt_mailha_lab import uml

    kernel = uml.ensure_kernel(cache_dir, log=path)   # fetch/patch once, cached; a Kernel
    uml.boot_check(kernel, log=path)                  # boots it, loads ip_vs, powers off: seconds
    uml.install_modules(kernel, root)                 # root/lib/modules/<release> (hard links)
    m = uml.Machine("lb1", kernel, root=merged_dir, state_dir=node_dir,
                    taps=["mh-lb1-0", "mh-lb1-1"], netns="mhlab-net")
    m.start(log=path)       # boots; systemd as init unless init= is given; returns the pid
    m.wait_agent(60)        # until the in-guest exec agent answers (see below)
    m.exec(["ipvsadm", "-Ln"])  # CompletedProcess, or None while the agent cannot answer
    m.kill()                # power cut: SIGKILL the UML process group
    m.stop()                # clean: ctrl-alt-del -> poweroff.target, then halt, then SIGKILL

- :func:`ensure_kernel` downloads ``user-mode-linux`` and ``libc6`` from Debian's testing
  suite with a private apt configuration (sources, lists and archives under the cache; the
  mirror is the one this machine's apt already uses, read at run time and never stored in the
  project), ``dpkg -x`` both, and ``patchelf``\\ s the binary onto the newer C library (the 7.x
  binary needs glibc >= 2.38; Debian 12 has 2.36; running it through ``ld.so --library-path``
  maps it too high for UML). Nothing is pinned: the candidate versions of the day are taken,
  recorded in ``<cache>/uml/stamp.json`` (and by the lab in its base stamp), and the index is
  re-read at most every ``REFRESH`` seconds; a cached kernel is kept when the mirror cannot be
  reached. Only testing's and unstable's kernels boot on this CPU (Debian 12's and 13's panic).
- ``root`` is a host directory served to the guest as its root over hostfs (give it an overlay's
  merged directory so the lower tree stays untouched). The guest's NICs are ``vec<i>`` on the
  given taps (which must exist in ``netns``); :meth:`Machine.start` writes a oneshot unit
  renaming them ``eth<i>`` when ``rename_nics`` (default), and the exec agent's unit.
- The exec agent (system ``python3`` in the guest, stdlib only) reads requests from a spool
  directory inside ``root`` (``/var/lib/mailha-uml/spool``, seen by the host through the root
  directory) and writes replies there: no network, so it answers while the guest's cables are
  cut. Secrets given as ``input`` sit in a 0600 file for the request's lifetime only.
- Processes: the UML kernel runs in its own session (pgid = pid) with its helpers; its pid is in
  ``<state_dir>/uml.pid``, its console in ``<state_dir>/console.log``, its management console
  socket in ``<state_dir>/uml/<name>/mconsole`` (spoken to directly: no uml-utilities needed).
"""
import contextlib
import dataclasses
import hashlib
import json
import os
import pathlib
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time
import uuid

from salt_mailha.core.errors import CommandFailed, Refused
from salt_mailha_lab import aptsources
from salt_mailha_lab.util import pid_alive, run

SUITE = "testing"  # Debian 12's and 13's UML kernels panic on this CPU (AMX FP state)
PACKAGES = ("user-mode-linux", "libc6")
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
REFRESH = 24 * 3600  # seconds between two reads of the testing index for new versions
FORMAT = 1  # bump when the cache layout below changes
MEMORY = "1024M"  # 384M: the guest OOM-killed salt-minion during state.apply
MARKER = ".mailha-uml"  # in a modules tree install_modules made (others are never removed)
AGENT_DIR = "var/lib/mailha-uml"  # in the guest's root
AGENT_PATH = AGENT_DIR + "/agent.py"
SPOOL = AGENT_DIR + "/spool"

AGENT = r'''"""mailha UML exec agent: runs argv lists the host drops into the spool directory."""
import json, os, subprocess, time

SPOOL = "/@SPOOL@"

def answer(rid):
    path = os.path.join(SPOOL, rid + ".req")
    try:
        with open(path) as fh:
            req = json.load(fh)
    except (OSError, ValueError):
        return
    finally:
        try:
            os.unlink(path)
        except OSError:
            pass
    try:
        p = subprocess.run(req["argv"], input=req.get("input") or "", capture_output=True,
                           text=True, timeout=req.get("timeout", 60))
        rep = {"rc": p.returncode, "stdout": p.stdout, "stderr": p.stderr}
    except subprocess.TimeoutExpired:
        rep = {"rc": 124, "stdout": "", "stderr": "timed out in the guest"}
    except Exception as exc:
        rep = {"rc": 127, "stdout": "", "stderr": f"{type(exc).__name__}: {exc}"}
    tmp = os.path.join(SPOOL, rid + ".part")
    with open(tmp, "w") as fh:
        json.dump(rep, fh)
        fh.flush()
        os.fsync(fh.fileno())  # hostfs: the data must reach the host before the name does
    os.rename(tmp, os.path.join(SPOOL, rid + ".out"))

def main():
    import threading
    os.makedirs(SPOOL, exist_ok=True)
    seen = set()
    while True:
        names = {n[:-4] for n in os.listdir(SPOOL) if n.endswith(".req")}
        for rid in names - seen:
            threading.Thread(target=answer, args=(rid,), daemon=True).start()
        seen = names
        time.sleep(0.1)

main()
'''.replace("@SPOOL@", SPOOL)

AGENT_UNIT = """\
[Unit]
Description=mailha UML exec agent (spool /@SPOOL@)
DefaultDependencies=no
Conflicts=shutdown.target
Before=shutdown.target

[Service]
ExecStart=/usr/bin/python3 -I /@AGENT@
Restart=always
RestartSec=1

[Install]
WantedBy=sysinit.target
""".replace("@SPOOL@", SPOOL).replace("@AGENT@", AGENT_PATH)

RENAME_UNIT = """\
[Unit]
Description=mailha UML: name the vector NICs eth<i>
DefaultDependencies=no
Before=network-pre.target networking.service
Wants=network-pre.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/sh -c 'for d in /sys/class/net/vec*; do [ -e "$d" ] || continue; n=$${d##*/vec}; ip link set "vec$$n" name "eth$$n"; done'

[Install]
WantedBy=sysinit.target
"""

# The boot check's init: a static busybox in a tiny root, IPVS loaded, then power off.
CHECK_INIT = """#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
modprobe ip_vs && modprobe ip_vs_wrr && modprobe ip_vs_sh
echo "MAILHA-UML-CHECK release=$(uname -r) ipvs=$(head -1 /proc/net/ip_vs | tr ' ' _)"
poweroff -f
"""


@dataclasses.dataclass(frozen=True)
class Kernel:
    """A patched ``linux.uml`` ready to run, its modules and the package versions it came from."""

    binary: pathlib.Path
    modules: pathlib.Path  # .../lib/modules/<release>
    release: str
    versions: dict  # Debian package -> version

    def to_json(self):
        return {"binary": str(self.binary), "modules": str(self.modules),
                "release": self.release, "versions": dict(self.versions)}

    @classmethod
    def from_json(cls, data):
        return cls(pathlib.Path(data["binary"]), pathlib.Path(data["modules"]), data["release"],
                   dict(data["versions"]))


# ---------------------------------------------------------------------- fetch and patch
def _apt(root):
    """apt-get options of the private configuration under ``root`` (never the host's lists)."""
    return ["-o", f"Dir::Etc::SourceList={root / 'sources.list'}",
            "-o", f"Dir::Etc::SourceParts={root / 'empty'}",
            "-o", f"Dir::Etc::Preferences={root / 'empty' / 'none'}",
            "-o", f"Dir::Etc::PreferencesParts={root / 'empty'}",
            "-o", f"Dir::State::Lists={root / 'lists'}",
            "-o", f"Dir::Cache={root / 'cache'}",
            "-o", f"Dir::State::status={root / 'status'}",
            "-o", "Acquire::Languages=none", "-o", "APT::Sandbox::User=root", "-q"]


def sources_line(mirror, suite=SUITE):
    """The private sources.list line (pure)."""
    if not mirror or any(c.isspace() for c in mirror):
        raise Refused(f"apt mirror URI {mirror!r} is empty or has spaces")
    return f"deb [signed-by={KEYRING}] {mirror} {suite} main\n"


def _candidates(apt, root, log):
    """``{package: candidate version}`` from the private index."""
    out = run(["apt-cache", *apt, "policy", *PACKAGES], capture=True, log=log).stdout
    return parse_policy(out)


def parse_policy(text):
    """``apt-cache policy`` output -> ``{package: candidate}`` (pure; ``(none)`` left out)."""
    found, pkg = {}, None
    for line in text.splitlines():
        if line and not line[0].isspace() and line.rstrip().endswith(":"):
            pkg = line.strip()[:-1]
        elif pkg and line.strip().startswith("Candidate:"):
            cand = line.split(":", 1)[1].strip()
            if cand != "(none)":
                found[pkg] = cand
    return found


def _stamp(cache):
    try:
        return json.loads((cache / "stamp.json").read_text())
    except (OSError, ValueError):
        return {}


def _ready(cache, stamp):
    k = stamp.get("kernel")
    return (stamp.get("format") == FORMAT and k and pathlib.Path(k["binary"]).is_file()
            and pathlib.Path(k["modules"]).is_dir())


def ensure_kernel(cache_dir, log=None, refresh=REFRESH):
    """A bootable :class:`Kernel` under ``<cache_dir>/uml``: reused while the testing index,
    read at most every ``refresh`` seconds, offers the same versions; else downloaded,
    extracted and patched into a new directory (complete or absent)."""
    cache = pathlib.Path(cache_dir) / "uml"
    stamp = _stamp(cache)
    if _ready(cache, stamp) and time.time() - stamp.get("checked", 0) < refresh:
        return Kernel.from_json(stamp["kernel"])
    for tool in ("apt-get", "apt-cache", "dpkg-deb", "patchelf"):
        if not shutil.which(tool):
            raise CommandFailed(f"{tool} is missing; run scripts/setup-host.sh (Debian packages "
                                "apt, dpkg, patchelf)")
    apt_root = cache / "apt"
    for d in ("empty", "lists/partial", "cache/archives/partial"):
        (apt_root / d).mkdir(parents=True, exist_ok=True)
    (apt_root / "status").touch()
    _suite, mirror = aptsources.host_mirror()
    (apt_root / "sources.list").write_text(sources_line(mirror))
    apt = _apt(apt_root)
    try:
        run(["apt-get", *apt, "update"], log=log, timeout=600)
        wanted = _candidates(apt, apt_root, log)
    except CommandFailed:
        if _ready(cache, stamp):  # offline: the cached kernel still boots
            return Kernel.from_json(stamp["kernel"])
        raise
    missing = [p for p in PACKAGES if p not in wanted]
    if missing:
        raise CommandFailed(f"Debian {SUITE} offers no {', '.join(missing)} (apt-cache policy in "
                            f"{apt_root}); the lab's balancers need its user-mode-linux")
    if _ready(cache, stamp) and stamp["kernel"]["versions"] == wanted:
        stamp["checked"] = time.time()
        (cache / "stamp.json").write_text(json.dumps(stamp, indent=1, sort_keys=True))
        return Kernel.from_json(stamp["kernel"])
    key = hashlib.sha256(json.dumps(wanted, sort_keys=True).encode()).hexdigest()[:12]
    final = cache / f"kernel-{key}"
    work = pathlib.Path(tempfile.mkdtemp(prefix=".build-", dir=cache))
    try:
        dl = work / "dl"
        dl.mkdir()
        run(["apt-get", *apt, "download", *(f"{p}={v}" for p, v in wanted.items())],
            log=log, cwd=dl, timeout=900)
        debs = {p: next(dl.glob(f"{p}_*.deb")) for p in PACKAGES}
        for p, deb in debs.items():
            run(["dpkg-deb", "-x", deb, work / p], log=log)
        shutil.rmtree(dl)
        kernel = _patch(work, final)
        shutil.rmtree(final, ignore_errors=True)
        work.rename(final)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    kernel = Kernel(final / kernel.binary.relative_to(work), final / kernel.modules.relative_to(work),
                    kernel.release, wanted)
    for old in cache.glob("kernel-*"):
        if old != final:
            shutil.rmtree(old, ignore_errors=True)
    shutil.rmtree(apt_root / "cache", ignore_errors=True)
    (cache / "stamp.json").write_text(json.dumps(
        {"format": FORMAT, "checked": time.time(), "kernel": kernel.to_json()},
        indent=1, sort_keys=True))
    return kernel


def _patch(work, final):
    """Point ``linux.uml`` at the extracted C library (its final path under ``final``)."""
    binary = work / "user-mode-linux/usr/bin/linux.uml"
    loaders = sorted((work / "libc6").rglob("ld-linux-x86-64.so.2"))
    mods = sorted((work / "user-mode-linux/usr/lib/uml/modules").iterdir())
    if not binary.is_file() or not loaders or len(mods) != 1:
        raise CommandFailed(f"unexpected package layout under {work}: linux.uml {binary.is_file()}, "
                            f"ld-linux {len(loaders)}, module trees {len(mods)}")
    libdir = final / loaders[0].parent.relative_to(work)
    run(["patchelf", "--set-interpreter", libdir / "ld-linux-x86-64.so.2", "--set-rpath", libdir,
         binary])
    return Kernel(binary, mods[0], mods[0].name, {})


def install_modules(kernel, root):
    """Put the kernel's modules at ``<root>/lib/modules/<release>`` (hard links when the cache
    is on the same filesystem), marked with ``MARKER``. Never call it on a tree an overlay is
    using as its lower layer."""
    dest = pathlib.Path(root) / "lib/modules" / kernel.release
    if (dest / "modules.dep").exists():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".new")
    shutil.rmtree(tmp, ignore_errors=True)
    proc = run(["cp", "-al", kernel.modules, tmp], check=False, capture=True)
    if proc.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        run(["cp", "-a", kernel.modules, tmp])
    (tmp / MARKER).write_text(json.dumps(kernel.versions) + "\n")
    tmp.rename(dest)
    return dest


def boot_check(kernel, log=None, timeout=90, work_dir=None):
    """Boot ``kernel`` on a tiny busybox root, load IPVS, power off. Returns the seconds it took;
    raises :class:`CommandFailed` (with the console's tail) when it does not get that far."""
    busybox = shutil.which("busybox")
    if not busybox or "static" not in run(["file", "-L", busybox], capture=True,
                                          check=False).stdout:
        raise CommandFailed("the UML boot check needs a static busybox; run "
                            "scripts/setup-host.sh (Debian package busybox-static)")
    root = pathlib.Path(tempfile.mkdtemp(prefix="uml-check-", dir=work_dir))
    try:
        for d in ("bin", "proc", "dev", "sys", "tmp"):
            (root / d).mkdir()
        shutil.copy(busybox, root / "bin/busybox")
        (root / "init").write_text(CHECK_INIT)
        (root / "init").chmod(0o755)
        install_modules(kernel, root)
        t0 = time.monotonic()
        argv = [kernel.binary, "mem=64M", "seccomp=on", "root=/dev/root", "rootfstype=hostfs",
                f"rootflags={root}", "rw", "init=/init", "con=null", "con0=null,fd:1",
                f"uml_dir={root / 'tmp'}", "umid=check"]
        try:
            proc = run(argv, capture=True, check=False, timeout=timeout, log=log)
        except subprocess.TimeoutExpired:
            raise CommandFailed(f"UML kernel {kernel.release} did not power off within "
                                f"{timeout}s in its boot check") from None
        took = time.monotonic() - t0
        out = proc.stdout + proc.stderr
        marker = [ln for ln in out.splitlines() if ln.startswith("MAILHA-UML-CHECK")]
        if not marker or "ipvs=IP_Virtual_Server" not in marker[0]:
            tail = " | ".join(out.strip().splitlines()[-4:])
            raise CommandFailed(f"UML kernel {kernel.release} ({kernel.versions}) failed its boot "
                                f"check (boot, load ip_vs): {tail[-400:]}")
        return took
    finally:
        shutil.rmtree(root, ignore_errors=True)


# ---------------------------------------------------------------------- management console
def mconsole(sock, command, timeout=5.0):
    """Send one command (``version``, ``cad``, ``halt``, ``sysrq s``...) to a UML management
    console socket; returns the reply text, or None when nobody answers."""
    client = pathlib.Path(tempfile.gettempdir()) / f"mh-mcons-{uuid.uuid4().hex[:12]}"
    data = command.encode()[:512]
    req = struct.pack("<III512s", 0xCAFEBABE, 2, len(data), data)
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        try:
            s.bind(str(client))
            s.settimeout(timeout)
            s.sendto(req, str(sock))
            out = b""
            while True:
                rep = s.recv(4096)
                err, more, length = struct.unpack_from("<III", rep)
                out += rep[12:12 + length]
                if not more:
                    return out.decode(errors="replace") if not err else f"error: {out.decode()}"
        except OSError:
            return None
        finally:
            client.unlink(missing_ok=True)


# ---------------------------------------------------------------------- a machine
def nic_args(taps, macs=None):
    """UML kernel arguments for NICs on ``taps`` (``vec<i>`` on the i-th; None skips one)."""
    out = []
    for i, tap in enumerate(taps):
        if tap is None:
            continue
        if len(tap) > 15 or not tap.replace("-", "").replace("_", "").isalnum():
            raise Refused(f"tap name {tap!r}: at most 15 characters of [A-Za-z0-9_-]")
        arg = f"vec{i}:transport=tap,ifname={tap}"
        if macs and macs[i]:
            arg += f",mac={macs[i]}"
        out.append(arg)
    return out


class Machine:
    """One UML machine. ``root``: its root directory on the host (served over hostfs);
    ``state_dir``: where its pid, console and mconsole socket live; ``taps``: tap names by NIC
    index (existing, in ``netns``); ``init``: the guest's init (systemd by default)."""

    def __init__(self, name, kernel, root, state_dir, taps=(), netns=None, macs=None,
                 memory=MEMORY, init="/lib/systemd/systemd", rename_nics=True, extra=()):
        self.name, self.kernel = name, kernel
        self.root, self.dir = pathlib.Path(root), pathlib.Path(state_dir)
        self.taps, self.netns, self.macs = list(taps), netns, macs
        self.memory, self.init, self.rename_nics, self.extra = memory, init, rename_nics, extra
        self.pidfile = self.dir / "uml.pid"
        self.console = self.dir / "console.log"
        self.uml_dir = self.dir / "uml"
        self.mconsole_sock = self.uml_dir / name / "mconsole"
        self.spool = self.root / SPOOL

    # ------------------------------------------------------------------ state
    def pid(self):
        try:
            pid = int(self.pidfile.read_text())
        except (OSError, ValueError):
            return None
        return None if _gone(pid) else pid

    def running(self):
        return self.pid() is not None

    def argv(self):
        argv = [str(self.kernel.binary), f"mem={self.memory}", "seccomp=on", "root=/dev/root",
                "rootfstype=hostfs", f"rootflags={self.root}", "rw", f"init={self.init}",
                "con=null", "con0=null,fd:1", "ssl=null", f"uml_dir={self.uml_dir}",
                f"umid={self.name}", "quiet", "systemd.show_status=0", "panic=-1",
                *nic_args(self.taps, self.macs), *self.extra]
        return (["ip", "netns", "exec", self.netns] if self.netns else []) + argv

    # ------------------------------------------------------------------ start
    def install_guest_files(self):
        """The exec agent (and the NIC rename unit) in the root; the spool emptied."""
        files = {AGENT_PATH: AGENT, "etc/systemd/system/mailha-uml-agent.service": AGENT_UNIT}
        links = {"etc/systemd/system/sysinit.target.wants/mailha-uml-agent.service":
                 "/etc/systemd/system/mailha-uml-agent.service",
                 # a clean stop is ctrl-alt-del on the management console: power off, not reboot
                 "etc/systemd/system/ctrl-alt-del.target": "/lib/systemd/system/poweroff.target"}
        if self.rename_nics:
            files["etc/systemd/system/mailha-uml-nics.service"] = RENAME_UNIT
            links["etc/systemd/system/sysinit.target.wants/mailha-uml-nics.service"] = \
                "/etc/systemd/system/mailha-uml-nics.service"
        for rel, text in files.items():
            (self.root / rel).parent.mkdir(parents=True, exist_ok=True)
            (self.root / rel).write_text(text)
        for rel, target in links.items():
            path = self.root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            if path.is_symlink() or path.exists():
                path.unlink()
            path.symlink_to(target)
        shutil.rmtree(self.spool, ignore_errors=True)
        self.spool.mkdir(parents=True, mode=0o700)

    def start(self, log=None):
        """Boot the machine in its own session; returns the UML pid."""
        if self.running():
            return self.pid()
        if len(str(self.mconsole_sock)) > 107:
            raise Refused(f"{self.mconsole_sock} is longer than a unix socket path may be; use a "
                          "shorter state directory")
        self.dir.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(self.uml_dir, ignore_errors=True)
        self.uml_dir.mkdir()
        self.install_guest_files()
        argv = self.argv()
        if log:
            with open(log, "a") as fh:
                fh.write("$ " + " ".join(argv) + "\n")
        with open(self.console, "ab") as out:
            proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        # ip netns exec execs the kernel: same pid, and it leads its own process group
        self.pidfile.write_text(str(proc.pid))
        return proc.pid

    def exec(self, argv, check=True, timeout=60, input=None, log=None):
        """Run ``argv`` in the guest through the agent; None while it cannot answer."""
        if not isinstance(argv, (list, tuple)) or not argv or \
                not all(isinstance(a, (str, os.PathLike)) for a in argv):
            raise Refused(f"guest command must be a non-empty argv list, got {argv!r}")
        if not self.running() or not self.spool.is_dir():
            return None
        rid = uuid.uuid4().hex
        req = {"argv": [str(a) for a in argv], "timeout": timeout, "input": input}
        tmp, path = self.spool / f"{rid}.tmp", self.spool / f"{rid}.req"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(req, fh)
        tmp.rename(path)
        out = self.spool / f"{rid}.out"
        deadline = time.monotonic() + timeout + 10
        rep = None
        while time.monotonic() < deadline and self.running():
            if out.exists():
                try:
                    rep = json.loads(out.read_text())
                    break
                except ValueError:
                    pass
            time.sleep(0.05)
        for leftover in (path, out):
            leftover.unlink(missing_ok=True)
        if rep is None:
            return None
        proc = subprocess.CompletedProcess(req["argv"], rep.get("rc", 1), rep.get("stdout", ""),
                                           rep.get("stderr", ""))
        if log:
            with open(log, "a") as fh:
                fh.write(f"$ [{self.name}] {' '.join(proc.args)}\n{proc.stdout}{proc.stderr}")
        if check and proc.returncode != 0:
            raise CommandFailed(f"{argv[0]} exited {proc.returncode} in UML {self.name}: "
                                f"{proc.stderr.strip()[-200:]}")
        return proc

    def wait_agent(self, timeout=60):
        """Until the guest's agent answers; raises when the machine exits or time runs out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running():
                raise RuntimeError(f"UML {self.name} exited; see {self.console}")
            if self.exec(["true"], check=False, timeout=5) is not None:
                return
            time.sleep(0.3)
        raise TimeoutError(f"UML {self.name}: exec agent silent for {timeout}s; see {self.console}")

    # ------------------------------------------------------------------ stop
    def kill(self, timeout=10):
        """Power cut: SIGKILL the whole process group (the kernel and its helpers)."""
        pid = self.pid()
        if pid:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            _wait_gone(pid, timeout)
        self._forget()

    def request_stop(self):
        """Begin a clean shutdown without waiting (ctrl-alt-del: systemd's poweroff.target)."""
        if self.running():
            mconsole(self.mconsole_sock, "cad")

    def stop(self, timeout=30):
        """Clean stop: ctrl-alt-del (powers off with systemd), then mconsole halt, then a power
        cut. Returns how it ended: ``poweroff``, ``halt``, ``killed`` or ``not running``."""
        pid = self.pid()
        how = "not running"
        if pid:
            how = "killed"
            for verb, wait in (("cad", timeout), ("halt", 5)):
                mconsole(self.mconsole_sock, verb)
                if _wait_gone(pid, wait):
                    how = "poweroff" if verb == "cad" else "halt"
                    break
            if how == "killed":
                self.kill()
        self._forget()
        return how

    def _forget(self):
        self.pidfile.unlink(missing_ok=True)
        shutil.rmtree(self.uml_dir, ignore_errors=True)


def _gone(pid):
    """Exited: no such process, or a zombie."""
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
        time.sleep(0.1)
    return _gone(pid)
