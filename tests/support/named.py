"""A real BIND ``named`` (Debian's bind9) serving one dynamic zone on a loopback port.

Used by the DNS tier's integration tests and by anyone who needs a live RFC 2136 server (the
remediation tests withdraw and restore MX records against it). See shared/notes/REAL-SERVICES.md
section 3 for the measured recipe and traps.

The zone is a primary with ``update-policy { grant <key> zonesub ANY; }`` and AXFR allowed for the
same TSIG key only, so a client without the key can neither update nor transfer. Update logging
is on (category ``update`` -> ``update.log``) so tests can count the UPDATE messages the server
applied (``applied_updates()``).

Usage::

    ns = NamedServer(tmp_path, zone="example.net", key_name="mailha-update", secret=b64)
    ns.start()                      # waits until the SOA answers
    ns.port, ns.address             # where to send queries and updates
    ns.query("example.net", "MX")   # sorted rdata texts, over TCP, no TSIG
    ns.point_pillar(pillar)         # copy of a site pillar whose mailha:dns uses this server
    ns.applied_updates()            # UPDATE messages named applied (from its update log)
    ns.stop()
"""
import base64
import os
import re
import shutil
import socket
import textwrap
from pathlib import Path

from tests.support.daemon import Daemon, wait_until

NAMED = shutil.which("named") or "/usr/sbin/named"


