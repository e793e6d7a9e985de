"""A Galera site on one machine, driven through Salt: every member is its own
``salt-call --local`` minion (own id, config, pillar view), mariadbd is started by our states
with the ``direct`` launcher, each member on its own loopback address (127.0.0.1N) and ports.

Also used by bench/galera_recovery.py, so it imports nothing from pytest.
"""

from __future__ import annotations

import json
import os
import pathlib
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid

import pymysql
import yaml

REPO = pathlib.Path(__file__).resolve().parents[3]
SALT_CALL = pathlib.Path(sys.executable).with_name("salt-call")
MONITOR_PASSWORD = "mon-" + uuid.uuid4().hex[:12]
SST_PASSWORD = "sst-" + uuid.uuid4().hex[:12]
SECRETS = (MONITOR_PASSWORD, SST_PASSWORD)
# Tuned group-communication timeouts (REAL-SERVICES.md): eviction in ~1.5 s instead of ~5.6 s.
EVS = {"suspect_timeout": 1, "inactive_timeout": 2, "inactive_check_period": 0.3, "keepalive_period": 0.25,
       "install_timeout": 2, "join_retrans_period": 0.5}


def have_galera():
    return all(os.path.exists(p) for p in ("/usr/sbin/mariadbd", "/usr/lib/galera/libgalera_smm.so",
                                          "/usr/bin/rsync", "/usr/bin/mariadb-install-db"))


