"""Runs INSIDE the User-mode Linux guest (see test_ipvs_guest.py): one Python process drives the whole
scenario through Salt's loader (our mailha_dr state on the real servers, our mailha_ipvs module on
the director), entering each network namespace with setns(2). Writes results.json to the share.

argv: <share dir> <pillar yaml>
"""
import ctypes
import json
import os
import signal
import subprocess
import sys
import time
import traceback

import yaml

SHARE, PILLAR = sys.argv[1], sys.argv[2]
NET = "10.99.88"
VIP, R1, R2 = f"{NET}.21", f"{NET}.17", f"{NET}.18"
results = {"steps": []}
_libc = ctypes.CDLL(None, use_errno=True)


def log(msg):
    print(f"[{time.monotonic():8.2f}] {msg}", flush=True)


def enter(ns):
    fd = os.open(f"/run/netns/{ns}", os.O_RDONLY)
    try:
        if _libc.setns(fd, 0x40000000) != 0:  # CLONE_NEWNET
            raise OSError(ctypes.get_errno(), f"setns {ns}")
    finally:
        os.close(fd)


def sh(*argv, check=True):
    res = subprocess.run(argv, capture_output=True, text=True)
    if check and res.returncode:
        raise RuntimeError(f"{argv}: rc={res.returncode} {res.stderr}")
    return res.stdout


def who(n=8, port=80):
    """Ask the VIP ``n`` times from the client (new connection each): who answered."""
    out = []
    for _ in range(n):
        res = subprocess.run(["ip", "netns", "exec", "cl", "curl", "-s", "-m", "3",
                              f"http://{VIP}:{port}/"], capture_output=True, text=True)
        out.append(res.stdout.strip() or f"fail:{res.returncode}")
    return out


def step(name, **data):
    log(f"{name}: {data}")
    results["steps"].append({"name": name, **data})


def table(mods):
    return {vs["key"]: {r["address"]: r["weight"] for r in vs["real_servers"]}
            for vs in mods["mailha_ipvs.list"]()}


def reload_log(real, whole=False):
    """ldirectord's own account of its first reload, up to its first check of ``real``:80 (or,
    ``whole``, all it logged)."""
    with open(f"{SHARE}/ldirectord.out") as f:
        lines = [line.strip() for line in f if line.startswith("DEBUG2: ")]
    if whole:
        return lines
    start = next((i for i, line in enumerate(lines) if "Reloading" in line), len(lines))
    end = next((i for i in range(start, len(lines))
                if f"Checking negotiate: real server=negotiate:http:tcp:{real}:80:" in lines[i]), len(lines))
    return lines[start:end]


def wait_table(mods, want, timeout, stable=4.0, port=80):
    """Wait until the VIP:port weights equal ``want`` and stay so for ``stable`` seconds (several
    ldirectord check rounds: its first checks can be slow and flap)."""
    deadline = time.monotonic() + timeout
    since = None
    while time.monotonic() < deadline:
        if table(mods).get(f"tcp:{VIP}:{port}") == want:
            since = since or time.monotonic()
            if time.monotonic() - since >= stable:
                return True
        else:
            since = None
        time.sleep(0.5)
    return False


