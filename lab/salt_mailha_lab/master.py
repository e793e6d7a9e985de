"""The lab's salt-master: this venv's Salt, in the bridge namespace, on the gateway address.

It serves ``states/`` from the repository, the generated lab pillar, and the reactor: when a
master config example with a ``reactor:`` key exists (``reactor/*.conf``, ``reactor/master.d``),
its reactor SLS paths are pointed at the repository's ``reactor/`` folder.
"""
import glob
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import yaml

from salt_mailha import PACKAGE_ROOT
from salt_mailha_lab import network
from salt_mailha_lab.util import pid_alive, pid_from_file, run

REPO = PACKAGE_ROOT.parent
BIN = pathlib.Path(sys.executable).parent


# Keys of the master config example the lab takes over (file_roots and paths are the lab's own).
MASTER_KEYS = ("presence_events", "loop_interval", "reactor", "schedule")


def master_example(repo=REPO):
    """``(settings, source)`` from the remediation engineer's master config example, if any:
    the reactor (its SLS paths pointed at this checkout's ``reactor/``), presence events, the
    schedule and every ``mailha_*`` option."""
    candidates = sorted(glob.glob(str(repo / "examples" / "master.d" / "*.conf"))
                        + glob.glob(str(repo / "reactor" / "*.conf"))
                        + glob.glob(str(repo / "reactor" / "master.d" / "*.conf")))
    for path in candidates:
        with open(path) as fh:
            conf = yaml.safe_load(fh) or {}
        if not isinstance(conf, dict) or not conf.get("reactor"):
            continue
        out = {k: v for k, v in conf.items() if k in MASTER_KEYS or k.startswith("mailha_")}
        out["reactor"] = [_local_reactor(entry, repo) for entry in conf["reactor"]]
        return out, path
    return {}, None


def minion_example(repo=REPO):
    """The minion config example (beacons) as text, or None."""
    path = repo / "examples" / "minion.d" / "mailha.conf"
    return path.read_text() if path.exists() else None


def _local_reactor(entry, repo):
    out = {}
    for tag, paths in entry.items():
        fixed = []
        for p in paths if isinstance(paths, list) else [paths]:
            local = repo / "reactor" / os.path.basename(str(p))
            fixed.append(str(local) if local.exists() else p)
        out[tag] = fixed
    return out


class Master:
    def __init__(self, run_dir, interface):
        self.dir = pathlib.Path(run_dir) / "master"
        self.etc = self.dir / "etc"
        self.root = self.dir / "root"
        self.pillar_dir = self.dir / "pillar"
        self.srv = self.dir / "srv"
        self.pidfile = self.dir / "salt-master.pid"
        self.interface = interface
        self.log = self.root / "var/log/salt/master"

    def configure(self, reactor=True):
        """Write the master's config; ``reactor=False`` leaves out the example's reactor and
        schedule (bench/failover.py's seed mode: ldirectord alone decides)."""
        for d in (self.etc, self.root, self.srv):
            d.mkdir(parents=True, exist_ok=True)
        link = self.srv / "reactor"
        if (REPO / "reactor").is_dir() and not link.exists():
            link.symlink_to(REPO / "reactor")
        extra, source = master_example()
        conf = {
            "id": "mhlab-master",
            "interface": self.interface,
            "user": "root",
            "root_dir": str(self.root),
            "auto_accept": True,
            "file_roots": {"base": [str(REPO / "states"), str(self.srv)]},
            "pillar_roots": {"base": [str(self.pillar_dir)]},
            "log_level_logfile": "info",
            "worker_threads": 3,
            "timeout": 30,
            "keep_jobs_seconds": 3600,
        }
        if not reactor:
            extra = {k: v for k, v in extra.items() if k not in ("reactor", "schedule")}
        conf.update(extra)
        (self.etc / "master").write_text(yaml.safe_dump(conf, sort_keys=False))
        return source

    def pid(self):
        return pid_from_file(self.pidfile)

    def start(self, log):
        if self.pid():
            return self.pid()
        argv = ["ip", "netns", "exec", network.BRIDGE_NS, str(BIN / "salt-master"), "-c",
                str(self.etc), "-l", "warning"]
        with open(log, "a") as fh:
            fh.write("$ " + " ".join(argv) + "\n")
            proc = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        self.pidfile.write_text(str(proc.pid))
        return proc.pid

    def stop(self, timeout=20):
        pid = self.pid()
        if pid:
            os.killpg(pid, signal.SIGTERM)  # its own session: the master and its workers
            deadline = time.monotonic() + timeout
            while pid_alive(pid) and time.monotonic() < deadline:
                try:
                    os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    pass
                time.sleep(0.2)
            if pid_alive(pid):
                os.killpg(pid, signal.SIGKILL)
        self.pidfile.unlink(missing_ok=True)

    # ----------------------------------------------------------------- commands
    # The CLI reaches the master's request port on ``interface``, which only exists in the
    # bridge namespace.
    _in_ns = ("ip", "netns", "exec", network.BRIDGE_NS)

    def salt(self, target, fun, *args, timeout=60, log=None):
        """``salt <target> <fun> <args>`` with JSON output: ``{minion: return}``."""
        argv = [*self._in_ns, BIN / "salt", "-c", self.etc, "--out=json", "--static", "-t", str(timeout),
                target, fun, *args]
        proc = run(argv, capture=True, check=False, timeout=timeout + 60, log=log)
        return _json_or_empty(proc.stdout)

    def run_runner(self, fun, *args, log=None, timeout=120):
        argv = [*self._in_ns, BIN / "salt-run", "-c", self.etc, fun, *args]
        proc = run(argv, capture=True, check=False, timeout=timeout, log=log)
        return proc.returncode, proc.stdout, proc.stderr

    def wait_minions(self, names, timeout, log=None):
        """Until every minion in ``names`` answers test.ping; returns the set that did. Each
        round waits longer for returns (5 s, doubling to 30 s): a minion in a TCG VM on a
        loaded host can take longer than 5 s to answer even once it is connected."""
        deadline = time.monotonic() + timeout
        answered, wait = set(), 5
        while time.monotonic() < deadline:
            ret = self.salt("*", "test.ping", timeout=wait, log=log)
            answered |= {m for m, v in ret.items() if v is True}
            if set(names) <= answered:
                break
            wait = min(wait * 2, 30)
            time.sleep(1)
        return answered


def _json_or_empty(text):
    """Salt's ``--static --out=json`` prints one object; tolerate noise before it."""
    text = text.strip()
    start = text.find("{")
    if start < 0:
        return {}
    try:
        return json.loads(text[start:])
    except ValueError:
        return {}
