"""Figures of the DNS tier against a real local named: how long a plan+update round trip takes.

    .venv/bin/python bench/dns_updates.py [--rounds 100]

Starts Debian's named on a free loopback port (tests/support/named.py), converges the example
site, then alternates withdraw_mx(mail1) / restore_mx(mail1) the way the module does it: read
the zone (AXFR, or queries), plan in core, send one signed UPDATE with prerequisites. Prints
median and p95 in milliseconds. Never asserted anywhere: machines differ.
"""
import pathlib
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import argparse  # noqa: E402
import copy  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

from salt_mailha import data as mailha_data  # noqa: E402
from salt_mailha.core import dns as core  # noqa: E402
from salt_mailha.core.model import parse_site  # noqa: E402
from salt_mailha.modules import mailha_dns  # noqa: E402
from tests.support.named import NamedServer  # noqa: E402


def pct(samples, p):
    s = sorted(samples)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def report(label, samples):
    ms = [x * 1000 for x in samples]
    print(f"{label:<42} n={len(ms):<4} median {statistics.median(ms):7.2f} ms   "
          f"p95 {pct(ms, 95):7.2f} ms   max {max(ms):7.2f} ms")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=100)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        ns = NamedServer(tmp).start()
        try:
            pillar = copy.deepcopy(mailha_data.example_pillar())
            pillar["mailha"]["dns"]["servers"] = [{"address": ns.address, "port": ns.port}]
            pillar["mailha"]["dns"]["tsig"]["secret"] = ns.secret
            site = parse_site(pillar["mailha"])
            mx = (core.absolute(site.domain, "."), "MX")
            conn = mailha_dns._Conn(site, 5)
            current, _ = conn.read(site)
            conn.send(core.plan(site, current))

            reads, queries, plans, sends, trips = [], [], [], [], []
            srv = site.dns.servers[0]
            keys = set(core.desired_records(site)) | {mx}
            for i in range(args.rounds):
                kwargs = {"withdraw": ("mail1",)} if i % 2 == 0 else {"restore": ("mail1",)}
                t0 = time.perf_counter()
                current, method = conn.read(site)
                t1 = time.perf_counter()
                the_plan = core.plan(site, current, only=(mx,), **kwargs)
                t2 = time.perf_counter()
                conn.send(the_plan)
                t3 = time.perf_counter()
                reads.append(t1 - t0)
                plans.append(t2 - t1)
                sends.append(t3 - t2)
                trips.append(t3 - t0)
                t4 = time.perf_counter()
                conn.query_text(srv, keys | {(core.owner_name(n, site.dns.zone), "TXT") for n, _ in keys})
                queries.append(time.perf_counter() - t4)
            print(f"named {ns.address}:{ns.port}, {args.rounds} rounds, updates applied by named: "
                  f"{ns.applied_updates()}, read method: {method}")
            report("read zone (signed AXFR over TCP)", reads)
            report(f"read by queries ({2 * len(keys)} signed TCP queries)", queries)
            report("plan (core, pure)", plans)
            report("send one UPDATE (TCP, TSIG, prerequisites)", sends)
            report("plan+update round trip (read+plan+send)", trips)
        finally:
            ns.stop()


if __name__ == "__main__":
    main()
