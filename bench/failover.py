"""Failover as a client sees it, on the running lab (``mailha-lab up``, UML balancers).

A steady stream of new client connections goes from the client namespace through the VIPs:
SMTP EHLO on the mail VIP's submission port and IMAPS LOGIN (the drill's mailbox) on the mail
VIP, and, for the db trials, a MySQL connect + SELECT on the db VIP. Each trial cuts one node
and measures, from the cut:

- the client-visible outage, over the stream the cut node serves (0 when no connection failed):
  "window", from the start of the first failed connection to the start of the last one: how long
  a new connection was bound to fail (the goal's figure; a client's own timeout does not stretch
  it), and "span", to the end of the last failed one (window + up to one client timeout);
- cut -> drained on every balancer: the node's real server at weight 0 (or gone) in every
  service of every running balancer's kernel table (``ipvsadm -Ln`` in the UML guests);
- cut -> MX withdrawn: the node's MX gone from the zone (mail nodes only).

Then the node is brought back and the site left to settle before the next trial.

Scenarios: a mail node by power (SIGKILL) and by link (cables cut at the bridge), a balancer
by power (the VRRP master: keepalived's takeover as clients see it) and a db node by power.
Each runs twice: with salt-mailha's reaction (beacons, reactor, runner) and with the seed's
own settings (ldirectord alone, with the guide's ldirectord.cf timings: checkinterval 5,
failurecount 3, fork, ldirectord's default checktimeout 5, applied to the balancers by
state.apply with a pillar override; the master restarted without reactor and schedule). Prints
p50/p95/max per scenario and mode and the seed/ours ratio of the p95s. Asserts nothing; the 2 cores are shared, so figures are noisy.

    sudo .venv/bin/python bench/failover.py [--trials 3] [--rate 4] [--scenarios mail-kill,...]
                                            [--modes ours,seed]
"""
import argparse
import concurrent.futures
import imaplib
import json
import smtplib
import ssl
import subprocess
import sys
import threading
import time

CLIENT_NS = "mhlab-client"
SCENARIOS = ("mail-kill", "mail-link", "lb-kill", "db-kill")
TIMEOUT = 2.0  # seconds a client gives one connection (connect + greeting + command)
SETTLE = 6.0  # seconds of clean stream required before a trial starts
# the guide's ldirectord.cf (checktimeout unset there: ldirectord's default, 5 s)
SEED_LDIRECTORD = {"checkinterval": 5, "checktimeout": 5, "failurecount": 3, "fork": True}


def client_child(config):
    """Start this script's stream in the lab's client namespace (nodes are cut and booted from
    the root namespace: systemd-nspawn needs the host's /sys). ``config`` goes on stdin (it
    holds the drill's passwords); the child prints one JSON line per connection and MX sample."""
    proc = subprocess.Popen(["ip", "netns", "exec", CLIENT_NS, sys.executable, __file__,
                             "--stream-child"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True, bufsize=1)
    proc.stdin.write(json.dumps(config) + "\n")
    proc.stdin.close()
    return proc


# ---------------------------------------------------------------------- client stream
def _tls_ctx():
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE  # the lab's snakeoil certificate
    return ctx


def smtp_ehlo(vip, port, **_):
    with smtplib.SMTP(vip, port, timeout=TIMEOUT) as s:
        code, _msg = s.ehlo("bench.lab")
        if code != 250:
            raise OSError(f"EHLO -> {code}")


def imaps_login(vip, port, user, password, **_):
    conn = imaplib.IMAP4_SSL(vip, port, ssl_context=_tls_ctx(), timeout=TIMEOUT)
    try:
        conn.login(user, password)
    finally:
        try:
            conn.logout()
        except (OSError, imaplib.IMAP4.error):
            pass


def mysql_select(vip, port, user, password, database, **_):
    import pymysql

    conn = pymysql.connect(host=vip, port=port, user=user, password=password, database=database,
                           connect_timeout=TIMEOUT, read_timeout=TIMEOUT, write_timeout=TIMEOUT)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1")
    finally:
        conn.close()


KINDS = {"smtp": smtp_ehlo, "imaps": imaps_login, "mysql": mysql_select}


def mx_names(server, port, zone):
    import dns.message
    import dns.query
    import dns.rdatatype

    r = dns.query.udp(dns.message.make_query(zone, dns.rdatatype.MX), server, port=port,
                      timeout=1.0)
    return sorted(str(rr.exchange).rstrip(".").split(".")[0] for rrset in r.answer for rr in rrset
                  if rrset.rdtype == dns.rdatatype.MX)


def stream_child():
    """In the client namespace: new connections at ``rate``/s per kind, each in its own worker,
    and the zone's MX every 0.2 s; one JSON line each on stdout (monotonic clock: the same in
    every namespace)."""
    cfg = json.loads(sys.stdin.readline())
    lock = threading.Lock()
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=64)

    def emit(obj):
        with lock:
            print(json.dumps(obj), flush=True)

    def one(name, kwargs):
        t0 = time.monotonic()
        try:
            KINDS[name](**kwargs)
            ok, err = True, ""
        except Exception as exc:  # noqa: BLE001 - a failed connection is a measurement
            ok, err = False, f"{type(exc).__name__}: {exc}"[:120]
        emit({"c": [t0, time.monotonic(), name, ok, err]})

    def mx():
        while True:
            t = time.monotonic()
            try:
                emit({"mx": [t, mx_names(**cfg["mx"])]})
            except Exception:  # noqa: BLE001,S110 - a missed sample is just missing
                pass
            time.sleep(max(0.0, 0.2 - (time.monotonic() - t)))

    if cfg.get("mx"):
        threading.Thread(target=mx, daemon=True).start()
    period, nxt = 1.0 / cfg["rate"], time.monotonic()
    while True:
        for name, kwargs in cfg["kinds"].items():
            pool.submit(one, name, kwargs)
        nxt += period
        time.sleep(max(0.0, nxt - time.monotonic()))


