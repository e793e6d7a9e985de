"""Fixtures of the mail tier: two real slapd in mirror mode (the LDAP tier's ``MirrorPair`` with
the LDAP tier's own mirror-mode renderer merged into its iRedMail-like slapd.conf), and real
Postfix / Dovecot instances running the files salt-mailha renders for mail1 and mail2.

Every daemon runs in the foreground with its own config dir and loopback ports (Debian's
``master -c DIR -d`` and ``dovecot -c FILE -F``), stopped by PID. The two nodes share one
Maildir directory standing in for the filer's NFS export (this kernel has no NFS).
"""
import contextlib
import copy
import grp
import os
import pathlib
import shutil
import subprocess
import tempfile

import pytest

from salt_mailha.core import ldap as core_ldap
from salt_mailha.core import mail as core_mail
from salt_mailha.core.model import parse_site
from tests.integration.ldap.fixtures import NODES, MirrorPair
from tests.support.daemon import Daemon, wait_until
from tests.support.slapd import free_port, have_slapd, iredmail_like_conf

POSTFIX_MASTER = "/usr/lib/postfix/sbin/master"
POSTFIX = shutil.which("postfix") or "/usr/sbin/postfix"
DOVECOT = shutil.which("dovecot") or "/usr/sbin/dovecot"
OPENSSL = shutil.which("openssl") or "/usr/bin/openssl"
USER_PASSWORD = "Alice-Mailbox-Pw-7731"  # grepped for in every log: must never appear


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


class MailNode:
    """One node's Postfix + Dovecot, from the files salt-mailha renders for it."""

    def __init__(self, site, node_id):
        self.site, self.node = site, site.node(node_id)
        self.inst = site.mail.instance(node_id)
        self.postfix = self.dovecot = None

    def install(self):
        postfix_gid = grp.getgrnam("postfix").gr_gid
        for d in (self.inst.postfix_dir, self.inst.dovecot_dir, os.path.dirname(self.inst.maillog_file),
                  self.inst.queue_directory):
            os.makedirs(d, mode=0o755, exist_ok=True)
        os.makedirs(self.inst.data_directory, exist_ok=True)
        shutil.chown(self.inst.data_directory, "postfix", "postfix")
        for f in core_mail.mail_files(self.site, self.node):
            os.makedirs(os.path.dirname(f.path), mode=0o755, exist_ok=True)
            pathlib.Path(f.path).write_text(f.content)
            os.chmod(f.path, int(f.mode, 8))
            if f.group != "root":
                os.chown(f.path, 0, postfix_gid)
        # postfix check creates the queue directories with Postfix's own ownership rules
        r = subprocess.run([POSTFIX, "-c", self.inst.postfix_dir, "check"], capture_output=True, text=True,
                           timeout=60, check=False)
        assert r.returncode == 0, f"postfix check failed: {r.stdout}{r.stderr}"
        return self

    def start(self, postfix=True, dovecot=True):
        log_dir = os.path.dirname(self.inst.maillog_file)
        if dovecot:
            conf = core_mail.dovecot_paths(self.site, self.node)["conf"]
            self.dovecot = Daemon(f"dovecot-{self.node.id}", [DOVECOT, "-c", conf, "-F"],
                                  os.path.join(log_dir, "dovecot.stdout")).start()
        if postfix:
            self.postfix = Daemon(f"postfix-{self.node.id}", [POSTFIX_MASTER, "-c", self.inst.postfix_dir, "-d"],
                                  os.path.join(log_dir, "postfix.stdout")).start()
        ports = ([self.inst.smtp_port, self.inst.submission_port] if postfix else []) + (
            [self.inst.imaps_port, self.inst.pop3s_port] if dovecot else [])
        try:
            for port in ports:
                wait_until(lambda p=port: _accepts(p), 30, what=f"{self.node.id} port {port}")
        except TimeoutError as exc:
            raise AssertionError(f"{exc}; logs:\n{self.logs()[-3000:]}") from None
        return self

    def flush(self):
        subprocess.run(["postqueue", "-c", self.inst.postfix_dir, "-f"], check=False, capture_output=True,
                       timeout=30)

    def logs(self):
        out = []
        for p in (self.inst.maillog_file, self.inst.dovecot_log):
            try:
                out.append(pathlib.Path(p).read_text(errors="replace"))
            except FileNotFoundError:
                pass
        for d in (self.postfix, self.dovecot):
            if d is not None:
                out.append(d.log())
        return "\n".join(out)

    def stop(self):
        for d in (self.postfix, self.dovecot):
            if d is not None:
                d.stop(timeout=20)


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
    nodes = {}
    try:
        # the LDAP tier's mirror-mode block, merged into each node's iRedMail-like slapd.conf
        for s in pair.slapd.values():
            s.install(core_ldap.merge_slapd_conf(
                iredmail_like_conf(s.dir, pair.suffix, pair.rootdn, pair.rootpw), site, str(s.conf)))
        pair.start()
        pair.seed("mail1")
        (base / "tls").mkdir(mode=0o755)
        subprocess.run([OPENSSL, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                        "-subj", "/CN=mail.example.net", "-keyout", str(base / "tls" / "key.pem"),
                        "-out", str(base / "tls" / "cert.pem")], check=True, capture_output=True, timeout=60)
        os.chmod(base / "tls" / "key.pem", 0o600)
        vmail = pathlib.Path(site.mail.vmail.path)
        vmail.mkdir(mode=0o700)
        os.chown(vmail, site.mail.vmail.uid, site.mail.vmail.gid)
        nodes = {n: MailNode(site, n).install() for n in NODES}
        # mail1 runs Postfix (and the Dovecot its SMTP AUTH asks); mail2 serves IMAP/POP3
        nodes["mail1"].start(postfix=True, dovecot=True)
        nodes["mail2"].start(postfix=False, dovecot=True)
        yield type("MailCluster", (), {"site": site, "pair": pair, "nodes": nodes, "base": base,
                                       "pillar": pillar})
    finally:
        for n in nodes.values():
            n.stop()
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
