"""MariaDB Galera on this node: status, position, bootstrap/join/recover, monitoring user.

Thin over ``salt_mailha.core.galera`` (parsers and decisions). The local server is reached with
PyMySQL over its unix socket as root (Debian's ``unix_socket`` authentication: no password);
peers are probed over TCP with the monitoring user, whose password only ever travels inside the
PyMySQL connection. Commands run as argv lists (``python_shell=False``); no secret is ever in an
argv.

How mariadbd is started follows ``mailha:galera:launcher``:

* ``systemd``: Debian's ``mariadb.service``, which recovers and passes the start position itself
  (``galera_recovery``); a bootstrap runs the package's ``galera_new_cluster``;
* ``direct``: ``mariadbd --defaults-file=<galera.cnf> ...`` detached in its own session; the
  pidfile from the cnf says whether it runs (hosts without systemd, and the tests).

Every start passes ``--wsrep-start-position`` when the node has a history: restarting after a
crash without it re-forms the cluster under a zeroed state UUID (see REAL-SERVICES.md).

Rehearsals are offline: under a scratch ``mailha_root`` every function that connects to a server,
starts or stops a process or prepares the datadir raises CommandExecutionError saying so; only
``config_path``, ``launcher`` and ``garbd_status`` answer. Minion config ``mailha_live: True``
lifts that (see ``salt_mailha.rehearsal``).
"""

from __future__ import annotations

import logging
import os
import pwd
import signal
import subprocess
import tempfile
import threading
import time

from salt.exceptions import CommandExecutionError

from salt_mailha import glue, rehearsal
from salt_mailha.core import galera as core
from salt_mailha.core.errors import ParseError
from salt_mailha.core.secret import redact

try:
    import pymysql

    HAS_PYMYSQL = True
except ImportError:  # pragma: no cover
    HAS_PYMYSQL = False

log = logging.getLogger(__name__)

__virtualname__ = "mailha_galera"

MARIADBD = "/usr/sbin/mariadbd"
INSTALL_DB = "/usr/bin/mariadb-install-db"
GARBD = "/usr/bin/garbd"
GALERA_NEW_CLUSTER = "/usr/bin/galera_new_cluster"  # MariaDB's bootstrap of mariadb.service
HEALTH_TABLE = core.HEALTH_TABLE


def __virtual__():
    if not HAS_PYMYSQL:
        return (False, "mailha_galera needs PyMySQL: pip install 'pymysql>=1.0.2,<1.1' into Salt's Python "
                       "(a dependency of salt-mailha)")
    return __virtualname__


# ----------------------------------------------------------------------------------- helpers


def _ctx(node=None):
    """(site, node, GaleraSpec, GaleraInstance) of this minion, or CommandExecutionError."""
    site = glue.site_from_pillar(__pillar__, __opts__, node)  # noqa: F821
    n = glue.this_node(site, __opts__, node)  # noqa: F821
    g = site.galera
    if g is None:
        raise CommandExecutionError("pillar mailha:galera is missing: see pillar.example/mailha.sls")
    if not (n.has("db") or n.has("quorum") or n.has("garbd")):
        raise CommandExecutionError(f"{n.id} is not a Galera member (roles {', '.join(n.roles)}); give it "
                                    f"role db or quorum")
    return site, n, g, g.instance(n.id)


def _connect(inst, timeout=2):
    return pymysql.connect(unix_socket=inst.socket, user="root", connect_timeout=timeout,
                           read_timeout=10, write_timeout=10, autocommit=True)


def _query(inst, sql, args=None):
    conn = _connect(inst)
    try:
        with conn.cursor() as cur:
            cur.execute(sql, args)
            return cur.fetchall()
    finally:
        conn.close()


def _read_status(inst):
    """WsrepStatus of the local server, or None when it does not answer on its socket."""
    try:
        rows = _query(inst, "SHOW GLOBAL STATUS LIKE 'wsrep%%'")
    except pymysql.MySQLError:
        return None
    return core.parse_wsrep_status(rows)


def _pid(inst):
    """PID of the running mariadbd from the pidfile, or None (stale pidfile, zombie, no file)."""
    try:
        with open(inst.pidfile, encoding="ascii") as f:
            pid = int(f.read().strip())
    except (OSError, ValueError):
        return None
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            stat = f.read()
    except OSError:
        return None
    comm, state = stat[stat.index("(") + 1:stat.rindex(")")], stat[stat.rindex(")") + 2:][:1]
    if state == "Z" or comm not in ("mariadbd", "mysqld"):
        return None
    return pid


def _grastate(inst):
    path = os.path.join(inst.datadir, "grastate.dat")
    text = glue.read_text(path)
    if text is None:
        return None
    try:
        return core.parse_grastate(text)
    except ParseError as exc:
        raise CommandExecutionError(f"{path}: {exc}") from None


