"""``mailha-lab up|status|drill|down``: the whole site on one machine (see README.md here)."""
import argparse
import sys

from salt_mailha.core.errors import MailhaError
from salt_mailha_lab.util import StepFailed


def main(argv=None):
    parser = argparse.ArgumentParser(prog="mailha-lab", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="build (or reuse) the base tree, boot every node, apply mailha")
    up.add_argument("--balancers", choices=("uml", "container"), default=None,
                    help="uml: the lb nodes run as User-mode Linux machines (Debian testing's "
                         "kernel) with real IPVS; container: nspawn like every other node, no "
                         "IPVS on this host, the drill skips the VIP checks (default: what the "
                         "running lab uses, else uml)")
    sub.add_parser("status", help="table of nodes, minions and the last state.apply")
    drill = sub.add_parser("drill", help="fail each node in turn and check what survives")
    drill.add_argument("--mode", choices=("kill", "link"), default="kill",
                       help="kill: a power cut (SIGKILL the container's init or the UML process group; "
                            "the node's network state is reset), then boot it again (default); "
                            "link: cut the node's cables at the bridge")
    drill.add_argument("--nodes", help="comma-separated subset of nodes (default: all)")
    drill.add_argument("--failover-timeout", type=float, default=30.0,
                       help="seconds a check may take to pass again while the node is down")
    drill.add_argument("--recover-timeout", type=float, default=120.0,
                       help="seconds the node's minion may take to answer after it is back")
    sub.add_parser("down", help="remove everything the lab made (safe to run twice)")
    args = parser.parse_args(argv)

    from salt_mailha_lab.lab import Lab, locked

    lab = Lab()
    try:
        with locked():
            if args.command == "up":
                return lab.up(balancers=args.balancers)
            if args.command == "status":
                print(lab.status_text())
                return 0
            if args.command == "drill":
                from salt_mailha_lab.drill import Drill

                nodes = args.nodes.split(",") if args.nodes else None
                return Drill(lab, failover_timeout=args.failover_timeout).run(
                    args.mode, nodes, args.recover_timeout)
            return lab.down()
    except StepFailed as exc:
        print(f"mailha-lab {args.command}: FAILED at {exc}", file=sys.stderr)
        return 1
    except MailhaError as exc:
        print(f"mailha-lab {args.command}: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # noqa: BLE001 - the CLI's boundary: say where to look
        print(f"mailha-lab {args.command}: FAILED: {type(exc).__name__}: {exc}\n  logs: "
              f"{lab.run_dir}/logs; 'mailha-lab down' removes whatever was made", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"mailha-lab {args.command}: interrupted; run 'mailha-lab down' to clean up",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
