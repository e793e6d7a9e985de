"""``mailha-lab drill``: fail each node in turn, check from a client what the site still serves.

Every check first runs on the healthy lab (the baseline). A check that fails there is a drill
failure (``FAIL: baseline``), reported once and left out of the per-node rounds; only a check
known up front not to apply (VIPs with container balancers: no IPVS) is ``skipped``. Then,
per node: fail it (cut its cables at the bridge, or stop its container), poll each remaining
check until it passes or ``failover_timeout`` runs out (the time is the "recovered in" column),
bring the node back, wait for its minion, and check again.
"""
import concurrent.futures
import dataclasses
import json
import secrets
import sys
import time

from salt_mailha.core.errors import CommandFailed
from salt_mailha.core.lb import MAINTENANCE_DIR
from salt_mailha.core.model import load_site
from salt_mailha_lab import network
from salt_mailha_lab.report import seconds, table
from salt_mailha_lab.util import run

DRILL_DB_USER = "labdrill"
DRILL_MAILBOX = "labdrill"  # uid and local part of the drill's mailbox
# the host kernel has no IPVS; UML balancers bring their own
IPVS_REASON = "needs IPVS: balancers are containers here (mailha-lab up --balancers uml)"
VIP_STREAK = 3  # consecutive new connections a VIP check needs (see evaluate)
DR_CHECK = "DR: replies bypass the director (IPVS OutPkts 0)"
# ports whose ldirectord check is a bare connect but whose service speaks TLS first
TLS_GREETING = {993: "* OK", 995: "+OK", 465: "220"}


@dataclasses.dataclass
class Check:
    name: str
    tier: str
    request: dict  # probe request (may hold secrets: goes to the probe's stdin only)
    needs: tuple = ()  # node ids the check talks to; a downed one is left out
    skip: str = ""  # a reason known up front (e.g. no IPVS)


@dataclasses.dataclass(frozen=True)
class Mailbox:
    """The drill's own mailbox (an LDAP entry the drill creates; the password is the drill's)."""
    dn: str
    address: str
    password: str


def probe(request):
    proc = run(["ip", "netns", "exec", network.netns(network.CLIENT), sys.executable, "-m",
                "salt_mailha_lab.probe"], capture=True, check=False, timeout=60,
               input=json.dumps(request))
    try:
        return json.loads(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"ok": False, "detail": f"probe crashed: {proc.stderr.strip()[-200:]}"}


def mailbox_for(site, password):
    return Mailbox(f"uid={DRILL_MAILBOX},{site.ldap.suffix}", f"{DRILL_MAILBOX}@{site.domain}",
                   password)


def vip_request(svc, address, drill_db_password=None):
    """The client's probe of one ldirectord service on its VIP: the service's own protocol (an
    SQL write, an HTTP GET, a TLS greeting, SMTP EHLO), a bare connect only when unknown."""
    base = {"hosts": [address], "port": svc.port}
    if svc.check == "mysql" and drill_db_password:
        return {**base, "kind": "sql_write", "user": DRILL_DB_USER,
                "password": drill_db_password, "database": DRILL_DB_USER}
    if svc.check in ("http", "https"):
        return {**base, "kind": "http", "tls": svc.check == "https"}
    if svc.check in ("smtp", "submission"):
        return {**base, "kind": "smtp"}
    if svc.check == "imap":
        return {**base, "kind": "imap"}
    greeting = {"imaps": "* OK", "pops": "+OK", "pop3s": "+OK"}.get(svc.check) \
        or TLS_GREETING.get(svc.port)
    if greeting:
        return {**base, "kind": "tls_greeting", "expect": greeting}
    return {**base, "kind": "tcp"}


