#!/usr/bin/env python3
"""Remediation latency and burst cost with real Salt daemons, a real named and real TCP services.

Starts one salt-master (with the reactor of examples/master.d) and four salt-minions (lb1, lb2,
mail1, mail2) on loopback, the site of tests/integration/remediation/cluster.py (beacon interval
1 s), then prints:

* p50/p95/max of "IMAP listener of mail1 stopped -> mail1 drained on both balancers (ldirectord
  maintenance files) and its MX gone from named", over ``--trials`` trials (each followed by a
  restore, whose latency is printed too);
  and where the time went (stop -> beacon event on the master bus -> runner start -> re-check ->
  actions), from the events' stamps and the runner's ``phases``;
* for a burst of ``--burst`` forged beacon events about a healthy node: how many runner calls
  (and orchestrations) the reactor started, how many re-checks they made, how many reports were
  folded, the master's CPU seconds (every process of the master's session, from /proc) and how
  long it stayed busy.

``--old-path`` runs the reactor of the previous release (``runner.state.orchestrate
mailha.orch.remediate`` per event) for a side-by-side; its burst costs about 1 s of master CPU
per event, so keep ``--burst`` small with it (100).

The host kernel has no IPVS: as in the integration tests, the balancers run with the stand-in
ipvsadm of tests/integration/remediation/fakebin (drains are observed through the real
ldirectord maintenance files).

Usage: .venv/bin/python bench/remediation.py [--trials 20] [--burst 1000] [--down-after 2]
       [--old-path]
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

# The reactor before the runner was called directly: one orchestration per event.
OLD_REACTOR = """mailha_health_changed:
  runner.state.orchestrate:
    - args:
      - mods: mailha.orch.remediate
      - pillar:
          mailha_event:
            node: {{ data.get('node') | json }}
            status: {{ data.get('status') | json }}
            reporter: {{ data.get('id') | json }}
"""
CLK = os.sysconf("SC_CLK_TCK")


def session_cpu(sid):
    """CPU seconds (user + system, with reaped children) of every process in session ``sid``,
    by process title (Salt names its processes: ``Reactor``, ``MWorker-0`` ...)."""
    out = {}
    for stat in pathlib.Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            title = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode(
                errors="replace").strip()
        except OSError:
            continue
        if int(fields[3]) == sid:  # fields after the command: state ppid pgrp session ...
            name = title.split(" -l quiet ", 1)[-1][:40] if title else "?"
            out[name] = out.get(name, 0) + sum(int(f) for f in fields[11:15]) / CLK
    return out


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
        if args.old_path:
            old = self.base / "old-health.sls"
            old.write_text(OLD_REACTOR)
            master["reactor"] = [{k: [str(old)] if k.endswith("/*") and "presence" not in k
                                  else v for k, v in r.items()} for r in master["reactor"]]
        master.update({"root_dir": str(self.base / "m"), "publish_port": pub, "ret_port": ret,
                       "log_file": str(self.base / "master.log"), "log_level_logfile": "info",
                       "user": "root", "worker_threads": 4})
        (mconf / "master").write_text(yaml.safe_dump(master))
        self.master_conf = mconf / "master"
        self.master = Daemon("master", [BIN / "salt-master", "-c", mconf, "-l", "quiet"],
                             self.base / "master.out").start()
        self.daemons.append(self.master)
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
    """Collects the master's remediation-related events (from its bus, in this process)."""

    def __init__(self, opts):
        import salt.utils.event

        self.bus = salt.utils.event.get_master_event(opts, opts["sock_dir"], listen=True)
        self.events = []  # (receive time, tag, data)
        self.lock = threading.Lock()
        self.stop = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stop:
            ev = self.bus.get_event(wait=0.2, full=True)
            if not ev:
                continue
            tag, data = ev["tag"], ev["data"]
            if tag.startswith(("salt/run/", "mailha/remediation/", "salt/beacon/")):
                with self.lock:
                    self.events.append((time.time(), tag, data))

    def since(self, t, prefix):
        with self.lock:
            return [(at, tag, data) for at, tag, data in self.events
                    if at >= t and tag.startswith(prefix)]

    def runner_calls(self, t, what):
        """``(new, ret)`` events of runner jobs ``runner.<what>`` since ``t``."""
        new = [d for _, tag, d in self.since(t, "salt/run/")
               if tag.endswith("/new") and d.get("fun") == f"runner.{what}"]
        ret = [d for _, tag, d in self.since(t, "salt/run/")
               if tag.endswith("/ret") and d.get("fun") == f"runner.{what}"]
        return new, ret