def _run(argv, timeout=120):
    res = __salt__["cmd.run_all"](argv, python_shell=False, timeout=timeout,  # noqa: F821
                                  output_loglevel="debug", ignore_retcode=True)
    return res


def _user_ids(g):
    try:
        pw = pwd.getpwnam(g.user)
    except KeyError:
        raise CommandExecutionError(f"user {g.user!r} (galera:user) does not exist; install "
                                    f"mariadb-server or set galera:user") from None
    return pw.pw_uid, pw.pw_gid


def _recover(g, inst):
    """``mariadbd --wsrep-recover`` into a private log file; the position it logged."""
    uid, gid = _user_ids(g)
    fd, log_path = tempfile.mkstemp(prefix="mailha-wsrep-recover.", suffix=".log")
    os.close(fd)
    try:
        os.chown(log_path, uid, gid)
        res = _run([MARIADBD, f"--defaults-file={inst.config}", "--wsrep-recover",
                    f"--log-error={log_path}"], timeout=300)
        text = glue.read_text(log_path) or ""
        try:
            return core.parse_recovered_position(text)
        except ParseError as exc:
            tail = "\n".join(text.splitlines()[-5:] or res.get("stderr", "").splitlines()[-5:])
            raise CommandExecutionError(f"--wsrep-recover on {inst.datadir} failed (rc {res['retcode']}): "
                                        f"{exc}\n{tail}") from None
    finally:
        os.unlink(log_path)


def _ensure_dirs(g, inst):
    """Directories mariadbd writes to, owned by the service user (created only when missing)."""
    uid, gid = _user_ids(g)
    made = []
    for d in dict.fromkeys([inst.datadir, inst.tmpdir, os.path.dirname(inst.socket),
                            os.path.dirname(inst.pidfile), os.path.dirname(inst.log_error)]):
        if not os.path.isdir(d):
            os.makedirs(d, mode=0o750)
            os.chown(d, uid, gid)
            made.append(d)
    return made


def _initialized(inst):
    return os.path.isdir(os.path.join(inst.datadir, "mysql"))


def _install_db(g, inst):
    res = _run([INSTALL_DB, f"--defaults-file={inst.config}", f"--user={g.user}", "--skip-test-db"], timeout=300)
    if res["retcode"] != 0 or not _initialized(inst):
        raise CommandExecutionError(f"mariadb-install-db into {inst.datadir} failed (rc {res['retcode']}): "
                                    f"{(res['stderr'] or res['stdout'])[-400:]}")


def _reap(proc):
    proc.wait()


def _clean_signals():
    """In the child before exec: default dispositions and an empty mask. A Salt job process may
    ignore SIGCHLD or block signals; mariadbd would inherit that and could not wait for its SST
    scripts (a donor then stays Donor/Desynced) nor stop on SIGTERM."""
    for sig in (signal.SIGCHLD, signal.SIGHUP, signal.SIGINT, signal.SIGTERM, signal.SIGQUIT,
                signal.SIGUSR1, signal.SIGUSR2, signal.SIGPIPE):
        signal.signal(sig, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, [])


def _start(g, inst, extra):
    """Start mariadbd with ``extra`` arguments through the configured launcher."""
    if g.launcher == "systemd":
        # Debian 12's mariadb.service runs galera_recovery itself and passes the recovered
        # --wsrep_start_position. --wsrep-new-cluster reaches the unit through an environment
        # file whose path changed between 10.11 point releases (/run/mysqld/wsrep-new-cluster,
        # /run/mariadb-wsrep-new-cluster), so the package's own galera_new_cluster writes it.
        argv = [GALERA_NEW_CLUSTER] if "--wsrep-new-cluster" in extra else ["systemctl", "start", "mariadb.service"]
        res = _run(argv, timeout=g.join_timeout + 60)
        if res["retcode"] != 0:
            raise CommandExecutionError(f"{' '.join(argv)} failed: {res['stderr'][-400:]}")
        return None
    argv = [MARIADBD, f"--defaults-file={inst.config}", *extra]
    launch_log = os.path.join(os.path.dirname(inst.log_error), "mailha-launch.log")
    with open(launch_log, "ab") as out:
        out.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} mailha_galera: {' '.join(argv)}\n".encode())
        out.flush()
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out,  # noqa: S603
                                start_new_session=True, close_fds=True, preexec_fn=_clean_signals)  # noqa: PLW1509
    # Reap it if it dies while this (long-lived) process runs; after we exit init adopts it.
    threading.Thread(target=_reap, args=(proc,), daemon=True).start()
    return proc


def _log_tail(inst, since, lines=8):
    """Last ERROR lines of the error log written after byte offset ``since``."""
    try:
        with open(inst.log_error, "rb") as f:
            f.seek(since)
            text = f.read().decode(errors="replace")
    except OSError:
        return ""
    errors = [ln for ln in text.splitlines() if "[ERROR]" in ln]
    return "\n".join(errors[-lines:])


