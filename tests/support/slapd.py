"""Real slapd (Debian's 2.5) instances for tests: an iRedMail-like config, foreground processes,
stop/kill/restart by the PID slapd writes itself (so a restart done by another process, e.g. the
Salt ``service`` provider in tests/integration/ldap/_modules, is tracked too).

Reusable by other tiers::

    from tests.support.slapd import Slapd, iredmail_like_conf
    s = Slapd(workdir, "127.0.1.17", port, mode="conf")   # or mode="cnconfig"
    s.install(iredmail_like_conf(...)); s.start(); s.wait_ready(); ...; s.stop()
"""
import base64
import hashlib
import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.parse

from tests.support.daemon import pid_alive, wait_until

SLAPD = shutil.which("slapd") or "/usr/sbin/slapd"
SLAPTEST = shutil.which("slaptest") or "/usr/sbin/slaptest"
SLAPADD = shutil.which("slapadd") or "/usr/sbin/slapadd"


def have_slapd():
    return os.path.exists(SLAPD) and os.path.exists("/usr/lib/ldap/syncprov.so")


def free_port(host="127.0.0.1"):
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def ssha(password):
    """``{SSHA}`` hash as iRedMail writes rootpw (so the clear text is not in slapd.conf)."""
    salt = os.urandom(8)
    return "{SSHA}" + base64.b64encode(hashlib.sha1(password.encode() + salt).digest() + salt).decode()


def iredmail_like_conf(workdir, suffix, rootdn, rootpw, config_db=False):
    """A slapd.conf shaped like the one iRedMail writes (samples/openldap/slapd.conf): schemas,
    modules, global ACLs, a monitor database, then the mdb database with iRedMail's indexes.
    ``config_db`` adds ``database config`` with root access over ldapi (SASL EXTERNAL), as
    Debian's default cn=config has, plus manage access for ``rootdn`` (a bound connection), for
    converting to slapd.d."""
    w = pathlib.Path(workdir)
    config = ""
    if config_db:
        config = ("database config\n"
                  "access to * by dn.exact=gidNumber=0+uidNumber=0,cn=peercred,cn=external,cn=auth manage"
                  f' by dn.exact="{rootdn}" manage by * break\n\n')
    return f"""# Schemas.
include     /etc/ldap/schema/core.schema
include     /etc/ldap/schema/cosine.schema
include     /etc/ldap/schema/inetorgperson.schema
include     /etc/ldap/schema/nis.schema

# Where the pid file is put. The init.d script will not stop the
# server if you change this.
pidfile     {w}/slapd.pid

# List of arguments that were passed to the server
argsfile    {w}/slapd.args

modulepath  /usr/lib/ldap
moduleload  back_mdb
moduleload  back_monitor

# Disallow bind as anonymous.
disallow    bind_anon

# Specify LDAP protocol version.
require     LDAPv3

# Log level.
loglevel    0

# Access Control
access to attrs="userPassword,employeeNumber"
    by anonymous    auth
    by self         write
    by dn.exact="{rootdn}"  write
    by users        none

access to *
    by anonymous                    auth
    by self                         write
    by users                        read

#######################################################################
# Databases
#######################################################################
{config}database monitor
access to dn="cn=monitor"
    by dn.exact="{rootdn}" read
    by * none

# Database used to store mail accounts
database    mdb
suffix      {suffix}
directory   {w}/db

rootdn      {rootdn}
rootpw      {ssha(rootpw)}

sizelimit   unlimited
maxsize     104857600
checkpoint  128 3
mode        0700

#
# Default indexes.
#
index objectclass,entryCSN,entryUUID                eq
index uidNumber,gidNumber,uid,memberUid,loginShell  eq,pres
index ou,cn,mail,surname,givenname,telephoneNumber,displayName  eq,pres,sub
"""


