"""Fixtures of the mail tier: two real slapd in mirror mode (the LDAP tier's ``MirrorPair`` with
the LDAP tier's own mirror-mode renderer merged into its iRedMail-like slapd.conf), and real
Postfix / Dovecot for mail1 and mail2, configured AND started by the mailha_mail states through
``salt-call --local`` (the services held by the vmail guard, started by a test ``service``
provider, _modules/mailsvc.py, since there is no systemd here).

Every daemon runs with its own config dir and loopback ports (Debian's ``master -c DIR -d`` and
``dovecot -c FILE -F``), stopped by PID. The two nodes share one Maildir tree: a tmpfs mounted on
the vmail path stands for the filer's NFS export (this kernel has no NFS).
"""
import contextlib
import copy
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import tempfile

import jinja2
import pytest
import yaml

from salt_mailha.core import ldap as core_ldap
from salt_mailha.core import mail as core_mail
from salt_mailha.core.model import parse_site
from tests.integration.ldap.fixtures import NODES, MirrorPair
from tests.support.daemon import pid_alive, wait_until
from tests.support.slapd import free_port, have_slapd, iredmail_like_conf

POSTFIX_MASTER = "/usr/lib/postfix/sbin/master"
POSTFIX = shutil.which("postfix") or "/usr/sbin/postfix"
DOVECOT = shutil.which("dovecot") or "/usr/sbin/dovecot"
OPENSSL = shutil.which("openssl") or "/usr/bin/openssl"
USER_PASSWORD = "Alice-Mailbox-Pw-7731"  # grepped for in every log: must never appear
LOOKUP_PASSWORD = "Vmail-Lookup-Pw-5517"  # the lookup DN's: grepped for too


def _missing():
    need = {"slapd + syncprov": have_slapd(), "postfix master": os.path.exists(POSTFIX_MASTER),
            "postfix-ldap": os.path.exists("/usr/lib/postfix/postfix-ldap.so"),
            "dovecot": os.path.exists(DOVECOT),
            "dovecot-ldap": os.path.exists("/usr/lib/dovecot/modules/auth/libauthdb_ldap.so"),
            "root": os.geteuid() == 0}
    return [k for k, ok in need.items() if not ok]


def _traversable_dir(prefix):
    """A scratch dir postfix/dovecot/vmail users can traverse (pytest's tmp_path is 0700 root)."""
    d = tempfile.mkdtemp(prefix=prefix, dir="/tmp")
    os.chmod(d, 0o711)
    return pathlib.Path(d)


def mail_pillar(pair_pillar, base, ports):
    """The LDAP tier's pillar (example site, LDAP on loopback) plus the mail tier's scratch layout:
    vmail share path, certificate, and one instance (paths + loopback ports) per mail node."""
    pillar = copy.deepcopy(pair_pillar)
    ldap = pillar["mailha"]["ldap"]
    # the example replicates as the rootdn: its password is the rootpw (what the LDAP state sets up)
    ldap["replication"]["credentials"] = ldap["rootpw"]
    mail = pillar["mailha"]["mail"]
    # a read-only lookup DN, as iRedMail's cn=vmail (the fixture creates the entry)
    mail["lookup"] = {"bind_dn": f"cn=vmail,{ldap['suffix']}", "bind_password": LOOKUP_PASSWORD}
    mail["vmail"]["path"] = str(base / "vmail")
    mail["tls"] = {"cert": str(base / "tls" / "cert.pem"), "key": str(base / "tls" / "key.pem")}
    mail["web_root"] = str(base / "www")
    ldap_port = pillar["mailha"]["ldap"]["port"]
    mail["instances"] = {}
    for node, addr in NODES.items():
        d = base / node
        mail["instances"][node] = {
            "postfix_dir": str(d / "postfix"), "queue_directory": str(d / "spool"),
            "data_directory": str(d / "postfix-data"), "maillog_file": str(d / "log" / "postfix.log"),
            "dovecot_dir": str(d / "dovecot"), "dovecot_base_dir": str(d / "dovecot-run"),
            "dovecot_state_dir": str(d / "dovecot-state"), "dovecot_log": str(d / "log" / "dovecot.log"),
            "bind_address": "127.0.0.1", "ldap_uri": f"ldap://{addr}:{ldap_port}/",
            **ports[node],
        }
    return pillar


SALT_CALL = pathlib.Path(sys.executable).with_name("salt-call")
MODULES = pathlib.Path(__file__).with_name("_modules")

