"""Replication latency of a mirror pair configured by the mailha.ldap state (prints figures).

    .venv/bin/python bench/ldap.py [--format slapd.conf|cn=config] [--adds 100]

Two real slapd on loopback (tests/integration/ldap/fixtures.py), configured through salt-call
from the example pillar. For each direction: add an entry over a persistent ldap3 connection,
poll the peer (persistent connection) until it is there; then kill -9 one node, write on the
other, restart it and time the catch-up. Wall-clock figures: run on an idle machine.
"""
import argparse
import pathlib
import statistics
import sys
import tempfile
import time

import ldap3

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from salt_mailha.core import ldap as core_ldap  # noqa: E402
from tests.integration.ldap.fixtures import MirrorPair  # noqa: E402


def pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def visible(conn, dn):
    conn.search(dn, "(objectClass=*)", search_scope=ldap3.BASE, attributes=["1.1"])
    return bool(conn.entries)


def one_way(pair, src, dst, n):
    out = []
    with pair.connect(src) as w, pair.connect(dst) as r:
        r.raise_exceptions = False
        for i in range(n):
            dn = f"uid=bench-{src}-{i},ou=people,{pair.suffix}"
            w.add(dn, ["inetOrgPerson"], {"cn": "b", "sn": "b", "uid": f"bench-{src}-{i}"})
            t0 = time.perf_counter()
            while not visible(r, dn):
                if time.perf_counter() - t0 > 30:
                    raise TimeoutError(f"{dn} never reached {dst}")
                time.sleep(0.0005)
            out.append((time.perf_counter() - t0) * 1000)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--format", default="slapd.conf", choices=["slapd.conf", "cn=config"])
    ap.add_argument("--adds", type=int, default=100)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        pair = MirrorPair.build(tmp, args.format)
        try:
            t0 = time.perf_counter()
            pair.start()
            pair.seed("mail1")
            t1 = time.perf_counter()
            pair.configure()
            for s in pair.slapd.values():
                s.wait_ready()
            pair.wait_has("mail2", f"ou=people,{pair.suffix}")
            t2 = time.perf_counter()
            print(f"format {args.format}: pair up + seeded {t1 - t0:.2f} s; mailha.ldap state on both nodes "
                  f"(2 salt-call) + seed replicated {t2 - t1:.2f} s")
            for src, dst in (("mail1", "mail2"), ("mail2", "mail1")):
                ms = one_way(pair, src, dst, args.adds)
                print(f"{src}->{dst}: n={len(ms)} median {statistics.median(ms):.2f} ms, p90 {pct(ms, 90):.2f} ms, "
                      f"p99 {pct(ms, 99):.2f} ms, max {max(ms):.2f} ms")
            pair.slapd["mail2"].kill9()
            missed = [pair.add_person("mail1", f"missed-{i}") for i in range(20)]
            t3 = time.perf_counter()
            pair.slapd["mail2"].start()
            pair.slapd["mail2"].wait_ready()
            for dn in missed:
                pair.wait_has("mail2", dn, timeout=60)
            print(f"kill -9 mail2, 20 adds on mail1, restart: all on mail2 {time.perf_counter() - t3:.2f} s "
                  f"after the restart began")
            # the other direction depends on mail1's consumer reconnecting (syncrepl retry)
            dn = pair.add_person("mail2", "after-restart")
            t4 = time.perf_counter()
            pair.wait_has("mail1", dn, timeout=60)
            print(f"first add on the restarted mail2 visible on mail1 {time.perf_counter() - t4:.2f} s later "
                  f"(mail1's consumer retry is {core_ldap.SYNCREPL_RETRY!r})")
        finally:
            pair.stop()


if __name__ == "__main__":
    main()
