"""Figures of the qemu TCG guest that gives the tests a kernel with IPVS.

    .venv/bin/python bench/ipvs_guest.py [--rounds 2]

Prints the kernel/initramfs build time (0 when cached under ~/.cache/salt-mailha/ipvs-vm), and
per round the wall time of boot -> `ipvsadm -Ln` -> power off, with the guest's own uptime when
it ran ipvsadm and when the venv python had imported salt's loader. Never asserted anywhere.
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

from tests.support.qemu_ipvs import IpvsGuest  # noqa: E402

SCRIPT = """\
echo "ipvs-uptime $(cut -d' ' -f1 /proc/uptime)"
ipvsadm -Ln >/dev/null && echo ipvs-ok
{python} -c "import salt.loader" && echo "salt-uptime $(cut -d' ' -f1 /proc/uptime)"
"""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    t = time.monotonic()
    vm = IpvsGuest().build()
    print(f"build (cached when ~0): {time.monotonic() - t:.1f} s  kernel {vm.kernel.parent.name}")
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
    print(f"boot -> ipvsadm -> import salt.loader -> poweroff: median {statistics.median(walls):.1f} s wall "
          f"(n={len(walls)})")
    print(f"guest uptime at ipvsadm: median {statistics.median(ipvs_up):.1f} s; "
          f"after importing salt.loader: median {statistics.median(salt_up):.1f} s")


if __name__ == "__main__":
    main()
