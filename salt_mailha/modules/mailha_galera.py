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

from salt_mailha import glue
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
    site = glue.site_from_pillar(__pillar__)  # noqa: F821
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


def _local_position(g, inst, recover=True):
    """(GaleraPosition | None, GraState | None, source) of a stopped node."""
    gs = _grastate(inst)
    if gs is not None and gs.seqno >= 0:
        return gs.position, gs, "grastate"
    # Never ran with wsrep: no history at all (zero UUID, -1); it joins by SST.
    empty = core.GaleraPosition(core.ZERO_UUID, -1)
    if not _initialized(inst):
        return empty, gs, "no datadir"
    if gs is None:
        return empty, gs, "no grastate.dat"
    if not recover:
        return (gs.position if gs else None), gs, "grastate"
    return _recover(g, inst), gs, "wsrep-recover"


# ----------------------------------------------------------------------------------- public


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


def position(node=None, recover=True):
    """This node's Galera position (``uuid:seqno``) and ``safe_to_bootstrap``.

    A running node reports its live state UUID and last committed seqno. A stopped node reports
    ``grastate.dat``; when that says seqno -1 (a crash), ``mariadbd --wsrep-recover`` reads the
    real one from InnoDB (``recover=False`` skips that and reports -1).

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
        pos, gs, source = _local_position(g, inst, recover=recover)
    except CommandExecutionError as exc:
        return {"node": n.id, "running": False, "position": None, "uuid": None, "seqno": None,
                "safe_to_bootstrap": bool(gs and gs.safe_to_bootstrap), "source": "error", "error": str(exc)}
    return {"node": n.id, "running": False, "position": str(pos) if pos else None,
            "uuid": pos.uuid if pos else None, "seqno": pos.seqno if pos else None,
            "safe_to_bootstrap": bool(gs and gs.safe_to_bootstrap), "source": source}


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


def join(position=None, node=None, timeout=None):
    """Start this node and join the running Primary component (IST when ``position`` is given and
    the donor's gcache still holds it, else SST).

    CLI Example:

    .. code-block:: bash

        salt db3 mailha_galera.join position=d84ce8f4-e8c9-11f1-876c-fa62e30020a8:11
    """
    _, n, g, inst = _ctx(node)
    st = _start_checked(g, inst, _position_arg(position), timeout or g.join_timeout)
    return {"node": n.id, "action": "join", "position": str(position) if position else None, **st.as_dict()}


def recover(node=None, timeout=None):
    """Recover this stopped node's position (grastate.dat, else ``--wsrep-recover``) and start
    it with ``--wsrep-start-position`` to rejoin the Primary component.

    CLI Example:

    .. code-block:: bash

        salt db3 mailha_galera.recover
    """
    _, n, g, inst = _ctx(node)
    pos, _, source = _local_position(g, inst)
    st = _start_checked(g, inst, _position_arg(pos), timeout or g.join_timeout)
    return {"node": n.id, "action": "recover", "position": str(pos) if pos else None, "source": source,
            **st.as_dict()}


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
    return {"answering": True, "primary": st.primary, "synced": st.synced, "size": st.cluster_size}


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
            cur.execute("SELECT authentication_string = PASSWORD(%s) FROM mysql.user WHERE User=%s AND Host='%%'",
                        (mon.password.reveal(), mon.user))
            row = cur.fetchone()
            if row is None:
                todo.append("user")
            elif not row[0]:
                todo.append("password")
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
            if "user" in todo:
                cur.execute("CREATE USER %s@'%%' IDENTIFIED BY %s", (mon.user, mon.password.reveal()))
            elif "password" in todo:
                cur.execute("ALTER USER %s@'%%' IDENTIFIED BY %s", (mon.user, mon.password.reveal()))
            cur.execute(f"GRANT SELECT ON `{db}`.* TO %s@'%%'", (mon.user,))
    finally:
        conn.close()
    return {"node": n.id, "changed": todo, "test": False}


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
