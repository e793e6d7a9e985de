#!/usr/bin/env python3
"""Remediation latency and burst cost with real Salt daemons, a real named and real TCP services.

Starts one salt-master (with the reactor of examples/master.d) and four salt-minions (lb1, lb2,
mail1, mail2) on loopback, the site of tests/integration/remediation/cluster.py (beacon interval
1 s), then prints:

* p50/p95/max of "IMAP listener of mail1 stopped -> mail1 drained on both balancers (ldirectord
  maintenance files) and its MX gone from named", over ``--trials`` trials (each followed by a
  restore, whose latency is printed too);
* for a burst of ``--burst`` forged beacon events about a healthy node: how many orchestrations
  the master started, how many remediation runs acted, and how long the master took to drain them.

The host kernel has no IPVS: as in the integration tests, the balancers run with the stand-in
ipvsadm of tests/integration/remediation/fakebin (drains are observed through the real
ldirectord maintenance files).

Usage: .venv/bin/python bench/remediation.py [--trials 20] [--burst 1000] [--down-after 2]
"""

import argparse
import os
import pathlib
import shutil
import statistics
import sys
import tempfile
import threading
import time

import yaml

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from salt_mailha.core.model import load_site  # noqa: E402
from tests.integration.remediation import cluster  # noqa: E402
from tests.support.daemon import Daemon, wait_until  # noqa: E402
from tests.support.named import NamedServer, free_port  # noqa: E402

BIN = pathlib.Path(sys.executable).parent


def pct(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, max(0, round(q / 100 * len(values) + 0.5) - 1))]


class Site:
    def __init__(self, base, args):
        self.base = pathlib.Path(base)
        self.daemons = []
        self.named = NamedServer(self.base / "named", zone="example.net",
                                 key_name="mailha-update").start()
        # the latency trials are many actions in a row: a rate limit of 4 per minute would
        # (rightly) hold them back, so the bench raises it; the tests check the limit
        self.pillar = cluster.site_pillar(self.named, down_after=args.down_after,
                                          up_after=args.up_after, max_actions=args.max_actions)
        cluster.write_pillar(self.base / "pillar", self.pillar)
        self.services = cluster.mail_services(self.pillar)
        for per in self.services.values():
            for listener in per.values():
                listener.start()
        self.roots = self.base / "roots"
        pub, ret = free_port(), free_port()
        mconf = self.base / "master"
        mconf.mkdir()
        master = cluster.master_overrides(self.base / "pillar")
        master.update({"root_dir": str(self.base / "m"), "publish_port": pub, "ret_port": ret,
                       "log_file": str(self.base / "master.log"), "log_level_logfile": "info",
                       "user": "root", "worker_threads": 4})
        (mconf / "master").write_text(yaml.safe_dump(master))
        self.master_conf = mconf / "master"
        self.daemons.append(Daemon("master", [BIN / "salt-master", "-c", mconf, "-l", "quiet"],
                                   self.base / "master.out").start())
        site = load_site(self.pillar)
        for mid in cluster.MINIONS:
            conf = self.base / mid
            conf.mkdir()
            over = cluster.minion_overrides(mid, self.roots)
            if mid.startswith("lb") and not args.fork_jobs:
                over["multiprocessing"] = False  # jobs in threads: no fork + loader per job
            over.update({"id": mid, "master": "127.0.0.1", "master_port": ret,
                         "publish_port": pub, "root_dir": str(self.base / f"r-{mid}"),
                         "log_file": str(self.base / f"{mid}.log"), "user": "root"})
            (conf / "minion").write_text(yaml.safe_dump(over))
            env = cluster.prepare_balancer(self.roots, mid, site) if mid.startswith("lb") else None
            self.daemons.append(Daemon(mid, [BIN / "salt-minion", "-c", conf, "-l", "quiet"],
                                       self.base / f"{mid}.out", env=env).start())
        import salt.client
        import salt.config

        self.opts = salt.config.master_config(str(self.master_conf))
        # LocalClient reads the master's root key when created: only once the master wrote it
        key = pathlib.Path(self.opts["cachedir"]) / ".root_key"
        wait_until(key.exists, 120, what="master root key")
        time.sleep(1)
        self.client = salt.client.LocalClient(str(self.master_conf))
        wait_until(lambda: len(self.client.cmd(list(cluster.MINIONS), "test.ping",
                                               tgt_type="list", timeout=5)) == 4,
                   180, interval=1, what="4 minions answering")
        ret = self.client.cmd("lb1", "mailha_dns.records", kwarg={"take_over": True}, timeout=30)
        assert ret.get("lb1", {}).get("result") is True, ret
        wait_until(lambda: self.drained("mail1") == set() and self.mx_of("mail1"), 60,
                   what="mail1 in service")

    def drained(self, node):
        addr = cluster.node_address(self.pillar, node)
        return {lb for lb in ("lb1", "lb2") if addr in cluster.maintenance_files(self.roots, lb)}

    def mx_of(self, node):
        return any(r.endswith(f" {node}.example.net.") for r in
                   self.named.query("example.net", "MX"))

    def stop(self):
        for d in reversed(self.daemons):
            d.stop()
        for per in self.services.values():
            for listener in per.values():
                listener.stop()
        if self.named is not None:
            self.named.stop()


