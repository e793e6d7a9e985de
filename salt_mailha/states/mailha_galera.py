"""Galera on a db/quorum node: its galera.cnf, a Synced member of a Primary component, the
monitoring user of the balancer's check, and garbd on an arbitrator node.

.. code-block:: yaml

    galera-cnf:
      mailha_galera.configured: []

    galera-synced:
      mailha_galera.synced:
        - require:
          - mailha_galera: galera-cnf

    galera-monitor:
      mailha_galera.monitor_present:
        - require:
          - mailha_galera: galera-synced

    galera-arbitrator:            # on the node with role garbd
      mailha_galera.arbitrator_running: []

``synced`` is safe to apply on every member at once: only ``galera:bootstrap_node`` ever starts a
brand-new cluster, and only when its datadir has no Galera history (grastate.dat and InnoDB agree),
holds no cut-off state transfer, and no other member answers; a member whose copy is incomplete
rejoins by full SST;
the others wait (bounded by ``galera:join_timeout``) for a Primary component and join it with
their own ``--wsrep-start-position``. A cluster that stopped as a whole is never bootstrapped by a
state: that is ``salt-run mailha.galera_recover``, which compares every member's position first.
With ``test=True`` nothing is touched (not even ``--wsrep-recover``): the comment says what
would happen.

Rehearsals are offline: under a scratch ``mailha_root`` only ``configured`` acts (it writes
galera.cnf under that root). ``synced``, ``monitor_present``, ``sst_user_present`` and
``arbitrator_running`` connect to no server, ask no peer and start nothing; they return
``result`` True, no changes and a comment starting ``REHEARSAL, nothing done`` that says what
they would ensure. Minion config ``mailha_live: True`` lifts that (see ``salt_mailha.rehearsal``).
"""

import os
import time

from salt.exceptions import CommandExecutionError

from salt_mailha import glue, rehearsal
from salt_mailha.core import galera as core
from salt_mailha.core.errors import MailhaError

__virtualname__ = "mailha_galera"

CNF_MODE = "0640"  # root:<galera user>: the SST scripts (run as that user) read it too


def __virtual__():
    if "mailha_galera.status" not in __salt__:  # noqa: F821
        return (False, "the mailha_galera execution module did not load (PyMySQL missing?)")
    return __virtualname__


def _ctx(node):
    site = glue.site_from_pillar(__pillar__, __opts__, node)  # noqa: F821
    n = glue.this_node(site, __opts__, node)  # noqa: F821
    if site.galera is None:
        raise CommandExecutionError("pillar mailha:galera is missing: see pillar.example/mailha.sls")
    return site, n, site.galera, site.galera.instance(n.id)


def _rehearsed(name, what):
    """The return of a live step left out of a rehearsal, or None when live (see the module doc)."""
    if rehearsal.live(__opts__, __pillar__):  # noqa: F821
        return None
    ret = glue.state_ret(name)
    ret["comment"] = f"REHEARSAL, nothing done: {what}; {rehearsal.why(__opts__, __pillar__)}"  # noqa: F821
    return ret


def _fail(ret, msg):
    ret["result"] = False
    ret["comment"] = str(msg)
    ret["changes"] = {}
    return ret


def configured(name, node=None):
    """galera.cnf of this member at ``name``, rendered from the model: mode 0640, owned by root
    and the service user's group (the SST scripts read it). ``name`` must be the member's
    ``galera:instances:<node>:config`` (Debian's drop-in
    ``/etc/mysql/mariadb.conf.d/60-mailha-galera.cnf`` by default; ``mailha_galera.config_path``
    tells it); it is prefixed by minion config ``mailha_root`` when set. Changes show a diff
    with secrets redacted."""
    ret = glue.state_ret(name)
    try:
        site, n, g, inst = _ctx(node)
        content = core.render_galera_cnf(site, n)
        if name != inst.config:
            raise MailhaError(f"name {name!r} is not the galera.cnf path of {n.id} ({inst.config}); set "
                              f"mailha:galera:instances:{n.id}:config or use that path")
    except (MailhaError, CommandExecutionError) as exc:
        return _fail(ret, exc)
    path = glue.under_root(name, __opts__, __pillar__)  # noqa: F821
    old = glue.read_text(path)
    old_mode = glue.file_mode(path)
    if old == content and old_mode == CNF_MODE:
        ret["comment"] = f"{path} is already as rendered"
        return ret
    ret["changes"] = {
        "old": None if old is None else {"mode": old_mode, "lines": len(old.splitlines())},
        "new": {"mode": CNF_MODE, "lines": len(content.splitlines())},
    }
    if old != content:
        ret["changes"]["diff"] = glue.redacted_diff(old, content, path, site.secrets())
    verb = "create" if old is None else "update"
    if __opts__["test"]:  # noqa: F821
        ret["result"] = None
        ret["comment"] = f"would {verb} {path}"
        return ret
    try:
        import grp  # noqa: PLC0415

        gid = grp.getgrnam(g.user).gr_gid
    except KeyError:
        return _fail(ret, f"group {g.user!r} (galera:user) does not exist; install mariadb-server")
    try:
        glue.write_atomic(path, content, CNF_MODE)
        os.chown(path, 0, gid)
    except OSError as exc:
        return _fail(ret, f"could not write {path}: {exc.strerror}")
    ret["comment"] = f"{verb}d {path}"
    return ret


