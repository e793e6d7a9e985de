"""IPVS on a load balancer: read the table, set weights, drain and undrain real servers, and
compare the table with the site model. Replaces Salt's departed ``lvs`` module (which turned
weight 0 into 1).

Every argument is validated (``ipaddress``, port and weight ranges) before it reaches
``ipvsadm``, which runs from an argv list (no shell). Parsing and validation live in
``salt_mailha.core.ipvs``.

Drain and ldirectord: ldirectord owns the table on a balancer. ``drain`` sets the weight to 0 at
once *and* drops a file in ldirectord's ``maintenancedir`` (see ``ldirectord.cf``), so ldirectord
marks the server down itself (weight 0 with ``quiescent=yes``) and never restores it behind the
operator's back. ``undrain`` removes the file and lets ldirectord's next successful check restore
the weight (a server failing its check stays at 0); without an ldirectord maintenance directory it
sets the weight directly.

ldirectord restores a weight only for a server it believes is down. A drain that it never saw (the
file came and went within one of its check rounds, or while it was stopped) leaves it believing
the server is up while the kernel says weight 0, and it would never raise that weight again. So
``undrain`` sends ldirectord SIGHUP (its ``reload``) when a weight is still 0 and a maintenance
file it removed is younger than ldirectord's worst-case check round (``core.lb.check_round``): on a
reload ldirectord re-reads the kernel table and treats every weight-0 server as down, so its next
successful check restores it. Only then: a reload restarts every check process (``fork``) and
re-checks every server in one pass, which on a slow balancer held back the checks, and the drains,
of every other server for seconds. A rehearsal (``mailha_root`` other than ``/``) signals nothing.

Rehearsals are offline (``salt_mailha.rehearsal``): under a scratch ``mailha_root`` the kernel
table is read but never changed; ``drain``, ``undrain`` and ``set_weight`` then write or remove
only the maintenance files under the root and list the weights they left alone under
``not_changed``. Minion config ``mailha_live: True`` lifts that (the remediation tests, a UML
guest).

Minion config: ``mailha_root`` (prefix of the maintenance directory, default ``/``),
``mailha_ldirectord_maintenancedir`` (default ``/etc/ldirectord.maintenance``).
"""
import functools
import os
import signal
import time

from salt.exceptions import CommandExecutionError

from salt_mailha import glue, rehearsal
from salt_mailha.core import ipvs, lb
from salt_mailha.core.errors import MailhaError

__virtualname__ = "mailha_ipvs"
__func_alias__ = {"list_": "list"}


def __virtual__():
    if not __salt__["cmd.has_exec"]("ipvsadm"):
        return False, "mailha_ipvs needs ipvsadm: apt-get install ipvsadm (scripts/setup-host.sh)"
    return __virtualname__


def _ipvsadm(*args):
    argv = ["ipvsadm", *args]
    res = __salt__["cmd.run_all"](argv, python_shell=False, ignore_retcode=True)
    if res["retcode"] != 0:
        err = (res.get("stderr") or res.get("stdout") or "").strip()
        hint = ""
        if "Protocol not available" in err or "Can't initialize ipvs" in err:
            hint = "; this kernel has no IPVS (load ip_vs: modprobe ip_vs)"
        raise CommandExecutionError(f"{' '.join(argv)} failed (rc={res['retcode']}): {err}{hint}")
    return res["stdout"]


def _checked(func):
    """Core errors (validation, parse) become CommandExecutionError at the module boundary."""
    # functools.wraps keeps the real signature visible to Salt's argument checking
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except MailhaError as exc:
            raise CommandExecutionError(str(exc)) from None

    return wrapper


def _table():
    return ipvs.parse_list(_ipvsadm("-L", "-n"))


@_checked
def list_(stats=False):
    """The IPVS table: every virtual service with its real servers, weights and active/inactive
    connection counts; with ``stats=True`` also the cumulative counters (``ipvsadm --stats``).

    CLI Example:

    .. code-block:: bash

        salt lb1 mailha_ipvs.list
        salt lb1 mailha_ipvs.list stats=True
    """
    services = _table()
    if not stats:
        return [vs.as_dict() for vs in services]
    return ipvs.merge_stats(services, ipvs.parse_stats(_ipvsadm("-L", "-n", "--stats", "--exact")))


def _maintenance_dir(maintenancedir=None):
    path = maintenancedir or __opts__.get("mailha_ldirectord_maintenancedir") or lb.MAINTENANCE_DIR
    return glue.under_root(path, __opts__, __pillar__)