def build_checks(site, drill_db_password=None, ipvs=False, mailbox=None):
    """The checks this site's topology calls for (pure: from the model, whether the balancers
    have IPVS, and the drill's own database account and mailbox, which the formula does not
    create)."""
    checks = []
    pub = lambda n: n.address("public") or next(iter(n.addresses.values()))  # noqa: E731
    for vip in site.vips.values():
        for svc in site.services_on(vip.name):
            checks.append(Check(f"vip {vip.name} {svc.name}:{svc.port}", "lb",
                                vip_request(svc, vip.address, drill_db_password),
                                skip="" if ipvs else IPVS_REASON))
    balancers = tuple(n.id for n in site.nodes_with("lb"))
    if site.vips and balancers:
        checks.append(Check(DR_CHECK, "lb", {"kind": "dr"}, needs=balancers,
                            skip="" if ipvs else IPVS_REASON))
    mail = site.nodes_with("mail")
    if mail:
        checks.append(Check("smtp:25 on a mail node", "mail",
                            {"kind": "smtp", "hosts": [pub(n) for n in mail], "port": 25},
                            needs=tuple(n.id for n in mail)))
        inst = site.mail.instance(mail[0].id)
        checks.append(Check("mail: SMTP accepts, IMAPS reads", "mail", {
            "kind": "mailflow", "hosts": [pub(n) for n in mail], "smtp_port": inst.smtp_port,
            "imaps_port": inst.imaps_port, "user": mailbox.address if mailbox else "",
            "password": mailbox.password if mailbox else ""}, needs=tuple(n.id for n in mail),
            skip="" if mailbox else "no drill mailbox: no LDAP server took the drill's entry"))
    g = site.galera
    if g is not None:
        members = site.nodes_with("db")
        checks.append(Check("sql write on a db member", "db", {
            "kind": "sql_write", "hosts": [n.address(g.network) for n in members],
            "port": 3306, "user": DRILL_DB_USER, "password": drill_db_password or "",
            "database": DRILL_DB_USER}, needs=tuple(n.id for n in members),
            skip="" if drill_db_password else "db tier not working before the drill (no db "
            "member's mariadb accepted the drill's writer account)"))
    ld = site.ldap
    if ld is not None:
        servers = [s.node for s in ld.servers] or [n.id for n in site.nodes_with("mail")]
        checks.append(Check("ldap write on a server", "ldap", {
            "kind": "ldap_write", "hosts": [site.node(n).address(ld.network) for n in servers],
            "port": ld.port, "binddn": ld.rootdn, "password": ld.rootpw.reveal(),
            "suffix": ld.suffix}, needs=tuple(servers)))
    d = site.dns
    if d is not None and d.servers:
        s = d.servers[0]
        at = tuple(n.id for n in site.nodes if s.address in n.addresses.values())
        checks.append(Check("MX follows the mail nodes", "dns",
                            {"kind": "mx", "server": s.address, "port": s.port, "zone": d.zone},
                            needs=at))
    return checks


def expected_mx(site, down):
    """The MX hosts a healthy site publishes while ``down`` is failed (reactor's job)."""
    if site.dns is None:
        return []
    return sorted(site.node(n).fqdn or f"{n}.{site.domain}" for n in site.dns.mx if n != down)


def dr_verdict(stats):
    """``{balancer: parse_stats(...)}`` -> (ok, detail): replies went straight from the real
    servers to the client when the directors saw packets in and none out (pure)."""
    if not stats:
        return False, "no balancer's IPVS table could be read"
    parts, tin, tout = [], 0, 0
    for name, services in sorted(stats.items()):
        pin = sum(s["inpkts"] for s in services.values())
        pout = sum(s["outpkts"] for s in services.values())
        tin, tout = tin + pin, tout + pout
        parts.append(f"{name} in {pin} out {pout}")
    return tin > 0 and tout == 0, "IPVS " + "; ".join(parts)


def director_stats(lab, names):
    """``{balancer: parse_stats}`` of every balancer in ``names`` whose table can be read."""
    from salt_mailha.core.ipvs import parse_stats

    out = {}
    for name in names:
        proc = lab.node(name).exec(["ipvsadm", "-Ln", "--stats", "--exact"], check=False,
                                   timeout=20)
        if proc is not None and proc.returncode == 0:
            out[name] = parse_stats(proc.stdout)
    return out


def real_server_weights(lab, balancer):
    """``{(service key, real server address): weight}`` from ``balancer``'s kernel table
    (``ipvsadm -Ln`` in the guest), or None when it cannot be read."""
    from salt_mailha.core.ipvs import parse_list

    proc = lab.node(balancer).exec(["ipvsadm", "-Ln"], check=False, timeout=20)
    if proc is None or proc.returncode != 0:
        return None
    return {(vs.key, r.address): r.weight for vs in parse_list(proc.stdout)
            for r in vs.real_servers}


def drained(lab, balancers, address, maintenancedir=MAINTENANCE_DIR):
    """(ok, detail): ``address`` has weight 0 in every service of every balancer, and the reactor's
    drain is on record there (its file in ldirectord's maintenance directory), not only
    ldirectord's own verdict."""
    parts, ok = [], True
    for b in balancers:
        w = real_server_weights(lab, b)
        mine = sorted(v for (_k, a), v in (w or {}).items() if a == address)
        proc = lab.node(b).exec(["test", "-e", f"{maintenancedir}/{address}"], check=False,
                                timeout=20)
        filed = proc is not None and proc.returncode == 0
        ok = ok and bool(mine) and max(mine) == 0 and filed
        parts.append(f"{b}: {'unreadable' if w is None else mine}{'' if filed else ' no drain file'}")
    return ok, "weights " + "; ".join(parts)