def _wait_for_primary(peers_fn, timeout, interval=1.0):
    """Poll the other members until one answers from a Primary component; bounded."""
    deadline = time.monotonic() + timeout
    while True:
        found = {m: p for m, p in peers_fn().items() if p.get("primary")}
        if found or time.monotonic() >= deadline:
            return found
        time.sleep(interval)


def synced(name="galera", node=None, timeout=None):
    """This member runs and is Synced in a Primary component.

    Already Synced: no changes. Running but still Joining/Joined/Donor: waits (bounded) for
    Synced. Running outside a Primary component: fails, naming ``galera_recover``. Stopped:

    * another member answers from a Primary component -> join it with this node's position
      (grastate.dat, else ``--wsrep-recover``), so a crashed node comes back by IST;
    * this node is ``galera:bootstrap_node``, its datadir has no Galera history and no member
      answers -> bootstrap a new cluster and create the monitoring user (the others need it to
      see the Primary component);
    * otherwise wait up to ``timeout`` (default ``galera:join_timeout``) for a Primary
      component, then join; none -> fail: the whole cluster is down, run
      ``salt-run mailha.galera_recover``.
    """
    rehearsed = _rehearsed(name, "would make this member Synced in a Primary component (join, or "
                                 "bootstrap a new cluster on galera:bootstrap_node); no server or peer asked")
    if rehearsed:
        return rehearsed
    ret = glue.state_ret(name)
    mod = __salt__  # noqa: F821
    test = __opts__["test"]  # noqa: F821
    try:
        site, n, g, inst = _ctx(node)
        if not (n.has("db") or n.has("quorum")):
            raise CommandExecutionError(f"{n.id} is not a full Galera member (role db or quorum)")
        timeout = int(timeout or g.join_timeout)
        st = mod["mailha_galera.status"](node=node)
    except (MailhaError, CommandExecutionError) as exc:
        return _fail(ret, exc)

    if st.get("synced"):
        ret["comment"] = f"{n.id} is already Synced in a Primary component (size {st['wsrep_cluster_size']})"
        return ret
    if st["running"]:
        if st.get("answering") and st.get("wsrep_cluster_status") not in ("Primary", None) and \
                st.get("wsrep_local_state_comment") not in ("Joining", "Joined", "Donor/Desynced"):
            return _fail(ret, f"{n.id} runs outside a Primary component ({st.get('wsrep_cluster_status')}, "
                              f"{st.get('wsrep_local_state_comment')}); run salt-run mailha.galera_recover")
        state = st.get("wsrep_local_state_comment") or "starting"
        if test:
            ret["result"] = None
            ret["comment"] = f"would wait up to {timeout}s for {n.id} ({state}) to be Synced"
            ret["changes"] = {"old": state, "new": "Synced"}
            return ret
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            st = mod["mailha_galera.status"](node=node)
            if st.get("synced"):
                ret["comment"] = f"{n.id} became Synced (was {state})"
                ret["changes"] = {"old": state, "new": "Synced"}
                return ret
            time.sleep(0.5)
        return _fail(ret, f"{n.id} did not become Synced within {timeout}s (state {state})")

    # Stopped: where does it stand, and who is up?
    try:
        if not os.path.isfile(inst.config) and not test:
            raise CommandExecutionError(f"{inst.config} does not exist: apply mailha_galera.configured first")
        pos = mod["mailha_galera.position"](node=node, recover=False)
        peers = mod["mailha_galera.peers"](node=node)
    except (MailhaError, CommandExecutionError) as exc:
        return _fail(ret, exc)
    has_history = pos.get("uuid") not in (None, core.ZERO_UUID)
    incomplete = tuple(pos.get("incomplete") or ())
    primary = sorted(m for m, p in peers.items() if p.get("primary"))
    answering = sorted(m for m, p in peers.items() if p.get("answering"))
    old = {"running": False, "position": pos.get("position")}
    if incomplete:
        old["incomplete"] = list(incomplete)
    plan, why = core.plan_first_start(n.id, g.bootstrap_node, incomplete, has_history, primary, answering)
    if plan == "bootstrap" and not test:
        # grastate.dat says "no history"; a half-copied datadir says the same while InnoDB holds
        # a donor's files, so InnoDB must agree before a new cluster starts from this datadir.
        try:
            full = mod["mailha_galera.position"](node=node, recover=True)
        except (MailhaError, CommandExecutionError) as exc:
            return _fail(ret, exc)
        if full.get("error"):
            return _fail(ret, f"cannot tell whether {n.id} holds a history: {full['error']}")
        plan, why = core.plan_first_start(n.id, g.bootstrap_node, tuple(full.get("incomplete") or ()),
                                          full.get("uuid") not in (None, core.ZERO_UUID), primary, answering)
    if plan == "refuse":
        return _fail(ret, why)
    if plan == "wait" and has_history:
        why += f" ({n.id} has history {pos['position']})"

    if test:
        ret["result"] = None
        recov = (" with its position from --wsrep-recover" if pos.get("seqno") == -1 and has_history
                 else f" at {pos['position']}" if has_history else "")
        ret["comment"] = {
            "join": f"would start {n.id} and join the Primary component{recov} ({why})",
            "resync": f"would start {n.id} and rejoin by full SST, discarding its incomplete copy ({why})",
            "bootstrap": f"would bootstrap a new cluster on {n.id} once --wsrep-recover confirms its "
                         f"datadir holds no history ({why})",
            "wait": f"would wait up to {timeout}s for a Primary component, then join{recov} ({why})",
        }[plan]
        ret["changes"] = {"old": old, "new": {"running": True, "state": "Synced", "action": plan}}
        return ret

    try:
        prepared = mod["mailha_galera.prepare"](node=node)
        if plan == "wait":
            found = _wait_for_primary(lambda: mod["mailha_galera.peers"](node=node), timeout)
            if not found:
                return _fail(ret, f"no member answered from a Primary component within {timeout}s ({why}); "
                                  f"if the whole cluster is down run salt-run mailha.galera_recover")
            plan, why = "join", f"{', '.join(sorted(found))} in a Primary component"
        if plan == "bootstrap":
            res = mod["mailha_galera.bootstrap"](node=node, timeout=timeout)
            # Before the monitoring user: the others see the Primary component only through it,
            # and then their first SST needs this account on the donor.
            sst = mod["mailha_galera.sst_user_present"](node=node)["changed"]
            if sst:
                res["sst_user"] = sst
            if g.monitor is not None:
                res["monitor"] = mod["mailha_galera.monitor_present"](node=node)["changed"]
        else:
            res = mod["mailha_galera.recover"](node=node, timeout=timeout)
    except (MailhaError, CommandExecutionError) as exc:
        return _fail(ret, f"{plan} of {n.id} failed: {exc}")
    if res.get("action") == "resync":
        plan, why = "resync", f"{why}; its copy was incomplete: {'; '.join(res.get('evidence') or incomplete)}"
    new = {"running": True, "state": res["wsrep_local_state_comment"], "action": plan,
           "position": res.get("position"), "size": res["wsrep_cluster_size"]}
    if prepared.get("initialized"):
        new["initialized"] = True
    for key in ("sst_user", "monitor"):
        if res.get(key):
            new[key] = res[key]
    ret["changes"] = {"old": old, "new": new}
    ret["comment"] = (f"bootstrapped a new cluster on {n.id} ({why})" if plan == "bootstrap"
                      else f"{n.id} rejoined by full SST (size {res['wsrep_cluster_size']}; {why})"
                      if plan == "resync"
                      else f"{n.id} joined the Primary component (size {res['wsrep_cluster_size']}; {why})")
    return ret


