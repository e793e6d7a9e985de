"""Figures of the User-mode Linux guest that gives the tests a kernel with IPVS.

    .venv/bin/python bench/ipvs_guest.py [--rounds 3]

Prints the time to get the UML kernel (about 0 when cached under $MAILHA_LAB_CACHE/uml), and per
round the wall time of boot -> `ipvsadm -Ln` -> `import salt.loader` in the venv python -> power
off, with the guest's own uptime when ipvsadm ran and when salt's loader was imported. Never
asserted anywhere.
"""
import argparse
import pathlib
import re
import statistics
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.uml_ipvs import IpvsGuest  # noqa: E402

SCRIPT = """\
echo "ipvs-uptime $(cut -d' ' -f1 /proc/uptime)"
ipvsadm -Ln >/dev/null && echo ipvs-ok
{python} -c "import salt.loader" && echo "salt-uptime $(cut -d' ' -f1 /proc/uptime)"
"""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    t = time.monotonic()
    vm = IpvsGuest().build()
    print(f"kernel (cached when ~0): {time.monotonic() - t:.1f} s  UML {vm.kernel.release} {vm.kernel.versions}")
    walls, ipvs_up, salt_up = [], [], []
    for _ in range(args.rounds):
        with tempfile.TemporaryDirectory() as share:
            script = pathlib.Path(share) / "g.sh"
            script.write_text(SCRIPT.format(python=sys.executable))
            res = vm.run(share, script, timeout=600)
            if "ipvs-ok" not in res.guest_log:
                sys.exit(f"guest failed:\n{res.console[-2000:]}\n{res.guest_log}")
            walls.append(res.seconds)
            ipvs_up.append(float(re.search(r"ipvs-uptime (\S+)", res.guest_log).group(1)))
            salt_up.append(float(re.search(r"salt-uptime (\S+)", res.guest_log).group(1)))
    print(f"boot -> ipvsadm -> import salt.loader -> poweroff: median {statistics.median(walls):.1f} s wall, "
          f"max {max(walls):.1f} s (n={len(walls)})")
    print(f"guest uptime at ipvsadm: median {statistics.median(ipvs_up):.1f} s; "
          f"after importing salt.loader: median {statistics.median(salt_up):.1f} s")


if __name__ == "__main__":
    main()
