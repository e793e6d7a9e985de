"""The two-slapd mirror pair, configured through Salt from the example pillar (reusable).

``MirrorPair.build(tmp_path, config_format)`` gives two real slapd processes (mail1 on
127.0.1.17, mail2 on 127.0.1.18, one free port) running an iRedMail-like config, plus one
``salt-call --local`` minion config per node whose pillar is pillar.example/mailha.sls with only
the LDAP listeners moved to loopback (a ``loop`` network 127.0.0.0/8; ``ldap.network: loop``,
``ldap.port``). Nothing about replication is pre-configured: the ``mailha.ldap`` state does it.

``MirrorPair.build_native(tmp_path)`` is the native mail path instead (no ``mail:iredmail``):
each slapd runs the slapd.conf the formula renders for its node (``render_native_slapd_conf``,
only the pid/args/database paths moved under ``tmp_path``), mirror mode already on, and the
database empty: no suffix entry, as a freshly installed native node starts.

Other tiers reuse it::

    from tests.integration.ldap.fixtures import MirrorPair
    pair = MirrorPair.build(tmp_path, "slapd.conf"); pair.start(); pair.configure()
    ...; pair.stop()
"""
import copy
import json
import os
import pathlib
import subprocess
import sys

import ldap3
import yaml

from salt_mailha import data as mailha_data
from salt_mailha.core import ldap as core_ldap
from salt_mailha.core.model import load_site
from tests.support.daemon import wait_until
from tests.support.example import IREDMAIL
from tests.support.slapd import Slapd, free_port, iredmail_like_conf

REPO = pathlib.Path(__file__).resolve().parents[3]
SALT_CALL = str(pathlib.Path(sys.executable).with_name("salt-call"))
NODES = {"mail1": "127.0.1.17", "mail2": "127.0.1.18"}


def example_pillar(port, config_format, iredmail=True):
    """pillar.example with the LDAP listeners on loopback: only the addresses/port change (and,
    with ``iredmail``, the documented iRedMail section is added)."""
    data = mailha_data.example_pillar()
    site = copy.deepcopy(data["mailha"])
    site["networks"]["loop"] = "127.0.0.0/8"
    for node, addr in NODES.items():
        site["nodes"][node]["addresses"]["loop"] = addr
    site["ldap"]["network"] = "loop"
    site["ldap"]["port"] = port
    site["ldap"]["config_format"] = config_format
    if iredmail:  # mirror mode merged into a slapd.conf someone else wrote: the iRedMail path
        site["mail"]["iredmail"] = copy.deepcopy(IREDMAIL)
    return {"mailha": site}


class SaltNode:
    """``salt-call --local`` for one mail node: own config dir, pillar, log file (debug)."""

    def __init__(self, root, node_id, pillar, slapd, config_uri=None):
        self.root = pathlib.Path(root)
        self.id = node_id
        conf = self.root / "conf"
        pillar_dir = self.root / "pillar"
        conf.mkdir(parents=True, exist_ok=True)
        pillar_dir.mkdir(exist_ok=True)
        (pillar_dir / "top.sls").write_text("base:\n  '*':\n    - mailha\n")
        (pillar_dir / "mailha.sls").write_text(yaml.safe_dump(pillar, sort_keys=False))
        self.log_file = self.root / "root" / "minion.log"  # inside root_dir, or Salt prefixes it
        opts = {
            "id": node_id,
            "file_client": "local",
            "root_dir": str(self.root / "root"),
            "file_roots": {"base": [str(REPO / "states")]},
            "pillar_roots": {"base": [str(pillar_dir)]},
            "log_file": str(self.log_file),
            "log_level_logfile": "debug",
            "module_dirs": [str(REPO / "tests" / "integration" / "ldap" / "_modules")],
            "providers": {"service": "slapdsvc"},
            "mailha_test_services": {"slapd": str(slapd.instance_file)},
            "mailha_test_repo": str(REPO),
            "mailha_ldap": {k: v for k, v in (("slapd_conf", str(slapd.conf)), ("service", "slapd"),
                                              ("config_uri", config_uri or slapd.ldapi_url)) if v},
        }
        (conf / "minion").write_text(yaml.safe_dump(opts))
        self.conf = conf

    def call(self, *args, test=False, timeout=180):
        """Run salt-call; returns (parsed JSON "local" value, combined output text)."""
        argv = [SALT_CALL, "--local", "-c", str(self.conf), "--out=json", "--retcode-passthrough",
                "-l", "warning", *args]
        if test:
            argv.append("test=True")
        env = dict(os.environ, PYTHONPATH=str(REPO))
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env, check=False)
        text = proc.stdout + proc.stderr
        try:
            out = json.loads(proc.stdout)["local"]
        except (ValueError, KeyError):
            raise AssertionError(f"salt-call {args} failed (rc={proc.returncode}): {text[-3000:]}") from None
        return out, text

    def apply(self, test=False):
        out, text = self.call("state.apply", "mailha.ldap", test=test)
        assert isinstance(out, dict), out
        (ret,) = out.values()
        return ret, text


