"""Lab networking, all inside namespaces the lab creates (never the host's own interfaces).

``mhlab-net`` holds one bridge per site network (``br0`` public, ``br1`` private, in the
pillar's order) with the gateway address .1 (the salt-master listens there). Each node gets
namespace ``mhlab-<node>`` with ``eth<i>`` veths plugged into ``br<i>``; the drill's client gets
``mhlab-client`` at .250. A container's addresses are configured from outside, before it boots;
a VM node (vm.py) gets taps with the same names in ``mhlab-net`` and configures itself.
"""
import ipaddress
import os

from salt_mailha_lab.util import PREFIX, run

BRIDGE_NS = f"{PREFIX}-net"
CLIENT = "client"


def netns(name):
    return f"{PREFIX}-{name}"


def existing_netns():
    return set(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else set()


def host_veth(node, index):
    name = f"mh-{node}-{index}"
    if len(name) > 15:  # IFNAMSIZ - 1
        raise ValueError(f"node name {node!r} is too long for a veth name ({name}); the lab "
                         "needs node names of at most 10 characters")
    return name


def ensure_bridges(lab_nets, log):
    """``lab_nets``: ordered ``[(network_name, ipaddress network, gateway)]``."""
    if BRIDGE_NS not in existing_netns():
        run(["ip", "netns", "add", BRIDGE_NS], log=log)
    ip = ["ip", "-n", BRIDGE_NS]
    run([*ip, "link", "set", "lo", "up"], log=log)
    links = run([*ip, "-o", "link", "show"], capture=True).stdout
    for i, (_name, net, gw) in enumerate(lab_nets):
        br = f"br{i}"
        if f" {br}:" not in links:
            run([*ip, "link", "add", br, "type", "bridge"], log=log)
            run([*ip, "addr", "add", f"{gw}/{net.prefixlen}", "dev", br], log=log)
        run([*ip, "link", "set", br, "up"], log=log)


def plug(node, addresses, lab_nets, log, gateway_net=0):
    """Create ``mhlab-<node>`` with one veth per site network the node has an address on."""
    ns = netns(node)
    if ns not in existing_netns():
        run(["ip", "netns", "add", ns], log=log)
    run(["ip", "-n", ns, "link", "set", "lo", "up"], log=log)
    inside = run(["ip", "-n", ns, "-o", "addr", "show"], capture=True).stdout
    for i, (name, net, gw) in enumerate(lab_nets):
        addr = addresses.get(name)
        if addr is None:
            continue
        ipaddress.ip_address(addr)  # validated before it reaches a command
        dev, outside = f"eth{i}", host_veth(node, i)
        if f" {dev} " in inside and f" {addr}/" in inside:
            continue
        run(["ip", "-n", BRIDGE_NS, "link", "del", outside], log=log, check=False)
        run(["ip", "-n", BRIDGE_NS, "link", "add", outside, "type", "veth", "peer", "name", dev,
             "netns", ns], log=log)
        run(["ip", "-n", BRIDGE_NS, "link", "set", outside, "master", f"br{i}", "up"], log=log)
        run(["ip", "-n", ns, "addr", "add", f"{addr}/{net.prefixlen}", "dev", dev], log=log)
        run(["ip", "-n", ns, "link", "set", dev, "up"], log=log)
        if i == gateway_net:
            run(["ip", "-n", ns, "route", "replace", "default", "via", gw], log=log)


def ensure_tap(node, index, log):
    """The tap of a VM node's ``eth<index>`` (named like a container's host-side veth, so
    ``set_link`` cuts it the same way), plugged into ``br<index>``."""
    dev = host_veth(node, index)
    ip = ["ip", "-n", BRIDGE_NS]
    shown = run([*ip, "-d", "link", "show", "dev", dev], capture=True, check=False)
    if shown.returncode == 0 and "tun type tap" not in shown.stdout:
        run([*ip, "link", "del", dev], log=log)  # a container's veth left from another run
    if shown.returncode != 0 or "tun type tap" not in shown.stdout:
        run([*ip, "tuntap", "add", "dev", dev, "mode", "tap"], log=log)
    run([*ip, "link", "set", dev, "master", f"br{index}", "up"], log=log)


def delete_link(dev, log):
    run(["ip", "-n", BRIDGE_NS, "link", "del", dev], log=log, check=False)


def set_link(node, up, lab_nets):
    """Cut (or restore) a node's cables at the bridge (a container's veth or a VM's tap): its
    own interfaces keep their config."""
    for i, _net in enumerate(lab_nets):
        dev = host_veth(node, i)
        run(["ip", "-n", BRIDGE_NS, "link", "set", dev, "up" if up else "down"], check=False)


def delete_netns(name, log):
    if name in existing_netns():
        run(["ip", "netns", "del", name], log=log, check=False)


def netns_pids(name):
    proc = run(["ip", "netns", "pids", name], capture=True, check=False)
    return [int(p) for p in proc.stdout.split() if p.isdigit()]
