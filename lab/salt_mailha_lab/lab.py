"""The lab as a whole: ``up``, ``status``, ``down`` (the drill is in drill.py)."""
import contextlib
import fcntl
import ipaddress
import json
import os
import pathlib
import random
import secrets
import shutil
import signal

from salt_mailha import data
from salt_mailha.core.errors import CommandFailed, Refused
from salt_mailha_lab import network, uml
from salt_mailha_lab import pillar as labpillar
from salt_mailha_lab.base import BaseTree
from salt_mailha_lab.master import Master, minion_example
from salt_mailha_lab.nodes import Node, UmlNode
from salt_mailha_lab.report import summarize_state_return, table
from salt_mailha_lab.util import CACHE_DIR, PREFIX, RUN_DIR, Progress, run

REQUIRED_TOOLS = ("debootstrap", "systemd-nspawn", "ip", "nsenter", "mount", "chroot")
UML_TOOLS = ("patchelf", "busybox", "apt-get", "apt-cache", "dpkg-deb")
BALANCERS = ("uml", "container")  # how the lb nodes run: User-mode Linux (real IPVS) or nspawn
LOCK = pathlib.Path("/run/lock/mailha-lab.lock")
BOOT_TIMEOUT = 120
MINION_TIMEOUT = 180
APPLY_TIMEOUT = 900