def in_service(lab, balancers, address):
    """(ok, detail): ``address`` has weight > 0 in every service of every balancer."""
    parts, ok = [], True
    for b in balancers:
        w = real_server_weights(lab, b)
        mine = sorted(v for (_k, a), v in (w or {}).items() if a == address)
        ok = ok and bool(mine) and min(mine) > 0
        parts.append(f"{b}: {'unreadable' if w is None else mine}")
    return ok, "weights " + "; ".join(parts)


def evaluate(check, site, down, only=None, lab=None):
    """One probe of ``check`` with node ``down`` out of service -> (ok, detail); ok is None when
    the check cannot apply: every node it needs is the one that is down (the pillar has no
    second, a single point of failure the table reports). With ``only`` (a node the check talks
    to), that node alone must pass: it is back in service."""
    req = dict(check.request)
    if check.needs and all(n == down for n in check.needs):
        return None, f"{down} is the only {check.tier} node of this check in the pillar"
    if req["kind"] == "dr":
        return dr_verdict(director_stats(lab, [n for n in check.needs if n != down]))
    if check.needs and "hosts" in req:
        req["hosts"] = [h for h, n in zip(req["hosts"], check.needs, strict=True)
                        if n != down and (only is None or n == only or only not in check.needs)]
    res = probe(req)
    # A VIP answers for its clients only when new connections keep landing on live servers:
    # while a dead real server is still in the scheduler's rotation, one in two connections
    # fails, so a VIP check passes on VIP_STREAK successes in a row, not on one lucky probe.
    for n in range(1, VIP_STREAK if check.name.startswith("vip ") else 1):
        if not res["ok"]:
            break
        res = probe(req)
        if not res["ok"]:
            res["detail"] = f"failed after {n} in a row: {res['detail']}"
    if check.request["kind"] == "mx" and res["ok"]:
        got, want = json.loads(res["detail"]), expected_mx(site, down)
        return got == want, f"MX {got} (want {want})"
    return res["ok"], res["detail"]