def _stamp(data):
    import datetime

    return datetime.datetime.fromisoformat(data["_stamp"]).replace(
        tzinfo=datetime.timezone.utc).timestamp()


def latency(site, trials, counter):
    down, up, parts = [], [], []
    imap = site.services["mail1"]["imap"]
    for i in range(-1, trials):  # trial -1 warms up (first reaction, first jobs): not counted
        t0 = time.time()
        imap.stop()
        wait_until(lambda: site.drained("mail1") == {"lb1", "lb2"} and not site.mx_of("mail1"),
                   120, interval=0.02, what=f"trial {i}: drained and MX withdrawn")
        down.append(time.time() - t0)
        # where it went: the first beacon report of mail1 down, the reaction that drained it
        beacons = [_stamp(d) for _, tag, d in counter.since(t0, "salt/beacon/")
                   if tag.endswith("/mail1/down")]
        drained = wait_until(lambda t=t0: [d for _, _, d in counter.since(
            t, "mailha/remediation/mail1/drained")], 10, interval=0.05, what="drained event")
        # a drain by a reaction to an older report (a slow reaction re-checking after this
        # stop) has no split: it began before this trial's first report
        part = None
        if beacons and drained and _stamp(drained[0]) - drained[0]["seconds"] >= min(beacons):
            d = drained[0]
            ph = d.get("phases", {})
            part = {"detect": min(beacons) - t0, "react": _stamp(d) - d["seconds"] - min(beacons),
                    "site": ph.get("site", 0), "wait": ph.get("wait", 0),
                    "recheck": ph.get("recheck", 0), "apply": ph.get("apply", 0)}
        t1 = time.time()
        imap.start()
        wait_until(lambda: site.drained("mail1") == set() and site.mx_of("mail1"), 120,
                   interval=0.02, what=f"trial {i}: restored")
        up.append(time.time() - t1)
        print(f"  trial {i + 1:2d}{' (warm-up)' if i < 0 else ''}: drained+withdrawn "
              f"{down[-1]:.2f} s, restored {up[-1]:.2f} s"
              + (" [" + ", ".join(f"{k} {v:.2f}" for k, v in part.items()) + "]" if part
                 else ""), flush=True)
        if i < 0:
            down.pop()
            up.pop()
        elif part:
            parts.append(part)
        time.sleep(1)
    return down, up, parts


