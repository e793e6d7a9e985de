#!/usr/bin/env python3
"""Galera recovery figures on real mariadbd members driven through Salt (salt-call --local per
member, direct launcher, loopback addresses, rsync SST, tuned evs timeouts).

Prints, per round:
  * node killed -> cluster writable again: kill -9 of one member under a steady writer, seconds
    until the commits issued before its eviction return on a survivor (and the longest commit
    stall seen by the writer);
  * node rejoin through the state (state.apply mailha.galera on the killed member, IST);
  * all nodes down -> 3/3 Synced: kill -9 of every member, then
    ``salt_mailha.core.galera.recover_cluster`` (the runner's code) gathering positions and
    starting members through each member's Salt loader, until all three are Synced.

Usage: .venv/bin/python bench/galera_recovery.py [--rounds N]   (needs root, mariadb-server,
galera-4, rsync; about 40 s per round on 2 idle cores)
"""

import argparse
import pathlib
import sys
import tempfile
import threading
import time

import pymysql

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from salt_mailha.core.galera import BootstrapPolicy, recover_cluster  # noqa: E402
from tests.integration.galera.harness import GaleraLab, have_galera, prepare_table  # noqa: E402


class TimedWriter(threading.Thread):
    """INSERTs in a loop on one member; records (start, end) of every committed one."""

    def __init__(self, member):
        super().__init__(daemon=True)
        self.member = member
        self.commits = []
        self.halt = threading.Event()

    def run(self):
        conn = pymysql.connect(unix_socket=str(self.member.socket), user="root", autocommit=True,
                               read_timeout=60, write_timeout=60)
        n = 0
        while not self.halt.is_set():
            n += 1
            t0 = time.monotonic()
            try:
                with conn.cursor() as cur:
                    cur.execute("INSERT INTO t.acked (v) VALUES (%s)", (f"bench-{t0}-{n}",))
                self.commits.append((t0, time.monotonic()))
            except pymysql.MySQLError:
                time.sleep(0.01)
            time.sleep(0.005)
        conn.close()


def one_round(lab, first):
    out = {}
    if first:
        t0 = time.monotonic()
        results = lab.apply_all()
        lab.wait_synced(size=3, timeout=60)
        out["initial 3-node cluster through concurrent state.apply"] = time.monotonic() - t0
        assert all(rc == 0 for rc, _ in results.values()), results
        prepare_table(lab.member("db1"))

    db1, filer1 = lab.member("db1"), lab.member("filer1")
    writer = TimedWriter(db1)
    writer.start()
    time.sleep(1.0)
    t_kill = time.monotonic()
    filer1.kill9()
    while int(db1.status().get("wsrep_cluster_size", 0)) != 2:
        time.sleep(0.01)
    t_evicted = time.monotonic()
    time.sleep(1.0)
    writer.halt.set()
    writer.join(30)
    # A commit issued while the dead member is still in the group waits for its eviction; the
    # cluster is writable again when the last of those commits returns.
    during = [e for s, e in writer.commits if t_kill <= s <= t_evicted]
    after = [e for s, e in writer.commits if s >= t_kill]
    stalls = [e - s for s, e in writer.commits]
    out["node killed -> cluster writable again (stalled commits return)"] = \
        (max(during) if during else min(after)) - t_kill if after else float("nan")
    out["node killed -> evicted (cluster size 2)"] = t_evicted - t_kill
    out["longest commit stall seen by the writer"] = max(stalls)

    t0 = time.monotonic()
    rc, _ = filer1.apply()
    lab.wait_synced(size=3, timeout=60)
    out["killed node back through state.apply (IST)"] = time.monotonic() - t0

    for m in lab.members:
        m.kill9()
    t_down = time.monotonic()
    res = recover_cluster(BootstrapPolicy(tuple(m.id for m in lab.members), "db1"), lab.ask, lab.act,
                          apply=True)
    lab.wait_synced(size=3, timeout=120)
    out["all nodes down -> 3/3 Synced (galera recovery)"] = time.monotonic() - t_down
    if not res["result"]:
        raise SystemExit(f"recovery failed: {res['reason']}")
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=1)
    args = ap.parse_args()
    if not have_galera():
        raise SystemExit("needs mariadb-server galera-4 rsync (scripts/setup-host.sh)")
    lab = GaleraLab(tempfile.mkdtemp(prefix="mailha-galera-bench-"))
    rounds = []
    try:
        for i in range(args.rounds):
            rounds.append(one_round(lab, first=(i == 0)))
    finally:
        lab.cleanup()
    keys = list(dict.fromkeys(k for r in rounds for k in r))
    width = max(len(k) for k in keys)
    print(f"galera recovery, {args.rounds} round(s), seconds (min / median / max):")
    for k in keys:
        vals = sorted(r[k] for r in rounds if k in r)
        print(f"  {k.ljust(width)}  {vals[0]:6.2f} / {vals[len(vals) // 2]:6.2f} / {vals[-1]:6.2f}")


if __name__ == "__main__":
    main()
