"""Network namespaces on a private bridge: a LAN of "hosts" on one machine, for tests.

The bridge lives in its own namespace (nothing is added to the root namespace), each host gets an
``eth0`` veth whose peer is a bridge port, and ``cut``/``restore`` take a host's cable out and
back. Names carry a per-process token, so parallel runs never collide; ``close()`` deletes every
namespace it made (use it as a context manager or a fixture finaliser).

    with Lan("ka") as lan:
        lan.add_host("lb1", "10.99.77.1/24")
        lan.run("lb1", ["ip", "-br", "addr"])
"""
import json
import os
import shutil
import subprocess
import uuid

SKIP_REASON = "needs root and iproute2 with network namespaces (run the tests as root)"


def available():
    """(ok, reason) for netns-based tests on this machine."""
    if os.geteuid() != 0 or not shutil.which("ip"):
        return False, SKIP_REASON
    probe = f"mhprobe-{uuid.uuid4().hex[:6]}"
    res = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if res.returncode != 0:
        return False, f"{SKIP_REASON}: ip netns add failed: {res.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return True, ""


def _ip(*args, check=True):
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


class Lan:
    def __init__(self, tag="lan", bridge_address=None):
        self.token = uuid.uuid4().hex[:5]
        self.prefix = f"mh-{tag}-{self.token}-"
        self.switch = self.prefix + "sw"
        self.hosts = {}  # name -> (netns, bridge-side port)
        _ip("netns", "add", self.switch)
        _ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.switch, "link", "set", "lo", "up")
        _ip("-n", self.switch, "link", "set", "br0", "up")
        if bridge_address:
            _ip("-n", self.switch, "addr", "add", bridge_address, "dev", "br0")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def ns(self, host):
        return self.hosts[host][0]

    def add_host(self, name, address=None, iface="eth0"):
        """A namespace with ``lo`` up and ``iface`` on the bridge (``address`` as CIDR, optional)."""
        ns = self.prefix + name
        port = f"v{len(self.hosts)}{self.token}"  # <= 15 chars
        _ip("netns", "add", ns)
        self.hosts[name] = (ns, port)
        _ip("-n", self.switch, "link", "add", port, "type", "veth", "peer", "name", iface,
            "netns", ns)
        _ip("-n", self.switch, "link", "set", port, "master", "br0", "up")
        _ip("-n", ns, "link", "set", "lo", "up")
        _ip("-n", ns, "link", "set", iface, "up")
        if address:
            _ip("-n", ns, "addr", "add", address, "dev", iface)
        return ns

    def argv(self, host, argv):
        """``argv`` prefixed to run inside ``host`` (or the switch namespace for ``"sw"``)."""
        ns = self.switch if host == "sw" else self.ns(host)
        return ["ip", "netns", "exec", ns, *map(str, argv)]

    def run(self, host, argv, check=True, **kwargs):
        kwargs.setdefault("capture_output", True)
        kwargs.setdefault("text", True)
        return subprocess.run(self.argv(host, argv), check=check, **kwargs)

    def addresses(self, host, dev="eth0"):
        """IPv4 addresses (without prefix) on ``dev`` of ``host``."""
        out = _ip("-n", self.ns(host), "-j", "addr", "show", "dev", dev).stdout
        return {a["local"] for link in json.loads(out or "[]") for a in link.get("addr_info", [])
                if a.get("family") == "inet"}

    def mac(self, host, dev="eth0"):
        out = _ip("-n", self.ns(host), "-j", "link", "show", "dev", dev).stdout
        return json.loads(out)[0]["address"]

    def neighbour(self, address, host="sw"):
        """The MAC ``host`` (default: the switch namespace, the "client") has for ``address``."""
        ns = self.switch if host == "sw" else self.ns(host)
        out = _ip("-n", ns, "-j", "neigh", "show", address).stdout
        entries = [e for e in json.loads(out or "[]") if e.get("lladdr")]
        return entries[0]["lladdr"] if entries else None

    def cut(self, host):
        """Pull ``host``'s cable: its bridge port goes down (its own eth0 loses carrier)."""
        _ip("-n", self.switch, "link", "set", self.hosts[host][1], "down")

    def restore(self, host):
        _ip("-n", self.switch, "link", "set", self.hosts[host][1], "up")

    def close(self):
        for ns, _ in self.hosts.values():
            _ip("netns", "del", ns, check=False)
        _ip("netns", "del", self.switch, check=False)
        self.hosts.clear()