# What `state.apply` runs on a test mail node: mail.sls's native path with the services held by
# the vmail guard (the share itself is prepared by vmail_share, tested under a scratch root,
# since here the fstab is the machine's).
NODE_SLS = """
mail-files:
  mailha_mail.configured: []

health-page:
  mailha_mail.health_page: []

vmail-guard:
  mailha_mail.share_guard: []
{% for svc in services %}
{{ svc }}:
  service.running:
    - require:
      - mailha_mail: vmail-guard
    - watch:
      - mailha_mail: mail-files
{% endfor %}
"""


def service_specs(site, node_id):
    """How the test ``service`` provider (_modules/mailsvc.py) starts this node's daemons."""
    inst = site.mail.instance(node_id)
    log_dir = os.path.dirname(inst.maillog_file)
    conf = core_mail.dovecot_paths(site, site.node(node_id))["conf"]
    return {
        "postfix": {"argv": [POSTFIX_MASTER, "-c", inst.postfix_dir, "-d"],
                    "check": [POSTFIX, "-c", inst.postfix_dir, "check"],
                    "pidfile": os.path.join(inst.queue_directory, "pid", "master.pid"),
                    "log": os.path.join(log_dir, "postfix.stdout")},
        "dovecot": {"argv": [DOVECOT, "-c", conf, "-F"], "pidfile": os.path.join(inst.dovecot_base_dir, "master.pid"),
                    "log": os.path.join(log_dir, "dovecot.stdout")},
    }


def package_dirs(site, node_id):
    """What Debian's postfix/dovecot packages create before any config: queue and data dirs."""
    inst = site.mail.instance(node_id)
    for d in (inst.queue_directory, os.path.dirname(inst.maillog_file)):
        os.makedirs(d, mode=0o755, exist_ok=True)
    os.makedirs(inst.data_directory, exist_ok=True)
    shutil.chown(inst.data_directory, "postfix", "postfix")


class MailNode:
    """One test mail node: a ``salt-call --local`` minion (id = the node, no scratch root: the
    pillar's instance paths are already scratch paths) whose states write the mail files and
    start the daemons through the test service provider."""

    def __init__(self, site, node_id, pillar, base, services):
        self.site, self.node = site, site.node(node_id)
        self.inst = site.mail.instance(node_id)
        self.services = services
        self.specs = {k: v for k, v in service_specs(site, node_id).items() if k in services}
        d = pathlib.Path(base) / "salt" / node_id
        self.srv, self.conf, self.log = d / "srv", d / "conf", d / "minion.log"
        for x in (self.srv, self.conf, d / "pillar"):
            x.mkdir(parents=True, exist_ok=True)
        (d / "pillar" / "top.sls").write_text("base:\n  '*':\n    - mailha\n")
        (d / "pillar" / "mailha.sls").write_text(yaml.safe_dump(pillar))
        (self.srv / "mailnode.sls").write_text(
            jinja2.Template(NODE_SLS).render(services=services))
        (self.conf / "minion").write_text(yaml.safe_dump({
            "id": node_id, "file_client": "local", "file_roots": {"base": [str(self.srv)]},
            "pillar_roots": {"base": [str(d / "pillar")]}, "root_dir": str(d / "root"),
            "log_file": str(self.log), "log_level_logfile": "debug", "module_dirs": [str(MODULES)],
            "providers": {"service": "mailsvc"}, "mailha_test_mail_services": self.specs,
        }))
        self.outputs = []

    def apply(self, test=False):
        argv = [str(SALT_CALL), "--local", "-c", str(self.conf), "--out", "json", "-l", "quiet", "--skip-grains",
                "state.apply", "mailnode"] + (["test=True"] if test else [])
        return state_results(argv, self.outputs)

    def up(self):
        """Apply the node's states and wait for its ports; fail with the logs if it does not come up."""
        ret = self.apply()
        bad = {k: v["comment"] for k, v in ret.items() if v["result"] is not True}
        assert not bad, f"{self.node.id}: states failed: {bad}\n{self.logs()[-3000:]}"
        ports = ([self.inst.smtp_port, self.inst.submission_port] if "postfix" in self.services else []) + (
            [self.inst.imaps_port, self.inst.pop3s_port] if "dovecot" in self.services else [])
        try:
            for port in ports:
                wait_until(lambda p=port: _accepts(p), 30, what=f"{self.node.id} port {port}")
        except TimeoutError as exc:
            raise AssertionError(f"{exc}; logs:\n{self.logs()[-3000:]}") from None
        return ret

    def running(self, service):
        return _pid_alive(self.specs[service]["pidfile"])

    def logs(self):
        out = list(self.outputs)
        for p in [self.inst.maillog_file, self.inst.dovecot_log, self.log] + [s["log"] for s in self.specs.values()]:
            try:
                out.append(pathlib.Path(p).read_text(errors="replace"))
            except FileNotFoundError:
                pass
        return "\n".join(out)

    def stop(self):
        for spec in self.specs.values():
            pid = _pid_alive(spec["pidfile"])
            if pid:
                os.kill(pid, signal.SIGTERM)
                wait_until(lambda p=pid: not pid_alive(p), 30, what=f"pid {pid} exit")