class Stream:
    """The parent's view of the child's stream: every attempt as ``(start, end, kind, ok,
    error)`` and every MX sample as ``(time, [hosts])``."""

    def __init__(self, config):
        self.proc = client_child(config)
        self.log, self.mx, self.lock = [], [], threading.Lock()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            with self.lock:
                if "c" in obj:
                    self.log.append(tuple(obj["c"]))
                elif "mx" in obj:
                    self.mx.append((obj["mx"][0], obj["mx"][1]))

    def close(self):
        self.proc.kill()

    def mx_without(self, host, since):
        """Time of the first MX sample after ``since`` without ``host``, or None."""
        with self.lock:
            return next((t for t, hosts in self.mx if t >= since and host not in hosts), None)

    def since(self, t, kinds=None):
        with self.lock:
            return [r for r in self.log if r[0] >= t and (kinds is None or r[2] in kinds)]

    def clean_since(self, t, kinds=None):
        rows = [r for r in self.since(t, kinds) if r[1] <= time.monotonic()]
        return bool(rows) and all(r[3] for r in rows)


def outage(rows):
    """(window, span, failed, total): from the first failed connection's start to the last failed
    one's start (window) and end (span)."""
    failed = [r for r in rows if not r[3]]
    if not failed:
        return 0.0, 0.0, 0, len(rows)
    first = min(r[0] for r in failed)
    return (max(r[0] for r in failed) - first, max(r[1] for r in failed) - first, len(failed),
            len(rows))


# ---------------------------------------------------------------------- lab probes
def drained_everywhere(lab, balancers, address):
    """The real server is at weight 0 (or gone) in every service of every balancer."""
    from salt_mailha_lab.drill import real_server_weights

    for b in balancers:
        w = real_server_weights(lab, b)
        if w is None or any(v > 0 for (_k, a), v in w.items() if a == address):
            return False
    return True


def restored_everywhere(lab, balancers, address):
    from salt_mailha_lab.drill import in_service

    return in_service(lab, balancers, address)[0]


def vrrp_master(lab, balancers, vip):
    for b in balancers:
        proc = lab.node(b).exec(["ip", "-o", "-4", "addr", "show"], check=False, timeout=10)
        if proc is not None and f" {vip}/" in proc.stdout:
            return b
    return None


