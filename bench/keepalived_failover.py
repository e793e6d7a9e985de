"""Figures of the load-balancer tier: keepalived failover with the config our renderer makes.

    .venv/bin/python bench/keepalived_failover.py [--rounds 3] [--advert-int 0.1] [--unicast]

Two netns balancers on a private bridge (tests/support/netns.py), Debian's keepalived, the
example site moved to 10.99.77.0/24. Per round: lb1 frozen (SIGSTOP) -> both VIPs on lb2;
thawed -> back on lb1 (preempt); cable cut -> on lb2; plugged -> on lb1. Times are from the
action until the VIP addresses are on the new holder (polled every 10 ms). Root only. Never
asserted anywhere: machines differ.
"""
import argparse
import os
import pathlib
import signal
import statistics
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from salt_mailha.core import lb  # noqa: E402
from salt_mailha.core.model import load_site  # noqa: E402
from tests.integration.lb.conftest import lab_pillar  # noqa: E402
from tests.support.daemon import Daemon  # noqa: E402
from tests.support.netns import Lan  # noqa: E402

NET = "10.99.77"
VIPS = {f"{NET}.21", f"{NET}.22"}


def until(lan, host, timeout=30):
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if lan.addresses(host) >= VIPS:  # a frozen holder keeps its addresses: only the new one counts
            return time.monotonic() - start
        time.sleep(0.01)
    raise TimeoutError(f"VIPs not on {host} within {timeout}s")


def until_only(lan, host, timeout=30):
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if lan.addresses(host) >= VIPS and not lan.addresses(_other(host)) & VIPS:
            return time.monotonic() - start
        time.sleep(0.01)
    raise TimeoutError(f"VIPs not only on {host} within {timeout}s")


def _other(host):
    return "lb2" if host == "lb1" else "lb1"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--advert-int", type=float, default=0.1)
    ap.add_argument("--unicast", action="store_true")
    args = ap.parse_args()
    site = load_site(lab_pillar(NET, keepalived={"advert_int": args.advert_int, "vrrp_version": 3,
                                                 "unicast": args.unicast}))
    figures = {k: [] for k in ("election", "frozen->lb2", "thawed->lb1", "cut->lb2", "plugged->lb1")}
    with tempfile.TemporaryDirectory() as tmp, Lan("kab", bridge_address=f"{NET}.254/24") as lan:
        daemons = {}
        try:
            t0 = time.monotonic()
            for name in ("lb1", "lb2"):
                node = site.node(name)
                lan.add_host(name, f"{node.address('public')}/24")
                d = pathlib.Path(tmp) / name
                d.mkdir()
                hook = d / "notify.sh"
                hook.write_text(lb.render_keepalived_notify(site, node, salt_call="/bin/true"))
                hook.chmod(0o755)
                conf = d / "keepalived.conf"
                conf.write_text(lb.render_keepalived_conf(site, node, notify_script=str(hook)))
                daemons[name] = Daemon(name, lan.argv(name, [
                    "keepalived", "-n", "-l", "-P", "-G", "-f", conf, "-p", d / "ka.pid",
                    "-r", d / "vrrp.pid", "-c", d / "chk.pid"]), d / "log").start()
            until_only(lan, "lb1")
            figures["election"].append(time.monotonic() - t0)
            for _ in range(args.rounds):
                os.killpg(daemons["lb1"].pid, signal.SIGSTOP)
                figures["frozen->lb2"].append(until(lan, "lb2"))
                os.killpg(daemons["lb1"].pid, signal.SIGCONT)
                figures["thawed->lb1"].append(until_only(lan, "lb1"))
                lan.cut("lb1")
                figures["cut->lb2"].append(until(lan, "lb2"))
                lan.restore("lb1")
                figures["plugged->lb1"].append(until_only(lan, "lb1"))
        finally:
            for dmn in daemons.values():
                if dmn.running():
                    os.killpg(dmn.pid, signal.SIGCONT)
                dmn.stop()
    mode = "unicast" if args.unicast else "multicast"
    print(f"keepalived {mode}, VRRPv3, advert_int {args.advert_int}s, {args.rounds} round(s)")
    for label, xs in figures.items():
        print(f"  {label:<14} median {statistics.median(xs):6.2f} s   max {max(xs):6.2f} s   n={len(xs)}")


if __name__ == "__main__":
    main()