def _server_address(server):
    """``server`` is an address, or a node id of the site model (its address on each VIP's
    network; returns a dict network -> address)."""
    try:
        return {None: ipvs.check_address(server, "server")}
    except MailhaError:
        pass
    if "mailha" not in __pillar__:
        raise CommandExecutionError(f"server {server!r} is not an IP address (and no mailha pillar "
                                    "to look a node up in); give the real server's address")
    site = glue.site_from_pillar(__pillar__, __opts__)
    if not site.has_node(server):
        raise CommandExecutionError(f"server {server!r} is neither an IP address nor a node of "
                                    f"site {site.name} ({', '.join(n.id for n in site.nodes)})")
    return dict(site.node(server).addresses)


def _targets(server, vip, port, protocol):
    """(address, [(service, real)]) of ``server`` in the live table, filtered by vip/port."""
    addresses = set(_server_address(server).values())
    if vip is not None:
        vip = ipvs.check_address(vip, "vip")
    if port is not None:
        port = ipvs.check_port(port)
    protocol = ipvs.check_protocol(protocol)
    found = []
    for vs in _table():
        if vs.protocol != protocol or (vip and vs.address != vip) or (port and vs.port != port):
            continue
        found += [(vs, r) for r in vs.real_servers if r.address in addresses]
    if not found:
        raise CommandExecutionError(
            f"real server {server} is in no {protocol} service"
            + (f" on {vip}" if vip else "") + (f" port {port}" if port else "")
            + "; see mailha_ipvs.list")
    address = found[0][1].address
    return address, found


def _set(vs, real, weight):
    """Change one weight in the kernel; False (nothing changed) in a rehearsal."""
    if not rehearsal.live(__opts__, __pillar__):
        return False
    _ipvsadm(*ipvs.edit_real_argv(vs, real, weight))
    return True


def _offline(out, left):
    """Mark a rehearsal's result: the weights it left alone, and why."""
    if not rehearsal.live(__opts__, __pillar__):
        out["not_changed"] = left
        out["rehearsal"] = rehearsal.why(__opts__, __pillar__)
    return out


@_checked
def set_weight(vip, port, server, weight, protocol="tcp", server_port=None):
    """Set the weight of real server ``server`` in service ``protocol`` ``vip``:``port``.

    ``weight`` is 0..65535; 0 stays 0 (no new connections, existing ones finish). The server's
    forwarding method is kept. Returns the old and new weight.

    CLI Example:

    .. code-block:: bash

        salt lb1 mailha_ipvs.set_weight 192.0.2.21 993 192.0.2.17 0
    """
    vip = ipvs.check_address(vip, "vip")
    port = ipvs.check_port(port)
    server = ipvs.check_address(server, "server")
    weight = ipvs.check_weight(weight)
    server_port = port if server_port is None else ipvs.check_port(server_port, "server_port")
    vs = ipvs.find_service(_table(), protocol, vip, port)
    if vs is None:
        raise CommandExecutionError(f"no {protocol} service {ipvs.endpoint(vip, port)} in the IPVS "
                                    "table; see mailha_ipvs.list")
    real = vs.real(server, server_port)
    if real is None:
        raise CommandExecutionError(
            f"{ipvs.endpoint(server, server_port)} is not a real server of {vs.key}; it has "
            f"{', '.join(r.key for r in vs.real_servers) or 'none'}")
    left = []
    if real.weight != weight and not _set(vs, real, weight):
        left.append(f"{vs.key} {real.key} weight {real.weight} -> {weight}")
    return _offline({"service": vs.key, "real": real.key, "old": real.weight, "new": weight}, left)


@_checked
def drain(server, vip=None, port=None, protocol="tcp", maintenancedir=None):
    """Stop new connections to ``server`` (an address or a node id): weight 0 in every service it
    serves (or only ``vip``/``port``), and an ldirectord maintenance file so ldirectord keeps it
    down. Existing connections finish.

    CLI Example:

    .. code-block:: bash

        salt lb1 mailha_ipvs.drain mail1
        salt lb1 mailha_ipvs.drain 192.0.2.17 port=993
    """
    address, found = _targets(server, vip, port, protocol)
    mdir = _maintenance_dir(maintenancedir)
    mfile = None
    if os.path.isdir(mdir):
        mfile = os.path.join(mdir, address if port is None else ipvs.endpoint(address, int(port)))
        with open(mfile, "w", encoding="ascii") as f:
            f.write("drained by salt-mailha\n")
    drained, already, left = [], [], []
    for vs, real in found:
        if real.weight == 0:
            already.append(f"{vs.key} {real.key}")
        elif _set(vs, real, 0):
            drained.append(f"{vs.key} {real.key}")
        else:
            left.append(f"{vs.key} {real.key} weight {real.weight} -> 0")
    return _offline({"server": address, "drained": drained, "already": already, "maintenance_file": mfile},
                    left)