@contextlib.contextmanager
def locked():
    LOCK.parent.mkdir(parents=True, exist_ok=True)
    with open(LOCK, "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise CommandFailed(f"another mailha-lab command holds {LOCK}; wait for it") from None
        yield


class Lab:
    def __init__(self, run_dir=RUN_DIR, cache_dir=CACHE_DIR, example=labpillar.EXAMPLE, out=None):
        self.run_dir = pathlib.Path(run_dir)
        self.cache_dir = pathlib.Path(cache_dir)
        self.example = pathlib.Path(example)
        self.out = out
        self.base = BaseTree(self.cache_dir)

    # ------------------------------------------------------------------ model
    def pillar(self):
        """The lab pillar: regenerated from the example each time, same secrets while up."""
        seed_file = self.run_dir / "secret-seed"
        if not seed_file.exists():
            self.run_dir.mkdir(parents=True, exist_ok=True)
            seed_file.touch(mode=0o600)
            seed_file.write_text(secrets.token_hex(16))
        rng = random.Random(seed_file.read_text())
        data = labpillar.lab_pillar(labpillar.load_example(self.example), rng=rng)
        try:
            from salt_mailha.core.model import load_site
        except ImportError:  # the model is optional for the lab itself
            return data
        load_site(data)  # raises ValidationError naming every problem
        return data

    @staticmethod
    def lab_nets(pillar):
        nets = []
        for name, cidr in pillar["mailha"]["networks"].items():
            net = ipaddress.ip_network(cidr)
            nets.append((name, net, labpillar.gateway(net)))
        return nets

    def saved(self):
        """What ``up`` recorded in the run dir (lab.json), or {} when the lab is down."""
        try:
            return json.loads((self.run_dir / "lab.json").read_text())
        except (OSError, ValueError):
            return {}

    def balancers(self):
        """``uml`` or ``container``: how the running lab runs its balancers."""
        return self.saved().get("balancers", BALANCERS[0])

    @staticmethod
    def uml_nodes(pillar, balancers):
        """The nodes that run as User-mode Linux machines: the balancers (role lb), unless
        ``container`` is asked for."""
        if balancers == "container":
            return []
        if balancers != "uml":
            raise CommandFailed(f"--balancers {balancers!r}: choose one of {', '.join(BALANCERS)}")
        return [n for n, spec in pillar["mailha"]["nodes"].items() if "lb" in spec["roles"]]

    def node(self, name):
        saved = self.saved()
        if name in saved.get("uml_nodes", ()):
            kernel = saved.get("uml_kernel")
            return UmlNode(name, self.run_dir, self.base.root,
                           uml.Kernel.from_json(kernel) if kernel else None)
        return Node(name, self.run_dir, self.base.root)

    def binds(self, pillar, name):
        """Host directories a node shares: the vmail share on mail nodes (the stand-in for the
        filer's NFS export, which this kernel cannot mount), owned by the vmail uid/gid."""
        from salt_mailha.core.model import load_site

        site = load_site(pillar)
        vmail = site.mail.vmail if site.mail is not None else None
        if not site.node(name).has("mail") or vmail is None or vmail.fstype != "bind":
            return ()
        share = self.run_dir / "vmail-share"
        share.mkdir(parents=True, exist_ok=True)
        os.chown(share, vmail.uid, vmail.gid)
        share.chmod(0o770)
        return ((share, vmail.export),)

    def node_names(self):
        d = self.run_dir / "nodes"
        return sorted(p.name for p in d.iterdir()) if d.is_dir() else []

    def master(self, pillar=None):
        gw = self.lab_nets(pillar)[0][2] if pillar else self._saved_gateway()
        return Master(self.run_dir, gw)

    def _saved_gateway(self):
        return self.saved().get("gateway")

    @staticmethod
    def identity(pillar, gw, name):
        top = pillar["mailha"]
        domain = top["domain"]
        lines = ["127.0.0.1 localhost", "::1 localhost ip6-localhost ip6-loopback"]
        for other, node in top["nodes"].items():
            for i, addr in enumerate(node["addresses"].values()):
                lines.append(f"{addr} {other}.{domain} {other}" if i == 0
                             else f"{addr} {other}-{i}")
        for vip in top.get("vips", {}).values():
            lines.append(f"{vip['address']} {vip['hostname']}.{domain} {vip['hostname']}")
        dns = [s["address"] for s in top.get("dns", {}).get("servers", [])]
        # One lab resolver: fail fast while it is down (glibc's 5 s x 2 attempts would hold every
        # Postfix greeting, which looks the client up, for 10 s)
        resolv = (f"search {domain}\n" + "".join(f"nameserver {a}\n" for a in dns)
                  + "options timeout:1 attempts:1\n")
        # the beacons of examples/minion.d go to the balancers, which probe the real servers
        extra = minion_example() if "lb" in top["nodes"][name]["roles"] else None
        # a UML node configures its own addresses (a container's are set from outside by plug)
        nics = []
        for i, (net_name, cidr) in enumerate(top["networks"].items()):
            addr = top["nodes"][name]["addresses"].get(net_name)
            if addr is not None:
                net = ipaddress.ip_network(cidr)
                nics.append((i, addr, net.prefixlen, gw if i == 0 else None))
        return {"hosts": "\n".join(lines) + "\n", "resolv": resolv, "master": gw,
                "minion_extra": extra, "nics": nics}

    # ------------------------------------------------------------------ up
    def up(self, balancers=None):
        """``balancers``: ``uml``, ``container`` or None (what the running lab uses, else
        ``uml``)."""
        p = Progress(self.run_dir / "logs", out=self.out)
        p.say(f"mailha-lab up (run dir {self.run_dir}, cache {self.cache_dir})")
        running = [n for n in self.node_names() if self.node(n).running()]
        was = self.balancers()
        balancers = balancers or (was if running else BALANCERS[0])
        if running and balancers != was:
            raise Refused(f"the lab is up with --balancers {was}; run 'mailha-lab down' before "
                          f"'up --balancers {balancers}'")
        with p.step("preflight") as log:
            self._preflight(log, balancers)
        with p.step("lab pillar from pillar.example"):
            pillar = self.pillar()
            nets = self.lab_nets(pillar)
            gw = nets[0][2]
            master = self.master(pillar)
            pillar_file = labpillar.write_pillar_roots(pillar, master.pillar_dir)
            names = list(pillar["mailha"]["nodes"])
            umls = self.uml_nodes(pillar, balancers)
            saved = {"gateway": gw, "nodes": names, "balancers": balancers, "uml_nodes": umls,
                     "networks": [(n, str(c), g) for n, c, g in nets]}
            (self.run_dir / "lab.json").write_text(json.dumps(saved))
        p.say(f"lab pillar: {pillar_file} ({len(names)} nodes: {', '.join(names)}; balancers "
              f"as {balancers}{': ' + ', '.join(umls) if umls else ''})")
        cold = self.base.ensure(p, in_use=bool(running))
        if umls:
            with p.step("UML kernel (Debian testing, cached) and its boot check") as log:
                kernel = uml.ensure_kernel(self.cache_dir, log=log)
                self.base.install_uml(kernel, in_use=bool(running))
                took = uml.boot_check(kernel, log=log)
                saved["uml_kernel"] = kernel.to_json()
                (self.run_dir / "lab.json").write_text(json.dumps(saved))
            versions = ", ".join(f"{k} {v}" for k, v in sorted(kernel.versions.items()))
            p.say(f"UML kernel {kernel.release} ({versions}): booted and loaded ip_vs in "
                  f"{took:.1f}s")
        with p.step("network namespaces and bridges") as log:
            network.ensure_bridges(nets, log)
            network.plug(network.CLIENT, {
                name: labpillar.client_address(net) for name, net, _ in nets}, nets, log)
        kinds = f"{len(names) - len(umls)} nspawn" + (f" + {len(umls)} UML" if umls else "")
        with p.step(f"start {kinds} nodes") as log:
            started = []
            for name in names:
                node = self.node(name)
                if node.running():
                    continue
                if node.kind == "container":
                    network.plug(name, pillar["mailha"]["nodes"][name]["addresses"], nets, log)
                node.prepare(self.identity(pillar, gw, name), log)
                node.start(log, self.binds(pillar, name))
                started.append(name)
            for name in names:
                node = self.node(name)
                node.wait_booted(max(BOOT_TIMEOUT, node.boot_timeout))
        p.say(f"nodes: {len(started)} started, {len(names) - len(started)} already running")
        with p.step("salt-master in the bridge namespace") as log:
            source = master.configure()
            master.start(log)
        p.say(f"reactor and schedule: {'from ' + source if source else 'none (no master config example)'}")
        with p.step("minions answer test.ping") as log:
            wait = MINION_TIMEOUT
            answered = master.wait_minions(names, wait, log=log)
            missing = sorted(set(names) - answered)
            if missing:
                raise CommandFailed(f"no test.ping answer from {', '.join(missing)} within "
                                    f"{wait}s; minion logs: <node>/var/log/salt/minion under "
                                    f"{self.run_dir}/nodes/<node>/upper")
        with p.step("salt '*' state.apply mailha") as log:
            ret = master.salt("*", "state.apply", "mailha", timeout=APPLY_TIMEOUT, log=log)
            results = {n: summarize_state_return(ret.get(n)) for n in names}
            (self.run_dir / "last-apply.json").write_text(json.dumps(results))
        # the node table only: `mailha-lab status` adds the runner's (salt-run mailha.status
        # asks every minion; a node that does not answer costs its timeout)
        print(self.status_text(pillar, runner=False), file=self.out, flush=True)
        failed = [n for n, (v, _d) in results.items() if v != "ok"]
        p.say(f"up: {'cold (base tree built)' if cold else 'cached base'}; total "
              f"{p.elapsed():.1f}s; state.apply failed on {len(failed)}/{len(names)} nodes"
              + (f" (details above; log {log})" if failed else ""))
        return 2 if failed else 0

    def _preflight(self, log, balancers="container"):
        if os.geteuid() != 0:
            raise CommandFailed("mailha-lab needs root (namespaces, mounts, systemd-nspawn)")
        missing = [t for t in REQUIRED_TOOLS if not shutil.which(t)]
        if missing:
            raise CommandFailed(f"missing tools: {', '.join(missing)}; run scripts/setup-host.sh "
                                "(Debian packages debootstrap, systemd-container, iproute2)")
        missing = [t for t in UML_TOOLS if not shutil.which(t)] if balancers == "uml" else []
        if balancers == "uml" and not os.path.exists("/dev/net/tun"):
            missing.append("/dev/net/tun (the tun device for the UML balancers' taps)")
        if missing:
            raise CommandFailed(f"UML balancers need {', '.join(missing)}; run "
                                "scripts/setup-host.sh (Debian packages patchelf, busybox-static)"
                                " or use --balancers container")
        for stale in (n for n in self.node_names() if not self.node(n).running()):
            self.node(stale).unmount(log)  # a node whose nspawn died: re-mount cleanly

    # ------------------------------------------------------------------ status
    def status_text(self, pillar=None, runner=True):
        pillar = pillar or self._pillar_if_up()
        if pillar is None:
            return "lab is down (nothing under " + str(self.run_dir) + ")"
        master = self.master(pillar)
        top = pillar["mailha"]
        wait = 10 if self.saved().get("uml_nodes") else 5
        minions = master.salt("*", "test.ping", timeout=wait) if master.pid() else {}
        try:
            applied = json.loads((self.run_dir / "last-apply.json").read_text())
        except (OSError, ValueError):
            applied = {}
        rows = []
        for name, spec in top["nodes"].items():
            node = self.node(name)
            up = node.running()
            sysstate = "-"
            if up:
                proc = node.exec(["systemctl", "is-system-running"], check=False, timeout=10)
                sysstate = proc.stdout.strip() if proc else "?"
            verdict, detail = applied.get(name, ("-", "not applied yet"))
            rows.append([name, ",".join(spec["roles"]), ",".join(spec["addresses"].values()),
                         node.kind, "running" if up else "stopped", sysstate,
                         "up" if minions.get(name) is True else "down", verdict, detail])
        text = table(["node", "roles", "addresses", "kind", "container", "systemd", "minion",
                      "state.apply", "detail"], rows)
        text += "\nmaster: " + (f"pid {master.pid()} on {master.interface}" if master.pid()
                                else "stopped")
        if master.pid() and not runner:
            text += "\nmailha.status runner: see 'mailha-lab status'"
        elif master.pid():
            # the runner's own outputter: one table (IPVS weights read from each balancer)
            code, out, err = master.run_runner("mailha.status", timeout=300)
            if "is not available" in out + err:
                text += "\nmailha.status runner: not available yet (own table above)"
            elif code != 0:
                text += f"\nmailha.status runner failed: {(err or out).strip()[-300:]}"
            else:
                text += "\nmailha.status runner:\n" + out.rstrip()
        return text

    def _pillar_if_up(self):
        if not (self.run_dir / "lab.json").exists():
            return None
        try:
            return data.whole_pillar(self.run_dir / "master/pillar")
        except (OSError, ValueError):
            return None

    # ------------------------------------------------------------------ down
    def down(self):
        p = Progress(self.cache_dir / "logs", out=self.out)  # the run dir goes away
        log = p.log_dir / "down.log"
        with p.step("stop salt-master"):
            if (self.run_dir / "master").exists():
                Master(self.run_dir, None).stop()
        names = self.node_names()
        with p.step(f"stop {len(names)} nodes"):
            nodes = [self.node(name) for name in names]
            for node in nodes:
                if node.kind == "uml":
                    node.request_stop()  # ctrl-alt-del: systemd powers the machine off
                elif node.pid():
                    os.kill(node.pid(), signal.SIGTERM)  # all at once: shutdowns overlap
            for node in nodes:
                node.stop(log)
                if node.kind == "uml":
                    node.unplug(log)
        with p.step("kill leftovers in lab namespaces, unmount, delete namespaces"):
            ours = sorted(n for n in network.existing_netns() if n.startswith(PREFIX + "-"))
            for ns in ours:
                for pid in network.netns_pids(ns):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
            self._unmount_all(log)
            for ns in sorted(ours, key=lambda n: n == network.BRIDGE_NS):
                network.delete_netns(ns, log)
        with p.step("remove run dir"):
            if self.run_dir.exists():
                shutil.rmtree(self.run_dir)
        p.say(f"down: total {p.elapsed():.1f}s (base tree kept in {self.base.root})")
        return 0

    def _unmount_all(self, log):
        prefix = str(self.run_dir.resolve()) + "/"
        with open("/proc/self/mountinfo") as fh:
            points = [line.split()[4] for line in fh]
        for point in sorted((m for m in points if m.startswith(prefix)), key=len, reverse=True):
            run(["umount", "--lazy", point], log=log, check=False)

