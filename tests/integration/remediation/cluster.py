"""The remediation test site on loopback, shared by the integration tests and bench/remediation.py.

The example pillar's lb1, lb2, mail1 and mail2 (plus filer1, which the mail section needs, without
a minion), moved to 127.0.0.x: every node keeps its last octet (lb1 127.0.0.13, mail1
127.0.0.17 ...), the mail VIP is 127.0.0.21. The database tier is left out (no db minions here).
Each mail node's load-balanced services are two real TCP listeners run by the test process: one
speaking an IMAP greeting ("standing for Dovecot"), one an SMTP greeting.

ldirectord's maintenance mechanism: the host kernel has no IPVS (shared/notes/REAL-SERVICES.md
section 5), so drains are observed through the files ``mailha_ipvs.drain`` writes in each
balancer's ``maintenancedir`` (under that minion's ``mailha_root``), i.e. what ldirectord reads.
Because ``mailha_ipvs`` also reads and edits the live table, the lb minions (only they) run with
``fakebin/ipvsadm`` first on their PATH: a stand-in keeping one balancer's table in a JSON file
(see its docstring); the real ipvsadm is tested by the IPVS tier in a User-mode Linux guest.
"""
import copy
import json
import os
import pathlib
import socket
import threading

import yaml

from salt_mailha import data as mailha_data

REPO = pathlib.Path(__file__).resolve().parents[3]
EXAMPLE = mailha_data.example_pillar()
# overridable: the Salt-version matrix (tests/compat) runs this site in a child pytest while
# another run on the same host may hold the default ports
IMAP_PORT = int(os.environ.get("MAILHA_REMTEST_IMAP_PORT", "20143"))
SMTP_PORT = int(os.environ.get("MAILHA_REMTEST_SMTP_PORT", "20025"))
MINIONS = ("lb1", "lb2", "mail1", "mail2")


def loopback(address):
    return "127.0.0." + address.split(".")[-1] if address.startswith("192.0.2.") else \
        "127.0.1." + address.split(".")[-1]


def site_pillar(named, down_after=2, up_after=2, max_actions=4, window=60, probe_interval=1):
    """The site pillar for the remediation tests (``{"mailha": ...}``), DNS at ``named``."""
    ex = copy.deepcopy(EXAMPLE["mailha"])
    keep = ("filer1", "lb1", "lb2", "mail1", "mail2")
    nodes = {}
    for nid in keep:
        n = ex["nodes"][nid]
        n["addresses"] = {net: loopback(a) for net, a in n["addresses"].items()}
        if nid == "filer1":
            n["roles"] = ["filer"]
        n.pop("interface", None)
        nodes[nid] = n
    mail_vip = dict(ex["vips"]["mail"], address="127.0.0.21")
    site = {
        "site": "remtest",
        "domain": ex["domain"],
        "networks": {"public": "127.0.0.0/24", "private": "127.0.1.0/24"},
        "nodes": nodes,
        "vips": {"mail": mail_vip},
        "services": {
            "imap": {"vip": "mail", "port": IMAP_PORT, "check": "imap", "scheduler": "wrr"},
            "smtp": {"vip": "mail", "port": SMTP_PORT, "check": "smtp", "scheduler": "wrr"},
        },
        "keepalived": ex["keepalived"],
        "ldirectord": ex["ldirectord"],
        "ldap": ex["ldap"],
        "dns": dict(ex["dns"], updater="lb1",
                    servers=[{"address": named.address, "port": named.port}],
                    tsig={"name": named.key_name, "algorithm": "hmac-sha256",
                          "secret": named.secret}),
        "mail": {"vmail": ex["mail"]["vmail"]},
        "remediation": {"probe_interval": probe_interval, "down_after": down_after,
                        "up_after": up_after, "max_actions": max_actions, "window": window},
    }
    return {"mailha": site}


def node_address(pillar, node):
    return pillar["mailha"]["nodes"][node]["addresses"]["public"]


class ServiceListener:
    """A real TCP server on ``address:port`` that greets every client (a stand-in daemon)."""

    def __init__(self, address, port, greeting):
        self.address, self.port, self.greeting = address, port, greeting
        self.sock = None
        self.conns = []
        self.lock = threading.Lock()

    @property
    def running(self):
        return self.sock is not None

    def start(self):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.address, self.port))
        sock.listen(64)
        self.sock = sock
        threading.Thread(target=self._serve, args=(sock,), daemon=True).start()
        return self

    def _serve(self, sock):
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            try:
                conn.sendall(self.greeting)
            except OSError:
                pass
            conn.close()

    def stop(self):
        """Stop listening: new connections are refused, like a stopped daemon."""
        sock, self.sock = self.sock, None
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()


