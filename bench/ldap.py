"""Replication latency of a mirror pair configured by the mailha.ldap state (prints figures).

    .venv/bin/python bench/ldap.py [--format slapd.conf|cn=config] [--adds 100]
    .venv/bin/python bench/ldap.py --native [--runs 5]

Two real slapd on loopback (tests/integration/ldap/fixtures.py), configured through salt-call
from the example pillar. For each direction: add an entry over a persistent ldap3 connection,
poll the peer (persistent connection) until it is there; then kill -9 one node, write on the
other, restart it and time the catch-up. ``--native``: the native path's empty pair (the
slapd.conf the formula renders); how long the suffix entry takes to reach mail2 after mail1 adds
it (in-process, the same add the state does), and the base_entry_present state through salt-call
on both nodes at once (mail1 creates, mail2 waits for it). Wall-clock figures: run on an idle
machine.
"""
import argparse
import pathlib
import statistics
import sys
import tempfile
import threading
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


def native_base_entry(runs):
    add_ms, state_s = [], {"mail1": [], "mail2": []}
    for run in range(runs):
        with tempfile.TemporaryDirectory() as tmp:
            pair = MirrorPair.build_native(tmp)
            try:
                pair.start()
                entry = core_ldap.base_entry(pair.suffix)
                if run % 2 == 0:  # in-process: the add the state does, then poll mail2
                    with pair.connect("mail1") as w, pair.connect("mail2") as r:
                        r.raise_exceptions = False
                        core_ldap.add_entry(w, entry)
                        t0 = time.perf_counter()
                        while not visible(r, entry.dn):
                            if time.perf_counter() - t0 > 30:
                                raise TimeoutError(f"{entry.dn} never reached mail2")
                            time.sleep(0.0005)
                        add_ms.append((time.perf_counter() - t0) * 1000)
                    continue

                def apply(node, pair=pair):
                    t = time.perf_counter()
                    out, _ = pair.salt[node].call("state.single", "mailha_ldap.base_entry_present", "name=bench")
                    (ret,) = out.values()
                    assert ret["result"] is True, ret
                    state_s[node].append(time.perf_counter() - t)
                threads = [threading.Thread(target=apply, args=(n,)) for n in ("mail1", "mail2")]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
            finally:
                pair.stop()
    if add_ms:
        print(f"native path, empty pair: suffix entry added on mail1 visible on mail2 after n={len(add_ms)} "
              f"median {statistics.median(add_ms):.2f} ms, max {max(add_ms):.2f} ms")
    for node, what in (("mail1", "creates"), ("mail2", "waits for it")):
        if state_s[node]:
            v = state_s[node]
            print(f"salt-call state.single base_entry_present on {node} ({what}), both at once: n={len(v)} "
                  f"median {statistics.median(v):.2f} s, max {max(v):.2f} s")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--format", default="slapd.conf", choices=["slapd.conf", "cn=config"])
    ap.add_argument("--adds", type=int, default=100)
    ap.add_argument("--native", action="store_true", help="time the native path's suffix entry instead")
    ap.add_argument("--runs", type=int, default=6, help="pairs built for --native (half in-process, half salt)")
    args = ap.parse_args()
    if args.native:
        native_base_entry(args.runs)
        return
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