def poll_until(fn, timeout, interval=0.25):
    """Seconds until ``fn()`` is true, or None after ``timeout``."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        try:
            if fn():
                return time.monotonic() - t0
        except Exception:  # noqa: BLE001,S110 - a probe that cannot answer yet is "not yet"
            pass
        time.sleep(interval)
    return None


# ---------------------------------------------------------------------- modes
def set_mode(lab, pillar, mode, say):
    """``ours``: the lab's master with reactor and schedule, the pillar's ldirectord timings;
    ``seed``: no reactor nor schedule (ldirectord alone decides) and the guide's timings."""
    master = lab.master(pillar)
    t0 = time.monotonic()
    extra = [f"pillar={json.dumps({'mailha': {'ldirectord': SEED_LDIRECTORD}})}"] if mode == "seed" else []
    ret = master.salt("lb*", "state.apply", "mailha", *extra, timeout=300)
    failed = {m: [s.get("comment") for s in r.values() if not s.get("result")] if isinstance(r, dict) else r
              for m, r in ret.items()}
    failed = {m: f for m, f in failed.items() if f}
    if len(ret) < 2 or failed:
        sys.exit(f"mode {mode}: state.apply on the balancers failed: {failed or ret}")
    say(f"mode {mode}: ldirectord timings {SEED_LDIRECTORD if mode == 'seed' else 'of the pillar'} "
        f"on the balancers in {time.monotonic() - t0:.1f}s")
    conf = master.etc / "master"
    import yaml

    data = yaml.safe_load(conf.read_text())
    want_reactor = mode == "ours"
    if bool(data.get("reactor")) == want_reactor:
        return
    t0 = time.monotonic()
    master.stop()
    master.configure(reactor=want_reactor)
    master.start(lab.run_dir / "logs" / "bench-failover.log")
    names = list(pillar["mailha"]["nodes"])
    missing = set(names) - master.wait_minions(names, 120)
    say(f"mode {mode}: master restarted {'with' if want_reactor else 'without'} reactor and "
        f"schedule in {time.monotonic() - t0:.1f}s" + (f" (silent: {sorted(missing)})"
                                                       if missing else ""))


# ---------------------------------------------------------------------- one trial
def trial(lab, drill, site, pillar, nets, stream, scenario, target, mode, say):
    balancers = [n.id for n in site.nodes_with("lb")]
    node = site.node(target)
    if scenario.startswith("db"):
        kinds, address = {"mysql"}, node.address("public")
    else:
        kinds, address = {"smtp", "imaps"}, node.address("public")
    how = "link" if scenario.endswith("link") else "kill"
    # wait for a clean stream first
    if poll_until(lambda: stream.clean_since(time.monotonic() - SETTLE, kinds), 90, 1.0) is None:
        say(f"  {scenario} {target}: stream not clean for {SETTLE}s before the cut; trial skipped")
        return None
    others = [b for b in balancers if b != target]
    t_cut = time.monotonic()
    drill._fail(lab.node(target), target, how, nets)
    res = {"drained": None, "mx": None}
    threads = []
    if not scenario.startswith("lb"):
        def drained():
            res["drained"] = poll_until(lambda: drained_everywhere(lab, others, address), 45, 0.2)
        threads.append(threading.Thread(target=drained))
    if scenario.startswith("mail") and site.dns is not None:
        def mx():
            seen = poll_until(lambda: stream.mx_without(target, t_cut) is not None, 45, 0.2)
            res["mx"] = None if seen is None else stream.mx_without(target, t_cut) - t_cut
        threads.append(threading.Thread(target=mx))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # the outage is over when the stream has been clean for SETTLE seconds (or 60 s passed)
    poll_until(lambda: time.monotonic() - t_cut > 3 and
               stream.clean_since(time.monotonic() - SETTLE, kinds), 60, 0.5)
    out, span, failed, total = outage(stream.since(t_cut - 0.5, kinds))
    errors = sorted({r[4].split(":")[0] for r in stream.since(t_cut - 0.5, kinds) if not r[3]})
    # bring it back and wait until it is in service again
    t_back = time.monotonic()
    problem = drill._restore(lab.node(target), target, how, nets, pillar, 180)
    back = None
    if not problem and not scenario.startswith("lb"):
        back = poll_until(lambda: restored_everywhere(lab, balancers, address), 120, 1.0)
    elif not problem:
        back = poll_until(lambda: target in lab.master(pillar).wait_minions([target], 5), 120)
    blip = outage(stream.since(t_back, kinds))
    say(f"  {mode:<4} {scenario:<9} {target:<6} outage {out:5.1f}s, span {span:.1f}s ({failed}/{total} failed"
        f"{': ' + ', '.join(errors) if errors else ''}); drained {_s(res['drained'])}; "
        f"MX {_s(res['mx'])}; back in service {_s(back)}"
        + (f" ({problem})" if problem else "")
        + (f"; {blip[2]} failed while it returned" if blip[2] else ""))
    return {"outage": out, "span": span, "drained": res["drained"], "mx": res["mx"]}


def _s(v):
    return "n/a" if v is None else f"{v:.1f}s"