class MirrorPair:
    def __init__(self, tmp_path, config_format, native=False):
        self.tmp = pathlib.Path(tmp_path)
        self.format = config_format
        self.native = native
        self.port = free_port()
        self.pillar = example_pillar(self.port, config_format, iredmail=not native)
        ldap = self.pillar["mailha"]["ldap"]
        self.suffix, self.rootdn, self.rootpw = ldap["suffix"], ldap["rootdn"], ldap["rootpw"]
        self.repl_password = ldap["rootpw"]  # replication binds as the rootdn
        mode = "cnconfig" if config_format == "cn=config" else "conf"
        self.slapd = {n: Slapd(self.tmp / n / "slapd", a, self.port, mode) for n, a in NODES.items()}
        # cn=config: mail1 is changed over ldapi as root (SASL EXTERNAL), mail2 over ldap:// bound
        # as the rootdn: the two ways the state reaches cn=config
        self.salt = {n: SaltNode(self.tmp / n / "salt", n, self.pillar, self.slapd[n],
                                 self.slapd[n].url if n == "mail2" else None) for n in NODES}

    @classmethod
    def build(cls, tmp_path, config_format):
        pair = cls(tmp_path, config_format)
        for s in pair.slapd.values():
            s.install(iredmail_like_conf(s.dir, pair.suffix, pair.rootdn, pair.rootpw,
                                         config_db=config_format == "cn=config"))
        return pair

    @classmethod
    def build_native(cls, tmp_path):
        pair = cls(tmp_path, "slapd.conf", native=True)
        site = load_site(pair.pillar)
        for n, s in pair.slapd.items():
            text = core_ldap.render_native_slapd_conf(site, site.node(n))
            for prod, test in (("/run/slapd/slapd.pid", s.pidfile), ("/run/slapd/slapd.args", s.dir / "slapd.args"),
                               ("/var/lib/ldap", s.dir / "db")):
                assert prod in text, f"the native slapd.conf no longer has {prod}: update build_native"
                text = text.replace(prod, str(test))
            s.install(text)
        return pair

    def start(self):
        for s in self.slapd.values():
            if s.pid() is None:
                s.start()
        for s in self.slapd.values():
            s.wait_ready()

    def stop(self):
        for s in self.slapd.values():
            s.cleanup()

    def connect(self, node):
        s = self.slapd[node]
        return ldap3.Connection(ldap3.Server(s.url.rstrip("/"), connect_timeout=3), self.rootdn, self.rootpw,
                                auto_bind=True, receive_timeout=5, raise_exceptions=True)

    def seed(self, node="mail1"):
        """The suffix entry and ou=people, as the iRedMail installer would create them."""
        with self.connect(node) as c:
            c.add(self.suffix, ["top", "dcObject", "organization"], {"dc": "example", "o": "example"})
            c.add(f"ou=people,{self.suffix}", ["top", "organizationalUnit"], {"ou": "people"})

    def add_person(self, node, uid):
        dn = f"uid={uid},ou=people,{self.suffix}"
        with self.connect(node) as c:
            c.add(dn, ["inetOrgPerson"], {"cn": uid, "sn": uid, "uid": uid})
        return dn

    def add_ou(self, node, ou):
        dn = f"ou={ou},{self.suffix}"
        with self.connect(node) as c:
            c.add(dn, ["top", "organizationalUnit"], {"ou": ou})
        return dn

    def has(self, node, dn):
        with self.connect(node) as c:
            return core_ldap.entry_exists(c, dn)

    def entry_uuid(self, node, dn):
        with self.connect(node) as c:
            c.search(dn, "(objectClass=*)", search_scope=ldap3.BASE, attributes=["entryUUID"])
            return str(c.entries[0].entryUUID)

    def wait_has(self, node, dn, timeout=30):
        return wait_until(lambda: self.has(node, dn), timeout, interval=0.05, what=f"{dn} on {node}")

    def count(self, node):
        with self.connect(node) as c:
            c.search(self.suffix, "(objectClass=*)", attributes=["1.1"])
            return len(c.entries)

    def configure(self):
        """Apply the mailha.ldap state on both nodes (not in test mode); returns the returns."""
        return {n: self.salt[n].apply() for n in NODES}