def _ldirectord_pids(proc="/proc"):
    """Pids of the running ldirectord daemons: processes running the ldirectord script, not the
    per-service children of ``fork=yes``. Read from /proc, not the pid file, which ldirectord does
    not write when supervised or run with ``-d``."""
    found = {}
    for entry in os.listdir(proc):
        if not entry.isdigit():
            continue
        try:
            with open(f"{proc}/{entry}/cmdline", "rb") as fh:
                argv = fh.read().split(b"\0")[:3]
            with open(f"{proc}/{entry}/stat", "rb") as fh:
                ppid = int(fh.read().rsplit(b")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile
        names = [os.path.basename(a) for a in argv]
        # the script itself, or perl running it (perl [-w] .../ldirectord): not a pager or an
        # editor that merely names the file
        if names[0] == b"ldirectord" or (names[0].startswith(b"perl") and b"ldirectord" in names[1:]):
            found[int(entry)] = ppid
    return sorted(pid for pid, ppid in found.items() if ppid not in found)


def _reload_ldirectord():
    """SIGHUP (``ldirectord reload``) to every running ldirectord; the pids signalled. See the
    module docstring for why undrain needs it."""
    pids = []
    for pid in _ldirectord_pids():
        try:
            os.kill(pid, signal.SIGHUP)
        except OSError:
            continue  # gone meanwhile
        pids.append(pid)
    return pids


@_checked
def undrain(server, vip=None, port=None, protocol="tcp", weight=1, maintenancedir=None, wait=0):
    """Let ``server`` take new connections again.

    With an ldirectord maintenance directory the maintenance file is removed and ldirectord
    restores the weight after its next successful health check (``wait`` seconds, if given, are
    spent polling the table for that); if ldirectord may not have seen the drain (a weight is
    still 0 and the drain is younger than its check round), it is reloaded first (``reloaded``:
    the pids signalled; see the module docstring). Without a maintenance directory
    the weight is set to ``weight`` directly.

    CLI Example:

    .. code-block:: bash

        salt lb1 mailha_ipvs.undrain mail1
        salt lb1 mailha_ipvs.undrain 192.0.2.17 port=993 wait=10
    """
    weight = ipvs.check_weight(weight)
    address, found = _targets(server, vip, port, protocol)
    mdir = _maintenance_dir(maintenancedir)
    if os.path.isdir(mdir):
        check_round = lb.check_round(glue.site_from_pillar(__pillar__, __opts__))  # before anything changes
        removed, youngest = [], None
        if port is None:  # the whole server: its per-port drains go too
            names = [address] + [f for f in os.listdir(mdir) if f.startswith(address + ":")]
        else:
            names = [ipvs.endpoint(address, int(port))]
        for name in names:
            path = os.path.join(mdir, name)
            try:
                age = time.time() - os.stat(path).st_mtime
                os.unlink(path)
            except FileNotFoundError:
                continue
            removed.append(path)
            youngest = age if youngest is None else min(youngest, age)
        unseen = youngest is not None and youngest < check_round
        reloaded = []
        if (unseen and any(r.weight == 0 for _, r in found) and glue.root(__opts__, __pillar__) == "/"
                and rehearsal.live(__opts__, __pillar__)):
            reloaded = _reload_ldirectord()
        deadline = time.monotonic() + float(wait)
        while True:
            _, found = _targets(server, vip, port, protocol)
            pending = [f"{vs.key} {r.key}" for vs, r in found if r.weight == 0]
            if not pending or time.monotonic() >= deadline:
                break
            time.sleep(0.5)
        return {"server": address, "via": "ldirectord", "removed": removed,
                "restored": [f"{vs.key} {r.key}" for vs, r in found if r.weight > 0],
                "pending": pending, "reloaded": reloaded}
    restored, left = [], []
    for vs, real in found:
        if real.weight != weight:
            if _set(vs, real, weight):
                restored.append(f"{vs.key} {real.key}")
            else:
                left.append(f"{vs.key} {real.key} weight {real.weight} -> {weight}")
    return _offline({"server": address, "via": "ipvsadm", "restored": restored, "pending": []}, left)


@_checked
def diff(weight=1):
    """Differences between the live IPVS table and what the site model wants (services, their
    schedulers, real servers by direct routing, weights; a weight of 0 is a drain, not a
    difference). An empty list means the table is as specified.

    CLI Example:

    .. code-block:: bash

        salt lb1 mailha_ipvs.diff
    """
    site = glue.site_from_pillar(__pillar__, __opts__)
    return ipvs.diff(_table(), lb.desired_table(site, weight=ipvs.check_weight(weight)))