def monitor_present(name="galera-monitor", node=None):
    """The monitoring database, its one-row table and the monitoring user (``galera:monitor``)
    exist, with the pillar's password. Apply on a Synced member; Galera replicates it. The
    password never appears in changes or comments: a change reads ``password``."""
    rehearsed = _rehearsed(name, "would ensure the monitoring database, table and user (galera:monitor) "
                                 "on the local server; not connected")
    if rehearsed:
        return rehearsed
    ret = glue.state_ret(name)
    mod = __salt__  # noqa: F821
    try:
        if not mod["mailha_galera.status"](node=node).get("answering"):
            if __opts__["test"]:  # noqa: F821
                ret["result"] = None
                ret["comment"] = "would create the monitoring database, table and user once mariadbd runs"
                ret["changes"] = {"old": None, "new": {"fix": ["database", "table", "row", "user", "grant"]}}
                return ret
            return _fail(ret, "mariadbd does not answer on its socket: apply mailha_galera.synced first")
        todo = mod["mailha_galera.monitor_present"](node=node, test=True)["changed"]
        if not todo:
            ret["comment"] = "the monitoring database, table and user are already present"
            return ret
        ret["changes"] = {"old": None, "new": {"fix": todo}}
        if __opts__["test"]:  # noqa: F821
            ret["result"] = None
            ret["comment"] = f"would create or fix: {', '.join(todo)}"
            return ret
        done = mod["mailha_galera.monitor_present"](node=node)["changed"]
    except (MailhaError, CommandExecutionError) as exc:
        return _fail(ret, exc)
    except Exception as exc:  # noqa: BLE001 - a DB error (node not Synced) is a failed state
        return _fail(ret, f"could not reach the local server to manage the monitoring user: "
                          f"{type(exc).__name__} {getattr(exc, 'args', [''])[0]}")
    ret["changes"] = {"old": None, "new": {"fix": done}}
    ret["comment"] = f"created or fixed: {', '.join(done)}"
    return ret