def mail_services(pillar):
    """``{node: {"imap": ServiceListener, "smtp": ServiceListener}}`` for mail1 and mail2."""
    out = {}
    for node in ("mail1", "mail2"):
        addr = node_address(pillar, node)
        out[node] = {
            "imap": ServiceListener(addr, IMAP_PORT,
                                    b"* OK [CAPABILITY IMAP4rev1] Dovecot (Debian) ready.\r\n"),
            "smtp": ServiceListener(addr, SMTP_PORT,
                                    f"220 {node}.example.net ESMTP Postfix (Debian/GNU)\r\n".encode()),
        }
    return out


def reactor_config():
    return [
        {"salt/beacon/*/mailha_health/mailha/health/*": [str(REPO / "reactor" / "health.sls")]},
        {"salt/beacon/*/mailha_local/mailha/local/*": [str(REPO / "reactor" / "health.sls")]},
        {"salt/presence/change": [str(REPO / "reactor" / "presence.sls")]},
    ]


def master_overrides(pillar_dir):
    return {
        "interface": "127.0.0.1",
        "auto_accept": True,
        "file_roots": {"base": [str(REPO / "states")]},
        "pillar_roots": {"base": [str(pillar_dir)]},
        "reactor": reactor_config(),
        "log_level_logfile": "info",
    }


FAKEBIN = pathlib.Path(__file__).resolve().parent / "fakebin"
MAINTENANCE = "etc/ldirectord.maintenance"


def prepare_balancer(root, lb, site):
    """Maintenance dir and IPVS table of balancer ``lb`` under ``root``; returns its environ."""
    from salt_mailha.core import lb as core_lb

    base = pathlib.Path(root) / lb
    (base / MAINTENANCE).mkdir(parents=True, exist_ok=True)
    table = [{"vip": vs.address, "port": vs.port, "sched": vs.scheduler,
              "reals": [{"addr": r.address, "port": r.port, "fwd": "Route", "weight": r.weight}
                        for r in vs.real_servers]}
             for vs in core_lb.desired_table(site)]
    state = base / "ipvs.json"
    state.write_text(json.dumps(table))
    return {**os.environ, "PATH": f"{FAKEBIN}:{os.environ.get('PATH', '/usr/bin:/bin')}",
            "MAILHA_FAKE_IPVS": str(state)}


def ldirectord_restores(root, lb, address, weight=1):
    """Do what ldirectord does once a real server's maintenance file is gone and its check
    passes: give it its weight back (there is no ldirectord here, see the module docstring)."""
    state = pathlib.Path(root) / lb / "ipvs.json"
    table = json.loads(state.read_text())
    for vs in table:
        for r in vs["reals"]:
            if r["addr"] == address:
                r["weight"] = weight
    state.write_text(json.dumps(table))


def maintenance_files(root, lb):
    d = pathlib.Path(root) / lb / MAINTENANCE
    return sorted(p.name for p in d.iterdir()) if d.is_dir() else []


def minion_overrides(minion_id, root, beacon_interval=1):
    # loop_interval 1: Salt runs beacons from a 1 s periodic callback but counts a beacon's
    # ``interval`` in loop_interval steps (the factories default 0.05 would make 1 s into 20 s).
    # mailha_live: a scratch root is a rehearsal, which sends nothing; these minions must still
    # withdraw MX on the test's named and drain through fakebin/ipvsadm
    over = {"mailha_root": str(pathlib.Path(root) / minion_id), "mailha_live": True,
            "log_level_logfile": "info", "loop_interval": 1}
    if minion_id.startswith("lb"):
        over["beacons"] = {"mailha_health": [{"interval": beacon_interval}, {"timeout": 0.5}]}
    return over


def write_pillar(pillar_dir, pillar):
    pillar_dir = pathlib.Path(pillar_dir)
    pillar_dir.mkdir(parents=True, exist_ok=True)
    (pillar_dir / "top.sls").write_text("base:\n  '*':\n    - mailha\n")
    (pillar_dir / "mailha.sls").write_text(yaml.safe_dump(pillar))