class Slapd:
    """One slapd in the foreground (``-d stats,sync``), config as slapd.conf (``mode="conf"``)
    or slapd.d converted from it (``mode="cnconfig"``, with an ldapi listener for cn=config)."""

    def __init__(self, workdir, address, port, mode="conf"):
        self.dir = pathlib.Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.address, self.port, self.mode = address, port, mode
        self.url = f"ldap://{address}:{port}/"
        # unix socket paths are limited to 107 bytes: keep it short, outside tmp_path (cn=config only)
        self._sockdir = tempfile.mkdtemp(prefix="mh-slapd-") if mode == "cnconfig" else None
        self.ldapi_path = os.path.join(self._sockdir, "ldapi") if self._sockdir else None
        self.ldapi_url = "ldapi://" + urllib.parse.quote(self.ldapi_path, safe="") if self._sockdir else None
        self.conf = self.dir / "slapd.conf"
        self.slapd_d = self.dir / "slapd.d"
        self.pidfile = self.dir / "slapd.pid"
        self.log_path = self.dir / "slapd.log"
        self.instance_file = self.dir / "instance.json"
        self._procs = []

    # -- config
    def install(self, conf_text):
        """Write slapd.conf (and, in cnconfig mode, convert it to slapd.d); create the db dir."""
        (self.dir / "db").mkdir(exist_ok=True)
        self.conf.write_text(conf_text)
        if self.mode == "cnconfig":
            shutil.rmtree(self.slapd_d, ignore_errors=True)
            self.slapd_d.mkdir()
            # slaptest converts only after opening the database: create an empty one first
            subprocess.run([SLAPADD, "-f", str(self.conf), "-b", _suffix_of(conf_text), "-l", "/dev/null"],
                           check=True, capture_output=True, timeout=60)
            subprocess.run([SLAPTEST, "-Q", "-f", str(self.conf), "-F", str(self.slapd_d)], check=True,
                           capture_output=True, timeout=60)
        self.instance_file.write_text(json.dumps(
            {"argv": self.argv(), "log": str(self.log_path), "pidfile": str(self.pidfile)}))

    def argv(self):
        urls = self.url + (f" {self.ldapi_url}" if self.mode == "cnconfig" else "")
        cfg = ["-F", str(self.slapd_d)] if self.mode == "cnconfig" else ["-f", str(self.conf)]
        return [SLAPD, "-d", "stats,sync", *cfg, "-h", urls]

    # -- process
    def pid(self):
        try:
            pid = int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if pid_alive(pid) else None

    def start(self):
        self._procs.append(spawn(self.instance_file))
        return self

    def wait_ready(self, timeout=20):
        def ready():
            with socket.create_connection((self.address, self.port), timeout=1):
                pass
            return self.pid()
        return wait_until(ready, timeout, what=f"slapd {self.url} accepting connections")

    def stop(self, timeout=20):
        self._signal_and_wait(signal.SIGTERM, timeout)

    def kill9(self):
        self._signal_and_wait(signal.SIGKILL, 10)

    def _signal_and_wait(self, sig, timeout):
        pid = self.pid()
        if pid is not None:
            os.kill(pid, sig)
            wait_until(lambda: not pid_alive(pid) or self._reap(), timeout, what=f"slapd pid {pid} exit")
        self._reap()

    def _reap(self):
        for p in self._procs:
            p.poll()
        return False

    def log(self):
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def cleanup(self):
        self.stop()
        if self._sockdir:
            shutil.rmtree(self._sockdir, ignore_errors=True)


def _suffix_of(conf_text):
    return next(line.split(None, 1)[1].strip() for line in conf_text.splitlines() if line.startswith("suffix"))




def spawn(instance_file):
    """Start the slapd described by ``instance.json`` in its own session, output appended to its
    log. Used by the fixture and by the test ``service`` provider (restart)."""
    spec = json.loads(pathlib.Path(instance_file).read_text())
    with open(spec["log"], "ab") as log:
        return subprocess.Popen(spec["argv"], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)


def restart(instance_file, timeout=20):
    """SIGTERM the running slapd (by its pidfile), wait for it to exit, start it again."""
    spec = json.loads(pathlib.Path(instance_file).read_text())
    try:
        pid = int(pathlib.Path(spec["pidfile"]).read_text().strip())
    except (OSError, ValueError):
        pid = None
    if pid is not None and pid_alive(pid):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while pid_alive(pid):
            if time.monotonic() > deadline:
                raise TimeoutError(f"slapd pid {pid} did not exit within {timeout}s")
            time.sleep(0.05)
    spawn(instance_file)
    return True