def _log_size(inst):
    try:
        return os.path.getsize(inst.log_error)
    except OSError:
        return 0


def _wait_synced(g, inst, proc, since, timeout):
    deadline = time.monotonic() + timeout
    st = None
    while time.monotonic() < deadline:
        st = _read_status(inst)
        if st is not None and st.synced:
            return st
        if proc is not None and proc.poll() is not None:
            raise CommandExecutionError(f"mariadbd exited (rc {proc.returncode}) before it was Synced:\n"
                                        f"{_log_tail(inst, since)}")
        time.sleep(0.2)
    state = st.as_dict() if st else "no answer on " + inst.socket
    raise CommandExecutionError(f"mariadbd did not reach Synced within {timeout}s (last status: {state})")


def _position_arg(position):
    if position in (None, ""):
        return []
    pos = position if isinstance(position, core.GaleraPosition) else core.GaleraPosition.parse(str(position))
    if pos.empty:
        return []
    return [f"--wsrep-start-position={pos}"]


def _markers(inst):
    """The SST marker files (``core.SST_MARKERS``) present in the datadir."""
    return tuple(m for m in core.SST_MARKERS if os.path.lexists(os.path.join(inst.datadir, m)))


LOG_TAIL_BYTES = 4 << 20


def _error_log_tail(inst):
    """The last few MB of the error log (enough for the last state transfer), or None."""
    try:
        with open(inst.log_error, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - LOG_TAIL_BYTES))
            return f.read().decode(errors="replace")
    except OSError:
        return None


def _local_position(g, inst, recover=True):
    """(CopyAssessment, GraState | None, source) of a stopped node.

    ``--wsrep-recover`` runs whenever grastate.dat cannot give the position (missing, empty,
    zero UUID or seqno -1) and the datadir is initialized, so that a datadir holding a donor's
    files without Galera's record of the transfer is caught. On a half-copied datadir (an SST
    marker) the recovered position is only informative, and a failed recovery is no error.
    """
    path = os.path.join(inst.datadir, "grastate.dat")
    text = glue.read_text(path)
    gs = _grastate(inst)
    markers = _markers(inst)
    log_text = _error_log_tail(inst)
    recovered, source = None, "grastate"
    if not _initialized(inst):
        # No system tables: nothing of any history is here (or only the first files of a copy,
        # which the markers and the log tell).
        recovered, source = core.GaleraPosition(core.ZERO_UUID, -1), "no datadir"
    elif recover and (gs is None or gs.seqno < 0):
        try:
            recovered, source = _recover(g, inst), "wsrep-recover"
        except CommandExecutionError:
            if not markers:
                raise
            # a half-copied datadir may not even recover: the markers already say what it is
    assessment = core.assess_copy(text, recovered, markers, log_text)
    if assessment.incomplete:
        source = "incomplete"
    return assessment, gs, source


def _incomplete_evidence(inst):
    """The cheap evidence (markers, error log) that this datadir holds a cut-off transfer."""
    return core.assess_copy(None, None, _markers(inst), _error_log_tail(inst)).incomplete


# ----------------------------------------------------------------------------------- public


@rehearsal.refused_offline("connects to the local MariaDB")
def status(node=None):
    """Where this node's mariadbd stands in its cluster.

    Returns ``running`` (a live mariadbd), ``answering`` (it answered on its socket) and, when it
    answers, the wsrep variables: ``wsrep_cluster_size``, ``wsrep_cluster_status``,
    ``wsrep_local_state_comment``, ``wsrep_ready``, ``wsrep_connected``,
    ``wsrep_cluster_state_uuid``, ``wsrep_last_committed``, plus ``primary`` and ``synced``.

    CLI Example:

    .. code-block:: bash

        salt 'db*' mailha_galera.status
    """
    _, n, g, inst = _ctx(node)
    if n.has("garbd") and not (n.has("db") or n.has("quorum")):
        return {"node": n.id, "garbd": True, "running": _garbd_pid(inst) is not None}
    st = _read_status(inst)
    out = {"node": n.id, "running": st is not None or _pid(inst) is not None, "answering": st is not None}
    if st is not None:
        out.update(st.as_dict())
    return out


