"""IPVS direct-routing real server: the node's VIPs on ``lo`` and the ARP sysctls, live and for
reboots.

.. code-block:: yaml

    mailha-dr:
      mailha_dr.configured: []

What the node holds comes from the site model: the db VIP on db nodes only, the mail VIP on mail
nodes only (``mailha:vips:<name>:real_servers``), each as a /32 on ``lo`` labelled ``lo:0``,
``lo:1`` ...; a site VIP the node must not hold is removed from ``lo``; other addresses are never
touched. Live changes use iproute2 (argv, validated values) and ``/proc/sys`` of the current
network namespace. With ``persist`` (default) the ifupdown stanza and the /etc/sysctl.d file are
written too (the same renderers as ``mailha_site.rendered``, so the two never disagree), under
minion config ``mailha_root`` when set.

Rehearsals are offline: under a scratch ``mailha_root`` the state writes the files only and neither
reads nor changes ``lo`` or ``/proc/sys`` (they are this host's, not the rehearsed node's), unless
minion config ``mailha_live: True`` (a network namespace of its own) or ``live=True`` says so.
"""
from salt_mailha import glue, rehearsal
from salt_mailha.core import lb, render
from salt_mailha.core.errors import MailhaError

__virtualname__ = "mailha_dr"

PERSIST_ARTIFACTS = ("dr-loopback", "dr-sysctl")


def __virtual__():
    return __virtualname__


def _read_sysctls():
    out = {}
    for key, _ in lb.DR_SYSCTLS:
        try:
            with open(lb.sysctl_proc_path(key), encoding="ascii") as f:
                out[key] = f.read().strip()
        except FileNotFoundError:
            out[key] = None
    return out


def _run(argv):
    res = __salt__["cmd.run_all"](argv, python_shell=False, ignore_retcode=True)
    if res["retcode"] != 0:
        raise MailhaError(f"{' '.join(argv)} failed (rc={res['retcode']}): "
                          f"{(res.get('stderr') or res.get('stdout') or '').strip()}")
    return res["stdout"]


def _describe(step):
    if step["action"] == "up":
        return "bring lo up"
    if step["action"] == "add":
        return f"add the {step['vip']} VIP {step['address']}/32 on lo as {step['label']}"
    if step["action"] == "del":
        return f"remove the {step['vip']} VIP {step['address']}/{step['prefixlen']} from lo"
    return f"set {step['key']} = {step['new']} (was {step['old']})"


def configured(name, node=None, persist=True, live=None):
    """Make this node a DR real server of exactly the VIPs the model gives it.

    name
        Any state id; not used.
    node
        Model node id (default: minion config ``mailha_node``, else the minion id).
    persist
        Also write ``/etc/network/interfaces.d/mailha-lo0`` and
        ``/etc/sysctl.d/90-mailha-dr.conf`` so the setup survives a reboot.
    live
        Change the running kernel (addresses on lo, /proc/sys). False manages only the files.
        Default: minion config ``mailha_live``, else True on the real root and False in a
        rehearsal (scratch ``mailha_root``).
    """
    skipped = ""
    if live is None:
        live = rehearsal.live(__opts__, __pillar__)
        if not live:
            skipped = f"; lo and /proc/sys were not read or changed: {rehearsal.why(__opts__, __pillar__)}"
    ret = glue.state_ret(name)
    try:
        site = glue.site_from_pillar(__pillar__, __opts__)
        n = glue.this_node(site, __opts__, node)
        plan = []
        if live:
            shown = _run(["ip", "-j", "addr", "show", "dev", "lo"])
            plan = lb.dr_plan(site, n, lb.parse_ip_addr_json(shown), _read_sysctls(),
                              lo_up=lb.link_is_up(shown))
        files = []
        if persist:
            for art_id in PERSIST_ARTIFACTS:
                art = render.artifact(art_id)
                path = glue.under_root(art.path, __opts__, __pillar__)
                content = art.render(site, n)
                if glue.read_text(path) != content or glue.file_mode(path) != art.mode:
                    files.append((art, path, content, glue.read_text(path)))
    except (MailhaError, glue.CommandExecutionError) as exc:
        ret["result"] = False
        ret["comment"] = str(exc)
        return ret

    if not plan and not files:
        held = ", ".join(f"{v.address} ({label})" for label, v in lb.dr_wanted(site, n)) or "no VIP"
        ret["comment"] = (f"{n.id} is already a DR real server of {held}" if live else
                          f"the DR files of {n.id} (a real server of {held}) are already in place{skipped}")
        return ret

    changes = {}
    if any(s["action"] in ("add", "del", "up") for s in plan):
        before = sorted(a["address"] for a in lb.parse_ip_addr_json(shown))
        after = set(before) - {s["address"] for s in plan if s["action"] == "del"}
        after |= {s["address"] for s in plan if s["action"] == "add"}
        changes["lo"] = {"old": before, "new": sorted(after)}
    for s in plan:
        if s["action"] == "sysctl":
            changes[s["key"]] = {"old": s["old"], "new": s["new"]}
    for art, _path, content, old in files:
        changes[art.path] = {"old": None if old is None else "differs", "new": art.mode,
                             "diff": glue.redacted_diff(old, content, art.path, site.secrets())}
    ret["changes"] = changes
    todo = [_describe(s) for s in plan] + [f"write {path}" for _, path, _, _ in files]
    if __opts__["test"]:
        ret["result"] = None
        ret["comment"] = "would " + "; ".join(todo) + skipped
        return ret

    done = []
    try:
        # every argv and path is built (and so validated) before the first change
        steps = [(s, lb.sysctl_proc_path(s["key"]) if s["action"] == "sysctl" else lb.ip_argv(s))
                 for s in plan]
        for s, target in steps:
            if s["action"] == "sysctl":
                with open(target, "w", encoding="ascii") as f:
                    f.write(s["new"])
            else:
                _run(target)
            done.append(_describe(s))
        for art, path, content, _ in files:
            glue.write_atomic(path, content, art.mode)
            done.append(f"write {path}")
    except (MailhaError, OSError) as exc:
        ret["result"] = False
        ret["comment"] = (f"failed after: {'; '.join(done) or 'nothing'}; error: {exc}; "
                          "re-run the state once the cause is fixed")
        return ret
    ret["comment"] = "did: " + "; ".join(done) + skipped
    return ret