def sst_user_present(name="galera-sst-user", node=None):
    """The account ``wsrep_sst_auth`` names exists with the pillar's password and what a
    mariabackup SST needs (``galera:sst_method: mariabackup``; rsync needs none). Apply on a
    Synced member; Galera replicates it. The password never appears: a change reads
    ``password``.

    .. code-block:: yaml

        galera-sst-user:
          mailha_galera.sst_user_present: []
    """
    rehearsed = _rehearsed(name, "would ensure the SST account of wsrep_sst_auth on the local server; "
                                 "not connected")
    if rehearsed:
        return rehearsed
    ret = glue.state_ret(name)
    mod = __salt__  # noqa: F821
    test = __opts__["test"]  # noqa: F821
    try:
        if not mod["mailha_galera.status"](node=node).get("answering"):
            if test:
                ret["result"] = None
                ret["comment"] = "would create the SST account once mariadbd runs"
                return ret
            return _fail(ret, "mariadbd does not answer on its socket: apply mailha_galera.synced first")
        got = mod["mailha_galera.sst_user_present"](node=node, test=True)
        if not got["needed"]:
            ret["comment"] = "rsync SST needs no account"
            return ret
        if not got["changed"]:
            ret["comment"] = "the SST account is already present"
            return ret
        ret["changes"] = {"old": None, "new": {"fix": got["changed"]}}
        if test:
            ret["result"] = None
            ret["comment"] = f"would create or fix the SST account: {', '.join(got['changed'])}"
            return ret
        done = mod["mailha_galera.sst_user_present"](node=node)["changed"]
    except (MailhaError, CommandExecutionError) as exc:
        return _fail(ret, exc)
    ret["changes"] = {"old": None, "new": {"fix": done}}
    ret["comment"] = f"created or fixed the SST account: {', '.join(done)}"
    return ret


def arbitrator_running(name="garbd", node=None):
    """garbd runs on this node (role garbd) as the group's tie-breaking voter."""
    rehearsed = _rehearsed(name, "would ensure garbd runs and joins the group; not checked or started")
    if rehearsed:
        return rehearsed
    ret = glue.state_ret(name)
    mod = __salt__  # noqa: F821
    try:
        st = mod["mailha_galera.garbd_status"](node=node)
        if st["running"]:
            ret["comment"] = f"garbd already runs (pid {st['pid']})"
            return ret
        ret["changes"] = {"old": {"running": False}, "new": {"running": True}}
        if __opts__["test"]:  # noqa: F821
            ret["result"] = None
            ret["comment"] = "would start garbd"
            return ret
        res = mod["mailha_galera.garbd_start"](node=node)
    except (MailhaError, CommandExecutionError) as exc:
        return _fail(ret, exc)
    ret["comment"] = f"started garbd (pid {res['pid']})"
    return ret