def free_port(address="127.0.0.1"):
    """A port free for both UDP and TCP on ``address`` (never 5353: that is mDNS)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind((address, 0))
            port = tcp.getsockname()[1]
            if port == 5353:
                continue
            try:
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                    udp.bind((address, port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free UDP+TCP port on {address}")


def new_secret():
    """A fresh base64 TSIG secret (32 random bytes, as tsig-keygen makes for hmac-sha256)."""
    return base64.b64encode(os.urandom(32)).decode()


class NamedServer:
    """One named process, its config, zone and logs under ``base_dir``."""

    def __init__(self, base_dir, zone="example.net", key_name="mailha-update", secret=None,
                 algorithm="hmac-sha256", address="127.0.0.1", port=None, records=(),
                 update_policy=None):
        self.dir = Path(base_dir)
        self.zone = zone.rstrip(".")
        self.key_name = key_name
        self.secret = secret or new_secret()
        self.algorithm = algorithm
        self.address = address
        self.port = port or free_port(address)
        self.records = list(records)   # extra zone-file lines, e.g. "www IN A 192.0.2.80"
        # named's update-policy rules; default: the key may change anything in the zone.
        self.update_policy = update_policy or f"grant {key_name} zonesub ANY;"
        self.daemon = None

    # -- files ------------------------------------------------------------------------------
    @property
    def update_log(self):
        return self.dir / "update.log"

    def write_config(self):
        (self.dir / "zones").mkdir(parents=True, exist_ok=True)
        key = self.dir / "tsig.key"
        key.write_text(
            f'key "{self.key_name}" {{\n  algorithm {self.algorithm};\n'
            f'  secret "{self.secret}";\n}};\n'
        )
        key.chmod(0o600)
        d = self.dir
        (d / "named.conf").write_text(textwrap.dedent(f"""\
            include "{key}";
            options {{
                directory "{d}";
                pid-file "{d}/named.pid";
                session-keyfile "{d}/session.key";
                listen-on port {self.port} {{ {self.address}; }};
                listen-on-v6 {{ none; }};
                recursion no;
                allow-query {{ 127.0.0.0/8; }};
                allow-transfer {{ key {self.key_name}; }};
                notify no;
                dnssec-validation no;
            }};
            controls {{ }};
            logging {{
                channel default_log {{ file "{d}/named.log"; severity info; print-time yes; }};
                channel update_log {{ file "{d}/update.log"; severity info; print-time yes; }};
                category default {{ default_log; }};
                category update {{ update_log; }};
                category update-security {{ update_log; }};
            }};
            zone "{self.zone}" {{
                type primary;
                file "{d}/zones/{self.zone}.db";
                journal "{d}/zones/{self.zone}.db.jnl";
                update-policy {{ {self.update_policy} }};
            }};
            """))
        lines = [
            "$TTL 300",
            f"@   IN SOA ns1.{self.zone}. hostmaster.{self.zone}. ( 1 3600 600 86400 300 )",
            f"    IN NS  ns1.{self.zone}.",
            f"ns1 IN A   {self.address}",
            *self.records,
        ]
        zone_file = d / "zones" / f"{self.zone}.db"
        zone_file.write_text("\n".join(lines) + "\n")
        for stale in (d / "zones").glob("*.jnl"):
            stale.unlink()

    # -- process ----------------------------------------------------------------------------
    def start(self, timeout=20):
        self.write_config()
        # -g would log to stderr and ignore the logging block; -f keeps our channels.
        self.daemon = Daemon("named", [NAMED, "-f", "-4", "-c", self.dir / "named.conf"],
                             self.dir / "named.stdout").start()
        try:
            wait_until(lambda: self.soa_serial() is not None, timeout, what="named answering SOA")
        except TimeoutError:
            self.stop()
            raise RuntimeError(f"named did not start:\n{self.daemon.log()}\n{self.log()}") from None
        return self

    def stop(self):
        if self.daemon:
            self.daemon.stop()

    def log(self):
        p = self.dir / "named.log"
        return p.read_text(errors="replace") if p.exists() else ""

    def point_pillar(self, pillar):
        """A copy of a whole pillar (``{"mailha": ...}``) whose mailha:dns talks to this server."""
        import copy

        pillar = copy.deepcopy(pillar)
        dns = pillar["mailha"]["dns"]
        dns["servers"] = [{"address": self.address, "port": self.port}]
        dns["tsig"] = {"name": self.key_name, "algorithm": self.algorithm, "secret": self.secret}
        return pillar

    # -- probes (no TSIG: queries are open on loopback) --------------------------------------
    def query(self, name, rdtype):
        """Sorted rdata texts of ``name``/``rdtype`` over TCP; [] for NXDOMAIN/NODATA."""
        import dns.message
        import dns.query

        qname = name if name.endswith(".") else f"{name}."
        if not qname.rstrip(".").endswith(self.zone):
            qname = f"{name}.{self.zone}."
        r = dns.query.tcp(dns.message.make_query(qname, rdtype), self.address, port=self.port,
                          timeout=3)
        return sorted(rr.to_text() for rrset in r.answer for rr in rrset)

    def update(self, build):
        """Send one signed UPDATE made by ``build(update_message)`` (a change "by hand"); rcode text."""
        import dns.query
        import dns.rcode
        import dns.tsigkeyring
        import dns.update

        keyring = dns.tsigkeyring.from_text({self.key_name: (self.algorithm, self.secret)})
        u = dns.update.UpdateMessage(f"{self.zone}.", keyring=keyring, keyname=self.key_name,
                                     keyalgorithm=self.algorithm)
        build(u)
        r = dns.query.tcp(u, self.address, port=self.port, timeout=3)
        return dns.rcode.to_text(r.rcode())

    def soa_serial(self):
        answer = self.query(f"{self.zone}.", "SOA")
        return int(answer[0].split()[2]) if answer else None

    def applied_updates(self):
        """How many UPDATE messages named applied so far.

        named logs one line per RR added or deleted, tagged with the client's address#port; each
        dnspython UPDATE is its own TCP connection, so distinct ``#port`` tags count messages.
        """
        if not self.update_log.exists():
            return 0
        tags = set()
        for line in self.update_log.read_text(errors="replace").splitlines():
            m = re.search(r"client @\S+ (\S+?#\d+)[^:]*: updating zone '[^']+': (adding|deleting) an RR", line)
            if m:
                tags.add(m.group(1))
        return len(tags)
