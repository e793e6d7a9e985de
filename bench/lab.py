"""Timings of the lab: ``up`` (cold with --cold: the cached base tree is removed first), ``up``
again on a running lab, a drill, ``down``. Prints one line per phase; asserts nothing.

    sudo .venv/bin/python bench/lab.py [--cold] [--balancers uml|container] [--drill-nodes lb2,mail2]
                                       [--mode kill|link]
"""
import argparse
import shutil
import subprocess
import sys
import time

from salt_mailha_lab.util import CACHE_DIR

CLI = [sys.executable, "-m", "salt_mailha_lab.cli"]


def timed(*args):
    t = time.monotonic()
    proc = subprocess.run([*CLI, *args], capture_output=True, text=True)
    took = time.monotonic() - t
    tail = (proc.stdout + proc.stderr).strip().splitlines()[-1:]
    print(f"{' '.join(args):<28} exit {proc.returncode}  {took:7.1f}s  | {tail[0] if tail else ''}",
          flush=True)
    return proc


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cold", action="store_true",
                    help="remove the cached base tree and UML kernel first")
    ap.add_argument("--drill-nodes", default="", help="comma-separated; empty: every node")
    ap.add_argument("--mode", default="kill", choices=("kill", "link"))
    ap.add_argument("--balancers", default="uml", choices=("uml", "container"))
    ap.add_argument("--no-drill", action="store_true")
    args = ap.parse_args()
    timed("down")
    if args.cold:
        for p in ("base", "base.new", "base.stamp.json", "uml"):
            path = CACHE_DIR / p
            shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    timed("up", "--balancers", args.balancers)
    timed("up")
    if not args.no_drill:
        extra = ["--nodes", args.drill_nodes] if args.drill_nodes else []
        print(timed("drill", "--mode", args.mode, *extra).stdout)
    timed("down")


if __name__ == "__main__":
    main()