@rehearsal.refused_offline("reads the local MariaDB (its socket, mariadbd --wsrep-recover)")
def position(node=None, recover=True):
    """This node's Galera position (``uuid:seqno``) and ``safe_to_bootstrap``.

    A running node reports its live state UUID and last committed seqno. A stopped node reports
    ``grastate.dat``; when that cannot say (seqno -1 after a crash, missing, empty, zero UUID),
    ``mariadbd --wsrep-recover`` reads it from InnoDB (``recover=False`` skips that).

    A stopped node also says whether its datadir is a complete copy of the history
    (``complete``) and, when not, the evidence (``incomplete``): an SST marker file, an
    unfinished state transfer in the error log, a recovered position that grastate.dat
    contradicts. Such a node never bootstraps; it resyncs by full SST.

    CLI Example:

    .. code-block:: bash

        salt 'db*' mailha_galera.position
    """
    _, n, g, inst = _ctx(node)
    st = _read_status(inst)
    gs = _grastate(inst)
    if st is not None or _pid(inst) is not None:
        pos = st.position if st is not None and st.cluster_state_uuid else None
        return {"node": n.id, "running": True, "position": str(pos) if pos else None,
                "uuid": pos.uuid if pos else None, "seqno": pos.seqno if pos else None,
                "safe_to_bootstrap": bool(gs and gs.safe_to_bootstrap), "source": "status",
                "status": st.as_dict() if st else None}
    try:
        assessment, gs, source = _local_position(g, inst, recover=recover)
    except CommandExecutionError as exc:
        return {"node": n.id, "running": False, "position": None, "uuid": None, "seqno": None,
                "safe_to_bootstrap": bool(gs and gs.safe_to_bootstrap), "source": "error", "error": str(exc),
                "complete": None, "incomplete": list(_incomplete_evidence(inst))}
    pos = assessment.position
    return {"node": n.id, "running": False, "position": str(pos) if pos else None,
            "uuid": pos.uuid if pos else None, "seqno": pos.seqno if pos else None,
            "safe_to_bootstrap": bool(gs and gs.safe_to_bootstrap), "source": source,
            "complete": assessment.complete, "incomplete": list(assessment.incomplete)}


def config_path(node=None):
    """Path of this member's galera.cnf (``galera:instances:<node>:config``, else Debian's
    drop-in), for the formula.

    CLI Example:

    .. code-block:: bash

        salt 'db*' mailha_galera.config_path
    """
    return _ctx(node)[3].config


def launcher():
    """How this site starts mariadbd (``galera:launcher``): ``systemd`` or ``direct``, for the
    formula (only a systemd member is enabled at boot).

    CLI Example:

    .. code-block:: bash

        salt 'db*' mailha_galera.launcher
    """
    return _ctx()[2].launcher


@rehearsal.refused_offline("prepares this host's datadir")
def prepare(node=None):
    """Create the instance's directories (owned by ``galera:user``) and, when the datadir is
    empty, initialize it with ``mariadb-install-db``. Needs the rendered galera.cnf in place.

    CLI Example:

    .. code-block:: bash

        salt 'db*' mailha_galera.prepare
    """
    _, n, g, inst = _ctx(node)
    if not os.path.isfile(inst.config):
        raise CommandExecutionError(f"{inst.config} does not exist: apply mailha_galera.configured first")
    made = _ensure_dirs(g, inst)
    installed = False
    if not _initialized(inst):
        _install_db(g, inst)
        installed = True
    return {"node": n.id, "created": made, "initialized": installed}


def _start_checked(g, inst, extra, timeout):
    if _pid(inst) is not None or _read_status(inst) is not None:
        raise CommandExecutionError(f"mariadbd of {inst.datadir} is already running; stop it first")
    if not os.path.isfile(inst.config):
        raise CommandExecutionError(f"{inst.config} does not exist: apply mailha_galera.configured first")
    _ensure_dirs(g, inst)
    if not _initialized(inst):
        _install_db(g, inst)
    since = _log_size(inst)
    proc = _start(g, inst, extra)
    st = _wait_synced(g, inst, proc, since, timeout)
    return st