def main():
    import salt.config
    import salt.loader

    pillar = yaml.safe_load(open(PILLAR))
    base = salt.config.minion_config(None)
    base.update({"file_client": "local", "id": "lb1", "grains": {}, "pillar": pillar,
                 "test": False})
    utils = salt.loader.utils(base)
    mods = salt.loader.minion_mods(base, utils=utils, context={})
    log("loader ready")

    # real servers: our DR state, in each real server's namespace (a loader per call: the
    # loader keeps its own copy of opts, and test / mailha_node differ per call)
    for ns, node in (("r1", "mail1"), ("r2", "mail2")):
        enter(ns)
        runs = []
        for test in (True, False, False):
            opts = dict(base, test=test, mailha_node=node, mailha_root=f"{SHARE}/root-{node}",
                        mailha_live=True)  # a rehearsal root, but this namespace is the node's
            states = salt.loader.states(opts, mods, utils, {})
            ret = states["mailha_dr.configured"](name="dr")
            runs.append({"result": ret["result"], "changes": sorted(ret["changes"]),
                         "comment": ret["comment"]})
        step(f"dr-{node}", runs=runs)
        step(f"dr-{node}-live", lo=sh("ip", "-br", "addr", "show", "dev", "lo"),
             arp_ignore=open("/proc/sys/net/ipv4/conf/all/arp_ignore").read().strip())
    enter("dir")

    # phase 1: a table made by hand, no ldirectord: drain/undrain set the weight directly
    sh("ipvsadm", "-A", "-t", f"{VIP}:80", "-s", "rr")
    for r in (R1, R2):
        sh("ipvsadm", "-a", "-t", f"{VIP}:80", "-r", f"{r}:80", "-g", "-w", "1")
    step("direct-before", who=who(), table=mods["mailha_ipvs.list"]())
    step("direct-drain", ret=mods["mailha_ipvs.drain"]("mail1", maintenancedir="/nonexistent"))
    drained_who = who()
    # kernels since 6.2 sum the per-CPU counters in the estimator kthread (every 2 s): poll
    deadline = time.monotonic() + 10
    while True:
        stats = mods["mailha_ipvs.list"](stats=True)
        if all(r["stats"]["conns"] for r in stats[0]["real_servers"]) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    step("direct-drained", who=drained_who, table=table(mods), stats=stats)
    step("direct-set-weight-0", ret=mods["mailha_ipvs.set_weight"](VIP, 80, R1, 0), table=table(mods))
    step("direct-undrain", ret=mods["mailha_ipvs.undrain"]("mail1", maintenancedir="/nonexistent"))
    step("direct-undrained", who=who(), table=table(mods))
    # the model's second service, as ldirectord would add it for a quiescent site
    sh("ipvsadm", "-A", "-t", f"{VIP}:8080", "-s", "sh", "-b", "sh-fallback")
    for r in (R1, R2):
        sh("ipvsadm", "-a", "-t", f"{VIP}:8080", "-r", f"{r}:8080", "-g", "-w", "1")
    step("diff", diff=mods["mailha_ipvs.diff"]())
    errors = {}
    for name, call in {
        "bad-weight": lambda: mods["mailha_ipvs.set_weight"](VIP, 80, R1, 70000),
        "bad-vip": lambda: mods["mailha_ipvs.set_weight"]("10.99.88", 80, R1, 1),
        "not-real": lambda: mods["mailha_ipvs.set_weight"](VIP, 80, f"{NET}.99", 1),
        "no-service": lambda: mods["mailha_ipvs.set_weight"](VIP, 81, R1, 1),
    }.items():
        try:
            call()
            errors[name] = None
        except Exception as exc:  # noqa: BLE001 - recorded for the host to check
            errors[name] = f"{type(exc).__name__}: {exc}"
    step("errors", errors=errors, table=table(mods))
    sh("ipvsadm", "-C")

    # phase 2: ldirectord with our rendered ldirectord.cf owns the table; drain via maintenancedir
    from salt_mailha.core import lb
    from salt_mailha.core.model import load_site

    site = load_site(pillar)
    mdir = f"{SHARE}/maintenance"
    os.makedirs(mdir, exist_ok=True)
    cf = f"{SHARE}/ldirectord.cf"
    with open(cf, "w") as f:
        f.write(lb.render_ldirectord_cf(site, site.node("lb1"), maintenancedir=mdir,
                                        logfile=f"{SHARE}/ldirectord.log"))
    os.chmod(cf, 0o600)
    ld = subprocess.Popen(["ldirectord", "-d", cf, "start"], stdout=open(f"{SHARE}/ldirectord.out", "w"),
                          stderr=subprocess.STDOUT)
    ready = f"{SHARE}/ipvs-ready"  # keepalived's readiness check, on the real table
    with open(ready, "w") as f:
        f.write(lb.render_keepalived_ipvs_ready(site, site.node("lb1")))
    os.chmod(ready, 0o755)
    step("ready-empty", rc=subprocess.run([ready]).returncode, table=table(mods))
    try:
        up = wait_table(mods, {R1: 1, R2: 1}, 120)
        wait_table(mods, {R1: 1, R2: 1}, 60, stable=1, port=8080)
        step("ld-up", up=up, table=table(mods), who=who(), ready=subprocess.run([ready]).returncode)
        step("ld-drain", ret=mods["mailha_ipvs.drain"]("mail1", port=80, maintenancedir=mdir),
             files=sorted(os.listdir(mdir)))
        time.sleep(4)  # several ldirectord check rounds (checkinterval 1): it must keep weight 0
        step("ld-drained", table=table(mods), who=who(), ready=subprocess.run([ready]).returncode)
        ret = mods["mailha_ipvs.undrain"]("mail1", port=80, maintenancedir=mdir, wait=60)
        step("ld-undrain", ret=ret, files=sorted(os.listdir(mdir)), reload=reload_log(R1))
        # what a client meets right after undrain returns, for three check rounds: a reload must
        # not flap the weight (1, then 0, then 1 again)
        seen = []
        for _ in range(12):
            now = table(mods)[f"tcp:{VIP}:80"]
            if now not in seen:
                seen.append(now)
            time.sleep(0.25)
        step("ld-undrained", seen=seen, table=table(mods), who=who())

        # A drain ldirectord never saw: stopped from before the drain to after the undrain, as
        # when one of its checks blocks that long. It still believes mail1 is up; undrain must
        # make it re-read the kernel table, or mail1 would stay at weight 0 for good.
        wait_table(mods, {R1: 1, R2: 1}, 60, stable=2)
        os.kill(ld.pid, signal.SIGSTOP)
        try:
            mods["mailha_ipvs.drain"]("mail1", port=80, maintenancedir=mdir)
            ret = mods["mailha_ipvs.undrain"]("mail1", port=80, maintenancedir=mdir)
        finally:
            os.kill(ld.pid, signal.SIGCONT)
        step("ld-unseen-drain", ret=ret, ldirectord=ld.pid,
             restored=wait_table(mods, {R1: 1, R2: 1}, 30, stable=3), table=table(mods))

        # A drain older than ldirectord's check round (as when a node was down for minutes): it has
        # been seen, ldirectord restores the weight on its own, and undrain does not reload it.
        mods["mailha_ipvs.drain"]("mail1", port=80, maintenancedir=mdir)
        wait_table(mods, {R1: 0, R2: 1}, 30, stable=3)  # ldirectord keeps it down: it saw the file
        old = time.time() - 600
        os.utime(os.path.join(mdir, f"{R1}:80"), (old, old))
        reloads = sum("Reloading" in line for line in reload_log(R1, whole=True))
        ret = mods["mailha_ipvs.undrain"]("mail1", port=80, maintenancedir=mdir, wait=60)
        step("ld-old-drain", ret=ret, table=table(mods),
             reloads=sum("Reloading" in line for line in reload_log(R1, whole=True)) - reloads)

        # the sh service: drain the server the client hashes to; the client must still be served
        wait_table(mods, {R1: 1, R2: 1}, 60, stable=2, port=8080)
        sh_vs = next(vs for vs in mods["mailha_ipvs.list"]() if vs["key"] == f"tcp:{VIP}:8080")
        before = who(4, port=8080)
        step("sh-before", who=before, schedflags=sh_vs["schedflags"], table=table(mods)[f"tcp:{VIP}:8080"])
        hashed = {"r1": ("mail1", R1), "r2": ("mail2", R2)}.get(before[0])
        if hashed is None:
            raise RuntimeError(f"the client got no answer on the sh service: {before}")
        node, addr = hashed
        mods["mailha_ipvs.drain"](node, port=8080, maintenancedir=mdir)
        want = {R1: 1, R2: 1, addr: 0}
        wait_table(mods, want, 60, stable=2, port=8080)
        step("sh-drained", table=table(mods)[f"tcp:{VIP}:8080"], who=who(4, port=8080))
        mods["mailha_ipvs.undrain"](node, port=8080, maintenancedir=mdir, wait=60)
        wait_table(mods, {R1: 1, R2: 1}, 60, stable=2, port=8080)
        step("sh-undrained", table=table(mods)[f"tcp:{VIP}:8080"], who=who(4, port=8080))
    finally:
        ld.terminate()
        ld.wait(timeout=60)
    step("ld-stopped", table=table(mods))


if __name__ == "__main__":
    try:
        main()
    except Exception:  # noqa: BLE001 - the host reads the traceback from results.json
        results["error"] = traceback.format_exc()
        log(results["error"])
    with open(os.path.join(SHARE, "results.json"), "w") as f:
        json.dump(results, f, indent=1, default=str)