def pct(values, q):
    values = sorted(values)
    if not values:
        return None
    k = (len(values) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--trials", type=int, default=3, help="cuts per scenario and mode")
    ap.add_argument("--rate", type=float, default=4.0, help="new connections per second per kind")
    ap.add_argument("--scenarios", default=",".join(SCENARIOS))
    ap.add_argument("--modes", default="ours,seed")
    ap.add_argument("--stream-child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.stream_child:
        return stream_child()

    from salt_mailha.core.model import load_site
    from salt_mailha_lab.drill import DRILL_DB_USER, Drill
    from salt_mailha_lab.lab import Lab

    t_start = time.monotonic()

    def say(text):
        print(f"[{time.monotonic() - t_start:7.1f}s] {text}", flush=True)

    lab = Lab()
    pillar = lab._pillar_if_up()
    if pillar is None or lab.balancers() != "uml":
        sys.exit("bench/failover.py needs the lab up with UML balancers: mailha-lab up")
    site = load_site(pillar)
    nets = lab.lab_nets(pillar)
    drill = Drill(lab)
    drill.t0 = t_start
    box = drill._drill_mailbox(site)
    db_pw = drill._drill_db_account(site)
    mail_vip, db_vip = site.vips["mail"].address, site.vips["db"].address
    ports = {s.name: s.port for s in site.services}
    kinds = {
        "smtp": {"vip": mail_vip, "port": ports.get("submission", 587)},
        "imaps": {"vip": mail_vip, "port": ports.get("imaps", 993), "user": box.address,
                  "password": box.password},
        "mysql": {"vip": db_vip, "port": ports.get("mysql", 3306), "user": DRILL_DB_USER,
                  "password": db_pw, "database": DRILL_DB_USER},
    }
    dns_server = site.dns.servers[0] if site.dns and site.dns.servers else None
    stream = Stream({"rate": args.rate, "kinds": kinds, "mx": dns_server and {
        "server": dns_server.address, "port": dns_server.port, "zone": site.dns.zone}})
    say(f"stream: {args.rate:g} new connections/s each of {', '.join(kinds)} through "
        f"{mail_vip} and {db_vip}; connection timeout {TIMEOUT:g}s")
    time.sleep(SETTLE)
    base = stream.since(t_start)
    for k in kinds:
        mine = [r for r in base if r[2] == k]
        bad = [r for r in mine if not r[3]]
        say(f"baseline {k}: {len(mine) - len(bad)}/{len(mine)} ok"
            + (f" (e.g. {bad[0][4]})" if bad else ""))
    lb_vip = mail_vip
    results = {}
    for mode in args.modes.split(","):
        set_mode(lab, pillar, mode, say)
        for scenario in args.scenarios.split(","):
            for i in range(args.trials):
                if scenario.startswith("mail"):
                    target = ("mail1", "mail2")[i % 2]
                elif scenario.startswith("db"):
                    target = ("db1", "db2")[i % 2]
                else:
                    target = vrrp_master(lab, [n.id for n in site.nodes_with("lb")], lb_vip)
                    if target is None:
                        say("  no balancer holds the mail VIP; lb trial skipped")
                        continue
                r = trial(lab, drill, site, pillar, nets, stream, scenario, target, mode, say)
                if r:
                    results.setdefault((scenario, mode), []).append(r)
    set_mode(lab, pillar, "ours", say)
    stream.close()
    print()
    print(f"{'scenario':<10} {'mode':<5} {'n':>2}  {'window p50/p95/max':>22}  {'span p50/p95/max':>22}  "
          f"{'cut->drained p50/p95/max':>26}  {'cut->MX p50/p95/max':>22}")
    for (scenario, mode), rs in sorted(results.items()):
        cells = []
        for key in ("outage", "span", "drained", "mx"):
            vals = [r[key] for r in rs if r[key] is not None]
            cells.append("/".join(f"{pct(vals, q):.1f}" for q in (0.5, 0.95)) + f"/{max(vals):.1f}"
                         if vals else "n/a")
        print(f"{scenario:<10} {mode:<5} {len(rs):>2}  {cells[0]:>22}  {cells[1]:>22}  {cells[2]:>26}  "
              f"{cells[3]:>22}")
    print()
    for scenario in args.scenarios.split(","):
        ours = [r["outage"] for r in results.get((scenario, "ours"), [])]
        seed = [r["outage"] for r in results.get((scenario, "seed"), [])]
        if ours and seed:
            o, s = pct(ours, 0.95), pct(seed, 0.95)
            ratio = f"{s / o:.1f}x" if o > 0 else "ours had no failed connection"
            print(f"{scenario}: client-visible outage (window) p95 seed {s:.1f}s / ours {o:.1f}s = {ratio}")
    print(json.dumps({f"{k[0]}/{k[1]}": v for k, v in results.items()}))


if __name__ == "__main__":
    main()