class EventCounter:
    """Counts master events by tag prefix, from the master's event bus (in this process)."""

    def __init__(self, opts):
        import salt.utils.event

        self.bus = salt.utils.event.get_master_event(opts, opts["sock_dir"], listen=True)
        self.counts = {}
        self.stop = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stop:
            ev = self.bus.get_event(wait=0.2, full=True)
            if not ev:
                continue
            tag, data = ev["tag"], ev["data"]
            key = None
            if tag.startswith("salt/run/") and tag.endswith("/new") and \
                    data.get("fun") == "runner.state.orchestrate":
                key = "orchestrations"
            elif tag.startswith("mailha/remediation/"):
                key = "remediation:" + tag.rsplit("/", 1)[-1]
            if key:
                self.counts[key] = self.counts.get(key, 0) + 1


def latency(site, trials):
    down, up = [], []
    imap = site.services["mail1"]["imap"]
    for i in range(-1, trials):  # trial -1 warms up (first orchestration, first jobs): not counted
        t0 = time.monotonic()
        imap.stop()
        wait_until(lambda: site.drained("mail1") == {"lb1", "lb2"} and not site.mx_of("mail1"),
                   120, interval=0.02, what=f"trial {i}: drained and MX withdrawn")
        down.append(time.monotonic() - t0)
        t1 = time.monotonic()
        imap.start()
        wait_until(lambda: site.drained("mail1") == set() and site.mx_of("mail1"), 120,
                   interval=0.02, what=f"trial {i}: restored")
        up.append(time.monotonic() - t1)
        print(f"  trial {i + 1:2d}{' (warm-up)' if i < 0 else ''}: drained+withdrawn "
              f"{down[-1]:.2f} s, restored {up[-1]:.2f} s", flush=True)
        if i < 0:
            down.pop()
            up.pop()
        time.sleep(1)
    return down, up


def burst(site, count):
    import salt.utils.event

    counter = EventCounter(site.opts)
    time.sleep(0.5)
    bus = salt.utils.event.get_master_event(site.opts, site.opts["sock_dir"], listen=False)
    t0 = time.monotonic()
    for i in range(count):
        bus.fire_event({"id": "lb1", "node": "mail2", "status": "down", "previous": "up",
                        "services": {"imap": {"status": "down", "detail": f"burst {i}"}}},
                       "salt/beacon/lb1/mailha_health/mailha/health/mail2/down")
    fired = time.monotonic() - t0
    log = pathlib.Path(site.opts["log_file"])

    def from_log():
        text = log.read_text(errors="replace") if log.exists() else ""
        return (text.count("Running state [mailha.remediate]"),
                text.count("mailha remediation of mail2"))

    base = from_log()
    last, stable_since = None, time.monotonic()
    deadline = time.monotonic() + 1800
    while time.monotonic() < deadline:  # until the master log is quiet for 30 s
        now = from_log()
        if now != last:
            last, stable_since = now, time.monotonic()
        elif time.monotonic() - stable_since > 30:
            break
        time.sleep(1)
    counter.stop = True
    counts = dict(counter.counts)
    counts["orchestrations"] = last[0] - base[0]
    counts["decisions"] = last[1] - base[1]
    return fired, stable_since - t0, counts, site.drained("mail2")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--burst", type=int, default=1000)
    ap.add_argument("--down-after", type=int, default=2)
    ap.add_argument("--up-after", type=int, default=2)
    ap.add_argument("--max-actions", type=int, default=1000)
    ap.add_argument("--fork-jobs", action="store_true",
                    help="balancers fork a process per job (Salt's default) instead of threads")
    ap.add_argument("--keep", action="store_true", help="keep the scratch directory (logs)")
    args = ap.parse_args()
    base = tempfile.mkdtemp(prefix="bench-rem-")
    t0 = time.monotonic()
    site = Site.__new__(Site)
    site.daemons, site.services, site.named = [], {}, None
    try:
        site.__init__(base, args)
    except BaseException:
        site.stop()  # never leave daemons behind when the start-up fails
        raise
    print(f"site up in {time.monotonic() - t0:.1f} s (1 master, 4 minions, named); beacon "
          f"interval 1 s, down_after {args.down_after}, up_after {args.up_after}, max_actions "
          f"{args.max_actions}, balancer jobs in "
          f"{'processes' if args.fork_jobs else 'threads (multiprocessing: False)'}", flush=True)
    try:
        if args.trials:
            down, up = latency(site, args.trials)
            print(f"service stopped -> drained on lb1+lb2 and MX withdrawn, {len(down)} trials: "
                  f"p50 {statistics.median(down):.2f} s, p95 {pct(down, 95):.2f} s, "
                  f"max {max(down):.2f} s")
            print(f"service started -> restored on lb1+lb2 and MX back: p50 "
                  f"{statistics.median(up):.2f} s, p95 {pct(up, 95):.2f} s, max {max(up):.2f} s")
        if args.burst:
            fired, took, counts, drained = burst(site, args.burst)
            outcomes = {k.split(":")[1]: v for k, v in sorted(counts.items())
                        if k.startswith("remediation:")}
            print(f"burst of {args.burst} forged 'mail2 down' events from lb1 (fired in "
                  f"{fired:.2f} s): {counts['orchestrations']} orchestrations ran (master log), "
                  f"{counts['decisions']} remediation decisions, outcomes seen on the bus "
                  f"{outcomes}; master busy {took:.1f} s; mail2 drained on "
                  f"{sorted(drained) or 'no balancer'}")
    finally:
        site.stop()
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
        else:
            print(f"logs kept in {base}")


if __name__ == "__main__":
    os.umask(0o022)
    main()