@rehearsal.refused_offline("starts this host's MariaDB")
def bootstrap(position=None, node=None, timeout=None):
    """Start this node as the first member of a new Primary component (``--wsrep-new-cluster``).

    ``position`` (``uuid:seqno``, from ``position`` or the runner's plan) is passed as
    ``--wsrep-start-position`` so the cluster keeps its history; ``safe_to_bootstrap`` is set
    to 1 in this node's grastate.dat only. Use ``salt-run mailha.galera_recover`` to decide which
    node that is: bootstrapping the wrong one loses transactions.

    CLI Example:

    .. code-block:: bash

        salt db2 mailha_galera.bootstrap position=d84ce8f4-e8c9-11f1-876c-fa62e30020a8:13
    """
    _, n, g, inst = _ctx(node)
    if _pid(inst) is not None or _read_status(inst) is not None:
        raise CommandExecutionError(f"mariadbd of {inst.datadir} is already running; stop it first")
    # The last guard before --wsrep-new-cluster: this datadir must be a complete copy, and hold
    # the history it is asked to continue (a fresh one only for a brand-new cluster).
    assessment, _, _ = _local_position(g, inst)
    if assessment.incomplete:
        raise CommandExecutionError(
            f"refusing to bootstrap {n.id}: its datadir is not a complete copy of the history "
            f"({'; '.join(assessment.incomplete)}). Bootstrap a complete member (salt-run "
            f"mailha.galera_recover); this node then resyncs by full SST (mailha_galera.resync)")
    planned = core.GaleraPosition.parse(str(position)) if position not in (None, "") else None
    have = assessment.position
    if planned is not None and not planned.empty and (
            have is None or have.uuid != planned.uuid or (planned.known and have.known and have.seqno < planned.seqno)):
        raise CommandExecutionError(f"refusing to bootstrap {n.id} at {planned}: its datadir holds "
                                    f"{have or 'no position'}; run salt-run mailha.galera_recover again")
    if (planned is None or planned.empty) and have is not None and not have.empty:
        raise CommandExecutionError(f"refusing to start a new cluster on {n.id}: its datadir holds "
                                    f"{have}; run salt-run mailha.galera_recover")
    extra = ["--wsrep-new-cluster", *_position_arg(position)]
    path = os.path.join(inst.datadir, "grastate.dat")
    text = glue.read_text(path)
    if text is not None and text.strip():
        try:
            new = core.set_safe_to_bootstrap(text, True)
        except ParseError as exc:
            raise CommandExecutionError(f"{path}: {exc}") from None
        if new != text:
            uid, gid = _user_ids(g)
            glue.write_atomic(path, new, "0660")
            os.chown(path, uid, gid)
    st = _start_checked(g, inst, extra, timeout or g.join_timeout)
    return {"node": n.id, "action": "bootstrap", "position": str(position) if position else None, **st.as_dict()}


@rehearsal.refused_offline("starts this host's MariaDB")
def join(position=None, node=None, timeout=None):
    """Start this node and join the running Primary component (IST when ``position`` is given and
    the donor's gcache still holds it, else SST).

    CLI Example:

    .. code-block:: bash

        salt db3 mailha_galera.join position=d84ce8f4-e8c9-11f1-876c-fa62e30020a8:11
    """
    site, n, g, inst = _ctx(node)
    local = core.GaleraPosition.parse(str(position)) if position not in (None, "") else None
    _check_history(site, n, g, local)
    st = _start_checked(g, inst, _position_arg(position), timeout or g.join_timeout)
    return {"node": n.id, "action": "join", "position": str(position) if position else None, **st.as_dict()}


def _check_history(site, n, g, local):
    """Refuse to join a Primary component of another cluster UUID than ``local``'s."""
    if local is None or local.empty:
        return
    for m in site.galera_members():
        if m.id == n.id:
            continue
        p = _probe_peer(g, m.address(g.network), g.instance(m.id).port, 1.0)
        if p.get("primary"):
            problem = core.check_history_match(local, p.get("uuid"))
            if problem:
                raise CommandExecutionError(f"refusing to start {n.id}: {problem} (asked {m.id})")
            return


@rehearsal.refused_offline("starts this host's MariaDB")
def recover(node=None, timeout=None):
    """Recover this stopped node's position (grastate.dat, else ``--wsrep-recover``) and start
    it with ``--wsrep-start-position`` to rejoin the Primary component.

    CLI Example:

    .. code-block:: bash

        salt db3 mailha_galera.recover
    """
    site, n, g, inst = _ctx(node)
    assessment, _, source = _local_position(g, inst)
    if not assessment.incomplete:
        _check_history(site, n, g, assessment.position)
    if assessment.incomplete:
        out = resync(node=node, timeout=timeout)
        out["evidence"] = list(assessment.incomplete)
        return out
    pos = assessment.position
    st = _start_checked(g, inst, _position_arg(pos), timeout or g.join_timeout)
    return {"node": n.id, "action": "recover", "position": str(pos) if pos else None, "source": source,
            **st.as_dict()}


RESYNC_GRASTATE = (f"# GALERA saved state\nversion: 2.1\nuuid:    {core.ZERO_UUID}\nseqno:   -1\n"
                   "safe_to_bootstrap: 0\n")