def state_results(argv, outputs):
    """Run a ``salt-call --out json state.*`` ``argv``; its states by id (output kept in ``outputs``)."""
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=180, check=False)
    outputs.append(proc.stdout + proc.stderr)
    try:
        ret = json.loads(proc.stdout)["local"]
    except (ValueError, KeyError):
        raise AssertionError(f"salt-call gave no JSON (rc={proc.returncode}): {proc.stdout}{proc.stderr}") from None
    assert isinstance(ret, dict), ret
    return {v["__id__"]: v for v in ret.values()}


def _pid_alive(pidfile):
    try:
        pid = int(pathlib.Path(pidfile).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return pid if pid_alive(pid) else None


def mount_tmpfs(path, uid, gid):
    """A tmpfs standing for the filer's NFS export (this kernel has no NFS)."""
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size=64m,mode=0700,uid={uid},gid={gid}", "mailha-test-vmail",
                    str(path)], check=True, capture_output=True, timeout=30)


def umount(path):
    subprocess.run(["umount", str(path)], check=False, capture_output=True, timeout=30)


def _accepts(port):
    import socket
    with socket.create_connection(("127.0.0.1", port), timeout=1):
        return True


@contextlib.contextmanager
def running_cluster(tmp):
    """Two slapd (mirror mode), Postfix+Dovecot for mail1 and Dovecot for mail2, one Maildir tree;
    everything stopped and removed on exit. Yields a namespace with ``site``, ``pair`` (LDAP),
    ``nodes`` (MailNode by id), ``base``, ``pillar``. Also used by bench/mail_flow.py."""
    base = _traversable_dir("mailha-mail-")
    pair = MirrorPair(tmp, "slapd.conf")
    ports = {n: {"smtp_port": free_port(), "submission_port": free_port(), "smtps_port": free_port(),
                 "imaps_port": free_port(), "pop3s_port": free_port()} for n in NODES}
    pillar = mail_pillar(pair.pillar, base, ports)
    site = parse_site(pillar["mailha"])
    nodes, mounted = {}, []
    try:
        # the LDAP tier's mirror-mode block, merged into each node's iRedMail-like slapd.conf
        for s in pair.slapd.values():
            s.install(core_ldap.merge_slapd_conf(
                iredmail_like_conf(s.dir, pair.suffix, pair.rootdn, pair.rootpw), site, str(s.conf)))
        pair.start()
        pair.seed("mail1")
        with pair.connect("mail1") as conn:
            conn.add(f"cn=vmail,{pair.suffix}", ["organizationalRole", "simpleSecurityObject"],
                     {"cn": "vmail", "userPassword": LOOKUP_PASSWORD})
        (base / "tls").mkdir(mode=0o755)
        subprocess.run([OPENSSL, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                        "-subj", "/CN=mail.example.net", "-keyout", str(base / "tls" / "key.pem"),
                        "-out", str(base / "tls" / "cert.pem")], check=True, capture_output=True, timeout=60)
        os.chmod(base / "tls" / "key.pem", 0o600)
        vmail = pathlib.Path(site.mail.vmail.path)
        vmail.mkdir(mode=0o755)
        mount_tmpfs(vmail, site.mail.vmail.uid, site.mail.vmail.gid)
        mounted.append(vmail)
        for n in NODES:
            package_dirs(site, n)
        # mail1 runs Postfix (and the Dovecot its SMTP AUTH asks); mail2 serves IMAP/POP3
        nodes = {"mail1": MailNode(site, "mail1", pillar, base, ("postfix", "dovecot")),
                 "mail2": MailNode(site, "mail2", pillar, base, ("dovecot",))}
        for n in nodes.values():
            n.up()
        yield type("MailCluster", (), {"site": site, "pair": pair, "nodes": nodes, "base": base,
                                       "pillar": pillar})
    finally:
        for n in nodes.values():
            n.stop()
        for m in mounted:
            umount(m)
        pair.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def mail_cluster(tmp_path_factory):
    """The running two-node mail cluster of ``running_cluster`` for one test module."""
    missing = _missing()
    if missing:
        pytest.skip(f"mail tier needs {', '.join(missing)}: run scripts/setup-host.sh as root")
    with running_cluster(tmp_path_factory.mktemp("mail")) as cluster:
        yield cluster
