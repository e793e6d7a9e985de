"""Regenerate the captured zone texts in this folder from a real named (Debian bind9).

    .venv/bin/python tests/unit/data/dns/capture.py

Starts tests.support.named.NamedServer with a hand-made www A, an SPF TXT and a backup MX at a
provider, then saves the zone as salt_mailha.modules.mailha_dns reads it (AXFR, and queries):
empty (before), converged (after the example pillar's plan was sent) and withdrawn (mail1's MX
withdrawn).
"""
import copy
import pathlib
import sys
import tempfile

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parents[3]
sys.path.insert(0, str(REPO))

from salt_mailha import data as mailha_data  # noqa: E402
from salt_mailha.core import dns as core  # noqa: E402
from salt_mailha.core.model import parse_site  # noqa: E402
from salt_mailha.modules import mailha_dns  # noqa: E402
from tests.support.named import NamedServer  # noqa: E402


def main():
    with tempfile.TemporaryDirectory() as tmp:
        ns = NamedServer(tmp, records=["www IN A 192.0.2.80", '@ IN TXT "v=spf1 mx -all"',
                                       "@ IN MX 50 backup-mx.provider.example."]).start()
        try:
            pillar = copy.deepcopy(mailha_data.example_pillar())
            pillar["mailha"]["dns"]["servers"] = [{"address": ns.address, "port": ns.port}]
            pillar["mailha"]["dns"]["tsig"]["secret"] = ns.secret
            site = parse_site(pillar["mailha"])
            conn = mailha_dns._Conn(site, 5)
            srv = site.dns.servers[0]
            conn.server = srv
            (HERE / "axfr_empty.txt").write_text(conn.axfr_text(srv) + "\n")
            current = core.parse_rrsets(conn.axfr_text(srv))
            conn.send(core.plan(site, current))
            (HERE / "axfr_converged.txt").write_text(conn.axfr_text(srv) + "\n")
            keys = set(core.desired_records(site)) | {("example.net.", "SOA"), ("example.net.", "MX")}
            keys |= {(core.owner_name(n, "example.net."), "TXT") for n, _ in set(keys)}
            (HERE / "query_converged.txt").write_text(conn.query_text(srv, keys) + "\n")
            current = core.parse_rrsets(conn.axfr_text(srv))
            conn.send(core.plan(site, current, withdraw=("mail1",), only=(("example.net.", "MX"),)))
            (HERE / "axfr_withdrawn.txt").write_text(conn.axfr_text(srv) + "\n")
        finally:
            ns.stop()


if __name__ == "__main__":
    main()