class Drill:
    def __init__(self, lab, out=None, failover_timeout=30.0, interval=2.0):
        self.lab, self.out = lab, out
        self.failover_timeout, self.interval = failover_timeout, interval
        self.replug = False  # kill mode: the failed node's namespace was deleted

    def say(self, text):
        print(f"[{time.monotonic() - self.t0:7.1f}s] {text}", file=self.out, flush=True)

    def run(self, mode, only=None, recover_timeout=120.0):
        self.t0 = time.monotonic()
        pillar = self.lab._pillar_if_up()
        if pillar is None:
            raise CommandFailed("the lab is down; run 'mailha-lab up' first")
        site = load_site(pillar)
        nets = self.lab.lab_nets(pillar)
        master = self.lab.master(pillar)
        names = [n.id for n in site.nodes]
        unknown = sorted(set(only or ()) - set(names))
        if unknown:
            raise CommandFailed(f"--nodes {','.join(unknown)}: not a lab node ({', '.join(names)})")
        ipvs = self._balancers() == "uml"
        checks = build_checks(site, self._drill_db_account(site), ipvs, self._drill_mailbox(site))
        active, rows = [], []
        self.say(f"baseline: {len(checks)} checks on the healthy lab")
        runnable = [c for c in checks if not c.skip]
        rows += [["*", c.name, f"skipped: {c.skip}", "-", "-"] for c in checks if c.skip]
        # all at once, each retried for failover_timeout (ldirectord may still be raising
        # weights; the DR check needs the VIP checks' traffic)
        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, len(runnable))) as pool:
            futures = [(c, pool.submit(self._until_pass, c, site, None, time.monotonic()))
                       for c in runnable]
            verdicts = [(c, f.result()) for c, f in futures]
        for c, (ok, _took, detail) in verdicts:
            if ok:
                active.append(c)
            else:
                rows.append(["*", c.name, f"FAIL: baseline ({c.tier} tier not working on the "
                             f"healthy lab: {detail[:90]})", "-", "-"])
        baseline_failed = sum(1 for r in rows if r[2].startswith("FAIL"))
        self.say(f"baseline: {len(active)} active, {baseline_failed} failed, "
                 f"{len(checks) - len(active) - baseline_failed} skipped")
        singles = sorted({n for c in active for n in c.needs if set(c.needs) == {n}})
        if singles:
            self.say(f"single points of failure in this pillar: {', '.join(singles)} (while one is "
                     "down, the checks that need it report n/a)")
        failures = baseline_failed
        for name in only or names:
            try:
                failures += self._one_node(name, mode, site, nets, master, active, rows,
                                           recover_timeout, pillar)
            except Exception as exc:  # noqa: BLE001 - one node's drill error must not strand it
                rows.append([name, "drill error", f"FAIL ({type(exc).__name__}: {exc})"[:200],
                             "-", "-"])
                failures += 1
                network.set_link(name, True, nets)  # never leave a node cut off
        print(table(["node", "check", "while down", "recovered in", "after return (node itself)"], rows),
              file=self.out, flush=True)
        self.say(f"drill ({mode}): {failures} failure(s); total {time.monotonic() - self.t0:.1f}s")
        return 0 if failures == 0 else 2

    @staticmethod
    def _pingable(node):
        """Does any of ``node``'s addresses answer ICMP from the client namespace?"""
        for addr in node.addresses.values():
            proc = run(["ip", "netns", "exec", network.netns(network.CLIENT), "ping", "-c", "1",
                        "-W", "1", addr], check=False, capture=True, timeout=10)
            if proc.returncode == 0:
                return True
        return False

    def _drill_db_account(self, site):
        """A writer account for the SQL check, created through the first db member that runs
        mariadb (root over the unix socket; the SQL goes in on stdin, never in argv). Galera
        replicates it. Returns its password, or None when no member took it."""
        pw_file = self.lab.run_dir / "drill-db-password"
        if not pw_file.exists():
            pw_file.touch(mode=0o600)
            pw_file.write_text(secrets.token_hex(12))
        password = pw_file.read_text().strip()
        sql = (f"CREATE DATABASE IF NOT EXISTS {DRILL_DB_USER};\n"
               f"CREATE USER IF NOT EXISTS '{DRILL_DB_USER}'@'%' IDENTIFIED BY '{password}';\n"
               f"GRANT ALL ON {DRILL_DB_USER}.* TO '{DRILL_DB_USER}'@'%';\n")
        for n in site.nodes_with("db"):
            node = self.lab.node(n.id)
            leader = node.leader()
            if not leader:
                continue
            proc = run(["nsenter", "-t", leader, "-a", "--", "mysql", "--batch"], capture=True,
                       check=False, timeout=30, input=sql)
            if proc.returncode == 0:
                return password
            self.say(f"drill db account not created on {n.id}: {proc.stderr.strip()[:120]}")
        return None

    def _balancers(self):
        """How ``up`` ran the balancers: ``uml`` (real IPVS) or ``container``."""
        return self.lab.balancers()

    def _drill_mailbox(self, site):
        """The drill's mailbox, created (or re-passworded) on the first LDAP server that takes it
        from the client namespace; mirror mode carries it to the others. None when none did."""
        if site.ldap is None or site.mail is None:
            return None
        pw_file = self.lab.run_dir / "drill-mail-password"
        if not pw_file.exists():
            pw_file.touch(mode=0o600)
            pw_file.write_text(secrets.token_hex(12))
        box = mailbox_for(site, pw_file.read_text().strip())
        ld = site.ldap
        servers = [s.node for s in ld.servers] or [n.id for n in site.nodes_with("mail")]
        res = probe({"kind": "ldap_mailbox", "hosts": [site.node(n).address(ld.network) for n in servers],
                     "port": ld.port, "binddn": ld.rootdn, "password": ld.rootpw.reveal(), "dn": box.dn,
                     "attrs": {"cn": DRILL_MAILBOX, "sn": DRILL_MAILBOX, "uid": DRILL_MAILBOX,
                               "mail": box.address, "userPassword": box.password}})
        if not res["ok"]:
            self.say(f"drill mailbox not created: {res['detail'][:160]}")
            return None
        return box

    def _one_node(self, name, mode, site, nets, master, active, rows, recover_timeout, pillar):
        """Fail ``name``, check, bring it back, check again; appends rows, returns failures."""
        failures = 0
        self.say(f"{name}: failing it ({mode})")
        node = self.lab.node(name)
        t_fail = time.monotonic()
        self._fail(node, name, mode, nets)
        gone = not self._pingable(site.node(name))
        rows.append([name, "node unreachable", "pass" if gone else "FAIL", "-", "-"])
        failures += not gone
        # every check polled at once: "recovered in" is each check's own time since the failure
        vip_roles = {v.real_servers for v in site.vips.values()}
        lbs = [n.id for n in site.nodes_with("lb")]
        real = any(c.name == DR_CHECK for c in active) and vip_roles & set(site.node(name).roles)
        address = None
        if real:
            vip = next(v for v in site.vips.values() if site.node(name).has(v.real_servers))
            address = site.node(name).address(vip.network)
        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, len(active)) + 1) as pool:
            futures = {c.name: pool.submit(self._until_pass, c, site, name, t_fail) for c in active}
            if real:  # the reactor's drain reached ldirectord and the kernel on every balancer
                drain = pool.submit(self._until, lambda: drained(self.lab, lbs, address), t_fail)
            results = {k: f.result() for k, f in futures.items()}
            if real:
                ok, took, detail = drain.result()
                rows.append([name, "drained on every balancer (weight 0, reactor's file)",
                             "pass" if ok else f"FAIL ({detail[:80]})",
                             seconds(took) if ok else "-", "-"])
                failures += not ok
        self.say(f"{name}: bringing it back")
        t_back = time.monotonic()
        problem = self._restore(node, name, mode, nets, pillar, recover_timeout)
        back = not problem and name in master.wait_minions([name], recover_timeout)
        rows.append([name, "node returns (minion answers)",
                     "pass" if back else f"FAIL ({problem or 'no test.ping answer'})",
                     seconds(time.monotonic() - t_back) if back else "-", "-"])
        failures += not back
        if back and real:
            # a real server is back in service only once every balancer gives it weight again
            # (ldirectord's own check, or the reactor's restore)
            deadline = time.monotonic() + recover_timeout
            ok, detail = in_service(self.lab, lbs, address)
            while not ok and time.monotonic() < deadline:
                time.sleep(self.interval)
                ok, detail = in_service(self.lab, lbs, address)
            rows.append([name, "back in IPVS on every balancer (weight > 0)", "-",
                         seconds(time.monotonic() - t_back) if ok else "-",
                         "pass" if ok else f"FAIL ({detail[:80]})"])
            failures += not ok
        # then every check again, all at once (after the node is back in IPVS, so VIP checks
        # can land on it)
        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, len(active))) as pool:
            after = {c.name: pool.submit(self._until_pass, c, site, None, time.monotonic(), name)
                     for c in active}
            after = {k: f.result() for k, f in after.items()}
        for c in active:
            ok_down, took, detail = results[c.name]
            ok_after, _t, detail_after = after[c.name]
            down_cell = ("pass" if ok_down else f"n/a ({detail[:80]})" if ok_down is None
                         else f"FAIL ({detail[:80]})")
            rows.append([name, c.name, down_cell, seconds(took) if ok_down else "-",
                         "pass" if ok_after else f"FAIL ({detail_after[:80]})"])
            failures += (ok_down is False) + (not ok_after)
        return failures

    def _until(self, probe_fn, since):
        """Poll ``probe_fn() -> (ok, detail)`` for failover_timeout: (ok, seconds since, detail)."""
        deadline = time.monotonic() + self.failover_timeout
        while True:
            ok, detail = probe_fn()
            if ok or time.monotonic() >= deadline:
                return ok, time.monotonic() - since, detail
            time.sleep(self.interval)

    def _until_pass(self, check, site, down, since, only=None):
        deadline = time.monotonic() + self.failover_timeout
        while True:
            ok, detail = evaluate(check, site, down, only, lab=self.lab)
            if ok is not False or time.monotonic() >= deadline:
                return ok, time.monotonic() - since, detail
            time.sleep(self.interval)

    def _fail(self, node, name, mode, nets):
        if mode == "kill":
            log = self.lab.run_dir / "logs" / "drill.log"
            node.crash(log=log)
            # a power cut also resets the kernel's network state (the VIP on lo, net.* sysctls);
            # a container's namespace outlives it, so it goes too and is plugged in fresh
            self.replug = network.netns(name) in network.existing_netns()
            network.delete_netns(network.netns(name), log)
        # a dead host takes its addresses with it; its namespace would still answer otherwise
        network.set_link(name, False, nets)

    def _restore(self, node, name, mode, nets, pillar, timeout):
        """Bring the node back; returns what went wrong, or None."""
        network.set_link(name, True, nets)
        if mode == "link":
            return None
        log = self.lab.run_dir / "logs" / "drill.log"
        if self.replug:
            network.plug(name, pillar["mailha"]["nodes"][name]["addresses"], nets, log)
        node.prepare(self.lab.identity(pillar, nets[0][2], name), log)
        node.start(log, self.lab.binds(pillar, name))
        try:
            node.wait_booted(timeout)
        except (TimeoutError, RuntimeError) as exc:
            return str(exc)[:160]
        return None