@rehearsal.refused_offline("starts this host's MariaDB")
def resync(node=None, timeout=None):
    """Discard this stopped node's copy and rejoin the Primary component by a full state
    transfer (SST): grastate.dat is set to the zero UUID (what Galera itself writes after a
    failed transfer; the old file is kept as ``grastate.dat.mailha-resync``), then mariadbd
    starts without a start position, so it can never catch up by IST from a position its
    partial data does not hold. For a node whose last transfer was cut off
    (``position`` reports ``incomplete``); ``salt-run mailha.galera_recover`` calls it.

    CLI Example:

    .. code-block:: bash

        salt db1 mailha_galera.resync
    """
    _, n, g, inst = _ctx(node)
    if _pid(inst) is not None or _read_status(inst) is not None:
        raise CommandExecutionError(f"mariadbd of {inst.datadir} is already running; stop it first")
    path = os.path.join(inst.datadir, "grastate.dat")
    old = glue.read_text(path)
    if os.path.isdir(inst.datadir) and old != RESYNC_GRASTATE:
        uid, gid = _user_ids(g)
        if old is not None:
            glue.write_atomic(path + ".mailha-resync", old, "0660")
        glue.write_atomic(path, RESYNC_GRASTATE, "0660")
        os.chown(path, uid, gid)
    st = _start_checked(g, inst, [], timeout or g.join_timeout)
    return {"node": n.id, "action": "resync", "position": None, **st.as_dict()}


@rehearsal.refused_offline("changes the local MariaDB")
def pc_bootstrap(node=None):
    """Promote this running, non-Primary node to a new Primary component
    (``pc.bootstrap=YES``): the other running members join it.

    CLI Example:

    .. code-block:: bash

        salt db2 mailha_galera.pc_bootstrap
    """
    _, n, g, inst = _ctx(node)
    _query(inst, "SET GLOBAL wsrep_provider_options='pc.bootstrap=YES'")
    st = _wait_synced(g, inst, None, _log_size(inst), 30)
    return {"node": n.id, "action": "pc_bootstrap", **st.as_dict()}


@rehearsal.refused_offline("stops this host's MariaDB")
def stop(node=None, timeout=120):
    """Stop this node's mariadbd cleanly (SIGTERM, or ``systemctl stop mariadb``).

    CLI Example:

    .. code-block:: bash

        salt db3 mailha_galera.stop
    """
    _, n, g, inst = _ctx(node)
    if g.launcher == "systemd":
        res = _run(["systemctl", "stop", "mariadb"], timeout=timeout)
        return {"node": n.id, "stopped": res["retcode"] == 0}
    pid = _pid(inst)
    if pid is None:
        return {"node": n.id, "stopped": False, "comment": "not running"}
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _pid(inst) is not None and time.monotonic() < deadline:
        time.sleep(0.1)
    if _pid(inst) is not None:
        raise CommandExecutionError(f"mariadbd (pid {pid}) did not stop within {timeout}s")
    return {"node": n.id, "stopped": True, "pid": pid}


@rehearsal.refused_offline("connects to the other members")
def peers(node=None, timeout=1.0):
    """Ask every other full member over TCP (as the monitoring user) whether it is in a Primary
    component. Returns ``{member: {"answering", "primary", "synced", "size"}}``.

    CLI Example:

    .. code-block:: bash

        salt db1 mailha_galera.peers
    """
    site, n, g, _ = _ctx(node)
    out = {}
    for m in site.galera_members():
        if m.id == n.id:
            continue
        out[m.id] = _probe_peer(g, m.address(g.network), g.instance(m.id).port, timeout)
    return out


def _probe_peer(g, addr, port, timeout):
    if g.monitor is None:
        return {"answering": False, "error": "no galera:monitor user to ask with"}
    try:
        conn = pymysql.connect(host=addr, port=port, user=g.monitor.user, password=g.monitor.password.reveal(),
                               connect_timeout=timeout, read_timeout=5)
    except pymysql.MySQLError as exc:
        code = exc.args[0] if exc.args else None
        # 2003/2013: nothing listens. Anything else (1045 access denied, 1047 not ready) means a
        # mariadbd answers there but cannot show us a Primary component.
        answering = code not in (2003, 2006, 2013, None)
        return {"answering": answering, "primary": False, "error": f"MySQL error {code}"}
    try:
        with conn.cursor() as cur:
            cur.execute("SHOW GLOBAL STATUS LIKE 'wsrep%%'")
            st = core.parse_wsrep_status(cur.fetchall())
    except (pymysql.MySQLError, ParseError) as exc:
        return {"answering": True, "primary": False, "error": str(exc.args[0] if exc.args else exc)}
    finally:
        conn.close()
    return {"answering": True, "primary": st.primary, "synced": st.synced, "size": st.cluster_size,
            "uuid": st.cluster_state_uuid, "seqno": st.last_committed}


def _account_todo(cur, user, host, password):
    """``["user"]`` (missing), ``["password"]`` (another password) or ``[]`` for ``user@host``."""
    cur.execute("SELECT authentication_string = PASSWORD(%s) FROM mysql.user WHERE User=%s AND Host=%s",
                (password.reveal(), user, host))
    row = cur.fetchone()
    return ["user"] if row is None else ["password"] if not row[0] else []