def _free(addr, port):
    s = socket.socket()
    try:
        s.bind((addr, port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def pick_ports(addrs, count=40):
    """A base port such that base..base+count is free on every address and on 0.0.0.0."""
    for _ in range(200):
        base = random.randrange(20000, 60000, 50)
        if all(_free(a, base + i) for a in (*addrs, "0.0.0.0") for i in range(count)):
            return base
    raise RuntimeError("no free port range found")


class Member:
    def __init__(self, lab, node_id, index, roles):
        self.lab = lab
        self.id = node_id
        self.index = index
        self.roles = roles
        self.addr = f"127.0.0.{10 + index}"
        self.dir = lab.base / node_id
        b = lab.port_base
        self.port = b + index
        self.gmcast_port = b + 10 + index
        self.ist_port = b + 20 + index
        self.sst_port = b + 30 + index
        self.conf = self.dir / "salt"
        self.cnf = self.dir / "galera.cnf"
        self.datadir = self.dir / "data"
        self.socket = self.dir / "run" / "mysqld.sock"
        self.pidfile = self.dir / "run" / "mysqld.pid"
        self.error_log = self.dir / "log" / "error.log"
        self.outputs = []

    def instance(self):
        return {"port": self.port, "gmcast_port": self.gmcast_port, "ist_port": self.ist_port,
                "sst_port": self.sst_port, "bind_address": self.addr, "config": str(self.cnf),
                "datadir": str(self.datadir), "socket": str(self.socket), "pidfile": str(self.pidfile),
                "log_error": str(self.error_log), "tmpdir": str(self.dir / "tmp")}

    def write_minion_config(self):
        self.conf.mkdir(parents=True, exist_ok=True)
        (self.conf / "minion").write_text(yaml.safe_dump({
            "id": self.id,
            "file_client": "local",
            "file_roots": {"base": [str(REPO / "states")]},
            "pillar_roots": {"base": [str(self.lab.pillar_dir)]},
            "root_dir": str(self.dir / "saltroot"),
            "log_file": str(self.dir / "minion.log"),
            "log_level_logfile": "info",
        }))

    # ---- salt
    def salt_call(self, *args, timeout=300, env=None):
        argv = [str(SALT_CALL), "--local", "-c", str(self.conf), "--out", "json", "-l", "quiet", *args]
        return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env={**self.lab.env(), **(env or {})})

    def finish(self, proc, timeout=300):
        out, err = proc.communicate(timeout=timeout)
        self.outputs.append(out + err)
        try:
            return proc.returncode, json.loads(out)["local"]
        except (ValueError, KeyError):
            return proc.returncode, {"_raw": out + err}

    def call(self, *args, timeout=300):
        return self.finish(self.salt_call(*args), timeout=timeout)

    def apply(self, sls="mailha.galera", test=False):
        return self.call("state.apply", sls, *(["test=True"] if test else []))

    # ---- facts
    def pid(self):
        try:
            pid = int(self.pidfile.read_text().strip())
            stat = pathlib.Path(f"/proc/{pid}/stat").read_text()
        except (OSError, ValueError):
            return None
        return None if stat[stat.rindex(")") + 2] == "Z" else pid

    def sql(self, query, args=None, timeout=5):
        conn = pymysql.connect(unix_socket=str(self.socket), user="root", autocommit=True,
                               connect_timeout=timeout, read_timeout=30)
        try:
            with conn.cursor() as cur:
                cur.execute(query, args)
                return cur.fetchall()
        finally:
            conn.close()

    def status(self):
        try:
            return dict(self.sql("SHOW GLOBAL STATUS LIKE 'wsrep%'"))
        except pymysql.MySQLError:
            return {}

    def synced(self):
        st = self.status()
        return st.get("wsrep_local_state_comment") == "Synced" and st.get("wsrep_cluster_status") == "Primary"

    def kill9(self):
        pid = self.pid()
        if pid:
            os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 10
            while self.pid() is not None and time.monotonic() < deadline:
                time.sleep(0.05)

    def stop(self, timeout=30):
        pid = self.pid()
        if not pid:
            return
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while self.pid() is not None and time.monotonic() < deadline:
            time.sleep(0.1)
        if self.pid() is not None:
            self.kill9()

    def power_cut(self):
        """SIGKILL every process of this member at once: mariadbd, its SST script and rsync daemon,
        garbd (each runs in the session mariadbd or garbd was started in; found by this member's
        paths on their command lines). Returns the process groups killed."""
        tag = f"{self.dir}/".encode()
        groups = set()
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    cmd = f.read().replace(b"\0", b" ")
                if tag in cmd:
                    groups.add(os.getpgid(int(entry)))
            except OSError:
                continue
        groups.discard(os.getpgrp())  # a salt-call of this test mentions the member's paths too
        for g in groups:
            try:
                os.killpg(g, signal.SIGKILL)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 10
        while self.pid() is not None and time.monotonic() < deadline:
            time.sleep(0.05)
        return groups

    def start_new_cluster(self):
        """``mariadbd --wsrep-new-cluster`` started directly, not through salt-mailha (what an
        unguarded bootstrap does)."""
        log = open(self.dir / "direct-start.log", "ab")  # noqa: SIM115 - the child keeps it
        subprocess.Popen(["/usr/sbin/mariadbd", f"--defaults-file={self.cnf}", "--wsrep-new-cluster"],
                         stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
                         env=self.lab.env())

    def datadir_markers(self):
        return sorted(p.name for p in self.datadir.glob("*") if p.name in ("sst_in_progress", "rsync_sst_complete", ".sst"))

    def log_since(self, offset):
        try:
            with open(self.error_log, "rb") as f:
                f.seek(offset)
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def log_tail(self, size=2500):
        """The error log's last ``size`` bytes for a failure message, the test secrets masked."""
        text = self.log_since(max(0, self.log_size() - size))
        for secret in SECRETS:
            text = text.replace(secret, "<redacted>")
        return text

    def log_size(self):
        try:
            return self.error_log.stat().st_size
        except OSError:
            return 0


class GaleraLab:
    """``members``: full members' ids; the one named ``quorum`` gets role quorum (a full member
    that is not load-balanced, the guide's filer1), the others role db. ``garbd`` names an extra
    node with role garbd."""

    def __init__(self, base, members=("db1", "db2", "filer1"), quorum="filer1", garbd=None, bootstrap_node="db1",
                 rsync_bwlimit=None, sst_method="rsync"):
        self.sst_method = sst_method
        self.base = pathlib.Path(base)
        self.base.mkdir(parents=True, exist_ok=True)
        os.chmod(self.base, 0o755)  # mariadbd runs as mysql and must traverse it
        self.bin = None
        if rsync_bwlimit:
            # State transfers long enough to be cut: the SST scripts find rsync on mariadbd's PATH
            # (inherited from the salt-call that started it), so a wrapper goes first; it throttles
            # while the file ``throttle`` exists (``self.throttled(True)``).
            self.bin = self.base / "bin"
            self.bin.mkdir(exist_ok=True)
            (self.bin / "rsync").write_text(
                f'#!/bin/sh\nif [ -e {self.bin}/throttle ]; then set -- --bwlimit={int(rsync_bwlimit)} "$@"; fi\n'
                'exec /usr/bin/rsync "$@"\n')
            os.chmod(self.bin, 0o755)
            os.chmod(self.bin / "rsync", 0o755)
        self.pillar_dir = self.base / "pillar"
        addrs = [f"127.0.0.{10 + i}" for i in range(1, len(members) + (2 if garbd else 1))]
        self.port_base = pick_ports(addrs)
        self.members = [Member(self, m, i + 1, ["quorum"] if m == quorum else ["db"])
                        for i, m in enumerate(members)]
        self.garbd = Member(self, garbd, len(members) + 1, ["garbd"]) if garbd else None
        self.bootstrap_node = bootstrap_node
        self.pillar = self._pillar()
        self.pillar_dir.mkdir(exist_ok=True)
        (self.pillar_dir / "top.sls").write_text("base:\n  '*':\n    - mailha\n")
        (self.pillar_dir / "mailha.sls").write_text(yaml.safe_dump({"mailha": self.pillar}))
        for m in self.all():
            m.write_minion_config()

    def all(self):
        return self.members + ([self.garbd] if self.garbd else [])

    def throttled(self, on):
        flag = self.bin / "throttle"
        flag.touch() if on else flag.unlink(missing_ok=True)

    def env(self):
        env = dict(os.environ)
        if self.bin:
            env["PATH"] = f"{self.bin}:{env.get('PATH', '/usr/bin:/bin')}"
        return env

    def member(self, node_id):
        return next(m for m in self.all() if m.id == node_id)

    def _pillar(self):
        nodes = {m.id: {"roles": m.roles, "addresses": {"private": m.addr}} for m in self.members}
        instances = {m.id: m.instance() for m in self.members}
        if self.garbd:
            nodes[self.garbd.id] = {"roles": ["garbd"], "addresses": {"private": self.garbd.addr}}
            instances[self.garbd.id] = self.garbd.instance()
        return {
            "site": "galeratest",
            "domain": "example.net",
            "networks": {"private": "127.0.0.0/8"},
            "nodes": nodes,
            "galera": {
                "cluster_name": "mailha_test",
                "bootstrap_node": self.bootstrap_node,
                "network": "private",
                "sst_method": self.sst_method,
                "arbitrator": "garbd" if self.garbd else "none",
                "sst_password": SST_PASSWORD,
                "monitor": {"user": "monitor", "password": MONITOR_PASSWORD, "database": "monitoring"},
                "launcher": "direct",
                "join_timeout": 120,
                "gcache_size": "64M",
                "evs": EVS,
                "instances": instances,
            },
        }

    # ---- concurrency helpers
    def parallel(self, members, *args):
        procs = [(m, m.salt_call(*args)) for m in members]
        return {m.id: m.finish(p) for m, p in procs}

    def apply_all(self, test=False, sls="mailha.galera"):
        return self.parallel(self.members, "state.apply", sls, *(["test=True"] if test else []))

    def wait_synced(self, members=None, size=None, timeout=120):
        members = members or self.members
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            sts = [m.status() for m in members]
            if all(s.get("wsrep_local_state_comment") == "Synced" and s.get("wsrep_cluster_status") == "Primary"
                   and (size is None or int(s.get("wsrep_cluster_size", 0)) == size) for s in sts):
                return True
            time.sleep(0.1)
        states = [(m.id, m.status().get("wsrep_local_state_comment")) for m in members]
        # the error log's tail of each member that is not Synced: why it is not
        tails = "\n".join(f"--- {m.id} error log tail:\n{m.log_tail()}"
                          for m, (_, st) in zip(members, states, strict=True) if st != "Synced")
        raise TimeoutError(f"not all Synced (size {size}) within {timeout}s: {states}\n{tails}")

    def ask(self, node_id):
        """The runner's gather step, through the member's own Salt loader."""
        rc, out = self.member(node_id).call("mailha_galera.position")
        return out if isinstance(out, dict) and "_raw" not in out else None

    def act(self, node_id, action, position):
        args = [f"mailha_galera.{action}"] + ([f"position={position}"] if position and action != "pc_bootstrap" else [])
        rc, out = self.member(node_id).call(*args)
        return out

    def outputs(self):
        texts = []
        for m in self.all():
            texts += m.outputs
            for p in (m.dir / "minion.log",):
                if p.exists():
                    texts.append(p.read_text(errors="replace"))
        return texts

    def stop(self, timeout=30):
        """SIGTERM to every mariadbd and garbd at once, then wait; SIGKILL what is left."""
        pids = [p for m in self.all() for p in (m.pid(), m.garbd_pid()) if p]
        for pid in pids:
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while any(m.pid() or m.garbd_pid() for m in self.all()) and time.monotonic() < deadline:
            time.sleep(0.1)
        for m in self.all():
            m.kill9()
            if m.garbd_pid():
                os.kill(m.garbd_pid(), signal.SIGKILL)

    def cleanup(self, keep=False):
        self.stop()
        for m in self.all():
            m.power_cut()  # a joiner mid-SST has no pidfile yet
        if keep or os.environ.get("MAILHA_KEEP_GALERA"):
            print(f"galera lab kept in {self.base}")
        else:
            shutil.rmtree(self.base, ignore_errors=True)


def _garbd_pid(self):
    p = self.pidfile.parent / "garbd.pid"
    try:
        pid = int(p.read_text().strip())
        stat = pathlib.Path(f"/proc/{pid}/stat").read_text()
    except (OSError, ValueError):
        return None
    return None if stat[stat.rindex(")") + 2] == "Z" else pid


Member.garbd_pid = _garbd_pid


class Writer(threading.Thread):
    """A steady writer: one INSERT at a time into ``t.acked`` through the given members (first that
    answers); records the ids of the inserts the server acknowledged (autocommit returned)."""

    def __init__(self, members, interval=0.01):
        super().__init__(daemon=True)
        self.members = members
        self.interval = interval
        self.acked = []
        self.errors = 0
        self._halt = threading.Event()

    def run(self):
        conn = None
        while not self._halt.is_set():
            value = uuid.uuid4().hex
            try:
                if conn is None:
                    conn = self._connect()
                with conn.cursor() as cur:
                    cur.execute("INSERT INTO t.acked (v) VALUES (%s)", (value,))
                self.acked.append(value)
            except pymysql.MySQLError:
                self.errors += 1
                try:
                    conn and conn.close()
                except Exception:  # noqa: BLE001
                    pass
                conn = None
                time.sleep(0.05)
            time.sleep(self.interval)
        if conn:
            conn.close()

    def _connect(self):
        last = None
        for m in self.members:
            try:
                return pymysql.connect(unix_socket=str(m.socket), user="root", autocommit=True,
                                       connect_timeout=1, read_timeout=10, write_timeout=10)
            except pymysql.MySQLError as exc:
                last = exc
        raise last

    def stop(self):
        self._halt.set()
        self.join(30)


def prepare_table(member):
    member.sql("CREATE DATABASE IF NOT EXISTS t")
    member.sql("CREATE TABLE IF NOT EXISTS t.acked (id INT AUTO_INCREMENT PRIMARY KEY, v CHAR(32) NOT NULL, "
               "UNIQUE KEY (v)) ENGINE=InnoDB")


def rows(member):
    member.sql("SET SESSION wsrep_sync_wait=1")
    conn = pymysql.connect(unix_socket=str(member.socket), user="root", autocommit=True)
    try:
        with conn.cursor() as cur:
            cur.execute("SET SESSION wsrep_sync_wait=1")
            cur.execute("SELECT v FROM t.acked")
            return {r[0] for r in cur.fetchall()}
    finally:
        conn.close()