def burst(site, count, old_path, counter):
    import salt.utils.event

    fun = "state.orchestrate" if old_path else "mailha.remediate"
    time.sleep(0.5)
    bus = salt.utils.event.get_master_event(site.opts, site.opts["sock_dir"], listen=False)
    cpu0 = session_cpu(site.master.pid)
    t0 = time.time()
    for i in range(count):
        bus.fire_event({"id": "lb1", "node": "mail2", "status": "down", "previous": "up",
                        "services": {"imap": {"status": "down", "detail": f"burst {i}"}}},
                       "salt/beacon/lb1/mailha_health/mailha/health/mail2/down")
    fired = time.time() - t0
    # busy until every reaction answered (or nothing new for 30 s: a reaction lost)
    last, stable_since = None, time.monotonic()
    deadline = time.monotonic() + 3600
    while time.monotonic() < deadline:
        _, rets = counter.runner_calls(t0, fun)
        if len(rets) >= count:
            break
        if len(rets) != last:
            last, stable_since = len(rets), time.monotonic()
        elif time.monotonic() - stable_since > 30:
            break
        time.sleep(0.2)
    busy = time.time() - t0
    cpu1 = session_cpu(site.master.pid)
    by_proc = {k: cpu1[k] - cpu0.get(k, 0) for k in cpu1}
    cpu = sum(by_proc.values())
    time.sleep(1)
    new, rets = counter.runner_calls(t0, fun)
    # what reached the master bus (an event lost between this process and the bus is not the
    # reactor's loss)
    on_bus = len([1 for _, tag, _ in counter.since(t0, "salt/beacon/lb1/")
                  if tag.endswith("/mail2/down")])
    decisions = [d for _, _, d in counter.since(t0, "mailha/remediation/mail2/")]
    outcomes = {}
    for d in decisions:
        outcomes[d.get("outcome")] = outcomes.get(d.get("outcome"), 0) + 1
    direct = [d.get("return") for d in counter.runner_calls(t0, "mailha.remediate")[1]]
    folded = sum(1 for r in direct if isinstance(r, dict) and r.get("outcome") == "coalesced")
    top = sorted(by_proc.items(), key=lambda kv: -kv[1])[:3]
    return {"fired": fired, "on_bus": on_bus, "busy": busy, "cpu": cpu, "top": top, "calls": len(new), "answered": len(rets),
            "rechecks": len(decisions), "outcomes": outcomes, "folded": folded,
            "drained": site.drained("mail2")}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--burst", type=int, default=1000)
    ap.add_argument("--down-after", type=int, default=2)
    ap.add_argument("--up-after", type=int, default=2)
    ap.add_argument("--max-actions", type=int, default=1000)
    ap.add_argument("--old-path", action="store_true",
                    help="the previous reactor: an orchestration per event (keep --burst ~100)")
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
    print(f"reactor path: {'runner.state.orchestrate per event (old)' if args.old_path else 'runner.mailha.remediate directly, per-node gate'}", flush=True)
    counter = EventCounter(site.opts)
    try:
        if args.trials:
            down, up, parts = latency(site, args.trials, counter)
            print(f"service stopped -> drained on lb1+lb2 and MX withdrawn, {len(down)} trials: "
                  f"p50 {statistics.median(down):.2f} s, p95 {pct(down, 95):.2f} s, "
                  f"max {max(down):.2f} s")
            print(f"service started -> restored on lb1+lb2 and MX back: p50 "
                  f"{statistics.median(up):.2f} s, p95 {pct(up, 95):.2f} s, max {max(up):.2f} s")
            if parts:
                print(f"  where the drain time went (p50 of {len(parts)}): " + ", ".join(
                    f"{k} {statistics.median(p[k] for p in parts):.2f} s" for k in parts[0])
                    + " (detect: stop -> first beacon report on the master bus; react: report ->"
                      " runner start; site: site model (pillar compiled when the runner's cache expired); wait: gate + state lock; recheck: balancers' probes; "
                      "apply: drains + MX)")
        if args.burst:
            b = burst(site, args.burst, args.old_path, counter)
            print(f"burst of {args.burst} forged 'mail2 down' events from lb1 (fired in "
                  f"{b['fired']:.2f} s, {b['on_bus']} seen on the master bus): {b['calls']} "
                  f"{'orchestrations' if args.old_path else 'runner calls'} started, "
                  f"{b['answered']} answered, {b['rechecks']} re-checks (decision events "
                  f"{b['outcomes']}), {b['folded']} reports folded; master CPU "
                  f"{b['cpu']:.1f} s ({1000 * b['cpu'] / args.burst:.1f} ms per event), busy "
                  f"{b['busy']:.1f} s; mail2 drained on {sorted(b['drained']) or 'no balancer'}")
            print("  master CPU by process: " + ", ".join(f"{n} {c:.1f} s" for n, c in b["top"]))
    finally:
        site.stop()
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
        else:
            print(f"logs kept in {base}")


if __name__ == "__main__":
    os.umask(0o022)
    main()