def _account_apply(cur, user, host, password, todo):
    """Create ``user@host`` or set its password, as ``_account_todo`` found; the password only
    ever travels as a query parameter."""
    if "user" in todo:
        cur.execute("CREATE USER %s@%s IDENTIFIED BY %s", (user, host, password.reveal()))
    elif "password" in todo:
        cur.execute("ALTER USER %s@%s IDENTIFIED BY %s", (user, host, password.reveal()))


@rehearsal.refused_offline("connects to the local MariaDB")
def monitor_present(node=None, test=False):
    """Ensure the monitoring database, its one-row table and the monitoring user (SELECT on that
    database only) exist with the pillar's password. Run on a Synced member: Galera replicates it.
    Returns ``{"changed": [what], ...}``; the password is never returned.

    CLI Example:

    .. code-block:: bash

        salt db1 mailha_galera.monitor_present
    """
    site, n, g, inst = _ctx(node)
    if g.monitor is None:
        raise CommandExecutionError("pillar mailha:galera:monitor is required for the balancer's check")
    try:
        return _monitor_present(n, g, inst, test)
    except pymysql.MySQLError as exc:
        detail = redact(str(exc.args[-1] if exc.args else exc), site.secrets())
        raise CommandExecutionError(f"managing the monitoring user on {n.id} failed: {detail}") from None


def _monitor_present(n, g, inst, test):
    mon = g.monitor
    db = mon.database  # validated by the model: \w{1,64}
    conn = _connect(inst)
    todo = []
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME=%s", (db,))
            if not cur.fetchone()[0]:
                todo.append("database")
            else:
                cur.execute("SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA=%s AND TABLE_NAME=%s",
                            (db, HEALTH_TABLE))
                if not cur.fetchone()[0]:
                    todo.append("table")
                else:
                    cur.execute(f"SELECT COUNT(*) FROM `{db}`.`{HEALTH_TABLE}`")
                    if cur.fetchone()[0] != 1:
                        todo.append("row")
            todo += _account_todo(cur, mon.user, "%", mon.password)
            cur.execute("SELECT COUNT(*) FROM information_schema.SCHEMA_PRIVILEGES WHERE GRANTEE=%s AND "
                        "TABLE_SCHEMA=%s AND PRIVILEGE_TYPE='SELECT'", (f"'{mon.user}'@'%'", db))
            if not cur.fetchone()[0]:
                todo.append("grant")
            if test or not todo:
                return {"node": n.id, "changed": todo, "test": bool(test)}
            if "database" in todo:
                cur.execute(f"CREATE DATABASE IF NOT EXISTS `{db}`")
            if {"database", "table"} & set(todo):
                cur.execute(f"CREATE TABLE IF NOT EXISTS `{db}`.`{HEALTH_TABLE}` "
                            "(id INT NOT NULL PRIMARY KEY, ok TINYINT NOT NULL) ENGINE=InnoDB")
            if {"database", "table", "row"} & set(todo):
                cur.execute(f"DELETE FROM `{db}`.`{HEALTH_TABLE}`")
                cur.execute(f"INSERT INTO `{db}`.`{HEALTH_TABLE}` (id, ok) VALUES (1, 1)")
            _account_apply(cur, mon.user, "%", mon.password, todo)
            cur.execute(f"GRANT SELECT ON `{db}`.* TO %s@'%%'", (mon.user,))
    finally:
        conn.close()
    return {"node": n.id, "changed": todo, "test": False}


# What the mariabackup SST script's backup needs on the donor (MariaDB's mariabackup SST docs;
# BINLOG MONITOR is 10.5+'s name of REPLICATION CLIENT). It connects over the local socket.
SST_PRIVILEGES = ("RELOAD", "PROCESS", "LOCK TABLES", "BINLOG MONITOR")


@rehearsal.refused_offline("connects to the local MariaDB")
def sst_user_present(node=None, test=False):
    """Ensure the account ``wsrep_sst_auth`` names (``galera:sst_user``@localhost with
    ``galera:sst_password``) exists with what a mariabackup SST needs on the donor
    (RELOAD, PROCESS, LOCK TABLES, BINLOG MONITOR). Run on a Synced member: Galera replicates it.
    rsync SST uses no account: nothing to do. Returns ``{"changed": [what]}``; the password is
    never returned.

    CLI Example:

    .. code-block:: bash

        salt db1 mailha_galera.sst_user_present
    """
    site, n, g, inst = _ctx(node)
    if g.sst_method != "mariabackup":
        return {"node": n.id, "changed": [], "test": bool(test), "needed": False}
    try:
        return {**_sst_user_present(n, g, inst, test), "needed": True}
    except pymysql.MySQLError as exc:
        detail = redact(str(exc.args[-1] if exc.args else exc), site.secrets())
        raise CommandExecutionError(f"managing the SST account on {n.id} failed: {detail}") from None


def _sst_user_present(n, g, inst, test):
    conn = _connect(inst)
    todo = []
    try:
        with conn.cursor() as cur:
            todo += _account_todo(cur, g.sst_user, "localhost", g.sst_password)
            cur.execute("SELECT PRIVILEGE_TYPE FROM information_schema.USER_PRIVILEGES WHERE GRANTEE=%s",
                        (f"'{g.sst_user}'@'localhost'",))
            have = {r[0] for r in cur.fetchall()}
            if not set(SST_PRIVILEGES) <= have:
                todo.append("grant")
            if test or not todo:
                return {"node": n.id, "changed": todo, "test": bool(test)}
            _account_apply(cur, g.sst_user, "localhost", g.sst_password, todo)
            cur.execute(f"GRANT {', '.join(SST_PRIVILEGES)} ON *.* TO %s@'localhost'", (g.sst_user,))
    finally:
        conn.close()
    return {"node": n.id, "changed": todo, "test": False}


@rehearsal.refused_offline("connects to a MariaDB over TCP")
def health(node=None, host=None, port=None, timeout=2.0):
    """Run the balancer's Galera-aware check against this node over TCP as the monitoring user
    (``core.galera.health_query``): healthy only while Synced, ready and Primary, so a
    Donor/Desynced or non-Primary node takes no traffic.

    CLI Example:

    .. code-block:: bash

        salt db1 mailha_galera.health
    """
    site, n, g, inst = _ctx(node)
    if g.monitor is None:
        raise CommandExecutionError("pillar mailha:galera:monitor is required for the health check")
    addr = host or n.address(g.network)
    port = int(port or inst.port)
    try:
        conn = pymysql.connect(host=addr, port=port, user=g.monitor.user, password=g.monitor.password.reveal(),
                               connect_timeout=timeout, read_timeout=5)
    except pymysql.MySQLError as exc:
        return {"node": n.id, "healthy": False, "detail": f"cannot log in: {exc.args[-1] if exc.args else exc}"}
    try:
        with conn.cursor() as cur:
            cur.execute(core.health_query(g.monitor.database))
            rows = cur.fetchall()
    except pymysql.MySQLError as exc:
        return {"node": n.id, "healthy": False, "detail": f"query failed: {exc.args[-1] if exc.args else exc}"}
    finally:
        conn.close()
    if not rows:
        return {"node": n.id, "healthy": False, "detail": "not Synced in a Primary component"}
    return {"node": n.id, "healthy": True, "detail": "Synced in a Primary component"}


# ----------------------------------------------------------------------------------- garbd


def _garbd_pidfile(inst):
    return os.path.join(os.path.dirname(inst.pidfile), "garbd.pid")


def _garbd_pid(inst):
    try:
        with open(_garbd_pidfile(inst), encoding="ascii") as f:
            pid = int(f.read().strip())
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            stat = f.read()
    except (OSError, ValueError):
        return None
    comm, state = stat[stat.index("(") + 1:stat.rindex(")")], stat[stat.rindex(")") + 2:][:1]
    return pid if comm == "garbd" and state != "Z" else None


def garbd_status(node=None):
    """Whether this node's garbd (role garbd) runs.

    CLI Example:

    .. code-block:: bash

        salt filer1 mailha_galera.garbd_status
    """
    _, n, _, inst = _ctx(node)
    pid = _garbd_pid(inst)
    return {"node": n.id, "running": pid is not None, "pid": pid}


@rehearsal.refused_offline("starts garbd on this host")
def garbd_start(node=None):
    """Start garbd for this node (role garbd) detached, with its own pidfile and log next to the
    instance's pidfile/log (``galera:instances``), joined to the full members' group.

    CLI Example:

    .. code-block:: bash

        salt filer1 mailha_galera.garbd_start
    """
    site, n, g, inst = _ctx(node)
    if not n.has("garbd"):
        raise CommandExecutionError(f"{n.id} does not have role garbd")
    if _garbd_pid(inst) is not None:
        return {"node": n.id, "started": False, "comment": "already running"}
    for d in {os.path.dirname(inst.pidfile), os.path.dirname(inst.log_error)}:
        os.makedirs(d, exist_ok=True)
    log_path = os.path.join(os.path.dirname(inst.log_error), "garbd.log")
    argv = core.garbd_argv(site, n, log_path)
    argv[0] = GARBD
    with open(log_path, "ab") as out:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out,  # noqa: S603
                                start_new_session=True, close_fds=True, preexec_fn=_clean_signals)  # noqa: PLW1509
    threading.Thread(target=_reap, args=(proc,), daemon=True).start()
    glue.write_atomic(_garbd_pidfile(inst), f"{proc.pid}\n", "0644")
    time.sleep(0.3)
    if proc.poll() is not None:
        raise CommandExecutionError(f"garbd exited at once (rc {proc.returncode}); see {log_path}")
    return {"node": n.id, "started": True, "pid": proc.pid}
