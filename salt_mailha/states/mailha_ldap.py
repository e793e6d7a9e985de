"""OpenLDAP mirror mode on a mail node's slapd, and the suffix entry of the native mail path.

``mirrormode`` adds serverIDs, the syncprov overlay and one ``syncrepl`` per provider, taken from
the ``mailha`` pillar, and leaves every other setting alone.

* ``mailha:ldap:config_format: slapd.conf``: the block goes into slapd.conf between
  ``# BEGIN/END salt-mailha ldap mirrormode`` markers (global part before the first
  ``database``, the rest at the end of the database holding the suffix); ``moduleload
  syncprov`` and the entryCSN/entryUUID indexes only when the file lacks them. The new file is
  checked with ``slaptest -u`` (in test mode too) before it replaces the old one, then slapd is
  restarted with ``service.restart`` (on a normal minion: the init system's slapd service).
* ``cn=config``: the same settings are applied live over LDAP (``ldapi://`` as root with SASL
  EXTERNAL by default, or ``ldap://`` bound as the rootdn), only where they differ; no restart.

The replication credential is compared but never shown: changes and comments are redacted.

Rehearsals are offline: under a scratch ``mailha_root`` (see ``salt_mailha.rehearsal``)
``base_entry_present`` connects to no LDAP server and the cn=config form is neither read nor
changed (``result`` True, no changes, a comment starting ``REHEARSAL, nothing done``); the
slapd.conf form is merged into the file under the root and slapd is not restarted. Minion config
``mailha_live: True`` lifts that.

Defaults come from minion config (or pillar) through ``config.get``: ``mailha_ldap:slapd_conf``
(``/etc/ldap/slapd.conf``), ``mailha_ldap:config_uri`` (Debian's ldapi socket) and
``mailha_ldap:service`` (``slapd``).

.. code-block:: yaml

    mailha_ldap_mirrormode:
      mailha_ldap.mirrormode: []

    # native mail path: the suffix entry, once slapd runs (the first mail node creates it)
    mailha_ldap_base_entry:
      mailha_ldap.base_entry_present:
        - require:
          - service: slapd

    # or leave the restart to a service state:
    slapd_mirrormode:
      mailha_ldap.mirrormode:
        - restart: False
    slapd:
      service.running:
        - watch:
          - mailha_ldap: slapd_mirrormode
"""

import difflib
import logging
import os
import tempfile
import time

from salt.exceptions import CommandExecutionError

from salt_mailha import glue, rehearsal
from salt_mailha.core import ldap as core_ldap
from salt_mailha.core.errors import MailhaError, ValidationError
from salt_mailha.core.model import load_site
from salt_mailha.core.secret import redact

log = logging.getLogger(__name__)

__virtualname__ = "mailha_ldap"


def __virtual__():
    if "mailha_ldap.replication_status" not in __salt__:  # noqa: F821 - Salt dunder
        return False, "the mailha_ldap execution module did not load (it needs the ldap3 library)"
    return __virtualname__


def _ret(name):
    return {"name": name, "result": True, "changes": {}, "comment": ""}


def _live():
    return rehearsal.live(__opts__, __pillar__)  # noqa: F821


def _rehearsed(ret, what):
    ret["comment"] = f"REHEARSAL, nothing done: {what}; {rehearsal.why(__opts__, __pillar__)}"  # noqa: F821
    return ret


def _fail(ret, site, message):
    ret["result"] = False
    ret["comment"] = redact(message, site.secrets()) if site is not None else message
    ret["changes"] = {}
    return ret


POLL = 0.25  # seconds between reads while waiting for the entry (replication takes a few ms)


def base_entry_present(name, wait=120, force=False, timeout=3):
    """The entry of ``mailha:ldap:suffix`` exists in this mail node's slapd (native mail path:
    slapd starts with an empty database and nothing can be added below a suffix without it).

    Mirror-mode providers all accept writes, so only the first LDAP server in site order (the
    first mail node) creates it, as ``mailha_ldap.create_base_entry`` describes; the others wait
    for syncrepl to carry it. The creator also waits when another server already holds it (a
    rebuilt node takes the entry from its peer) or cannot be read. The objectClasses come from
    the suffix's first RDN (``dc=`` -> dcObject + organization, ``o=`` -> organization, ``ou=`` ->
    organizationalUnit). An existing entry is left as it is.

    name
        A label; not used.
    wait
        Seconds to wait for what the node is waiting for (its own slapd, the creator, syncrepl,
        unreadable peers) before failing with what to do. Test mode never waits.
    force
        On the creator: create although other servers cannot be read. Only when they hold no
        directory (new, wiped or gone for good).
    timeout
        Seconds for connecting to and reading each server.

    Binds as ``mailha:ldap:rootdn`` in-process (ldap3): the rootpw is in no argv, output or log.
    """
    ret = _ret(name)
    try:
        wait, timeout = float(wait), float(timeout)
        if wait < 0 or timeout <= 0:
            raise ValueError
    except (TypeError, ValueError):
        return _fail(ret, None, f"wait={wait!r} / timeout={timeout!r}: give seconds, wait >= 0 and timeout > 0")
    if not _live():
        return _rehearsed(ret, "would ensure the suffix entry (the first mail node creates it, the "
                               "others wait for syncrepl); no LDAP server was asked")
    status_fn = __salt__["mailha_ldap.base_entry_status"]  # noqa: F821
    try:
        status = first = status_fn(force=force, timeout=timeout)
        deadline = time.monotonic() + wait
        while True:
            dn, node = status["dn"], status["node"]
            if status["action"] == "none":
                if first["action"] == "none":
                    ret["comment"] = f"{dn} already exists on {node}"
                elif node != status["creator"]:
                    ret["comment"] = f"{dn} created by {status['creator']}, replicated to {node}"
                else:
                    ret["comment"] = f"{dn} reached {node} through syncrepl"
                return ret
            if status["action"] == "create":
                if __opts__["test"]:  # noqa: F821
                    ret["result"] = None
                    ret["changes"] = {dn: {"old": None, "new": status["entry"]}}
                    ret["comment"] = f"would create {dn}: {status['reason']}"
                    return ret
                res = __salt__["mailha_ldap.create_base_entry"](force=force, timeout=timeout)  # noqa: F821
                if res["created"] or res["action"] == "none":  # "none": another writer got there first
                    if res["created"]:
                        ret["changes"] = {dn: {"old": None, "new": status["entry"]}}
                    ret["comment"] = res["reason"]
                    return ret
                status = dict(status, **{k: res[k] for k in ("action", "reason", "hint")})
                continue
            if __opts__["test"]:  # noqa: F821
                ret["result"] = None
                ret["comment"] = f"{dn}: {status['reason']}; would wait up to {wait:g} s"
                return ret
            if time.monotonic() >= deadline:
                errors = "".join(f"; {n}: {e}" for n, e in sorted(status["errors"].items()))
                what = "cannot confirm" if status["present"].get(node) is None else "still missing:"
                return _fail(ret, None, f"{what} {dn} on {node} after {wait:g} s: {status['reason']}{errors}. "
                                        f"To fix: {status['hint']}")
            time.sleep(POLL)
            status = status_fn(force=force, timeout=timeout)
    except CommandExecutionError as exc:
        return _fail(ret, None, str(exc))


def mirrormode(name, config=None, uri=None, service=None, restart=True):
    """Make this mail node's slapd a mirror-mode provider of the site's suffix.

    name
        A label; not used.
    config
        slapd.conf path (slapd.conf format). Default ``config.get mailha_ldap:slapd_conf`` or
        ``/etc/ldap/slapd.conf``.
    uri
        cn=config URI (cn=config format). ``ldapi://...`` binds as the local root user with
        SASL EXTERNAL; ``ldap://host:port/`` binds as ``mailha:ldap:rootdn`` with its rootpw
        (cn=config's ``olcAccess`` must grant it ``manage``). Default ``config.get
        mailha_ldap:config_uri`` or Debian's ldapi socket.
    service
        Service restarted after slapd.conf changed. Default ``config.get mailha_ldap:service``
        or ``slapd``.
    restart
        ``False`` leaves the restart to a ``watch`` requisite (slapd.conf format only).
    """
    ret = _ret(name)
    site = None
    try:
        site = load_site(__pillar__, node=glue.node_id(__opts__))  # noqa: F821
        if site.ldap is None:
            return _fail(ret, None, "pillar mailha:ldap is missing: this site has no LDAP tier")
        core_ldap.mirror_servers(site)
    except ValidationError as exc:
        return _fail(ret, None, str(exc))
    cfg = __salt__["config.get"]  # noqa: F821
    try:
        if site.ldap.config_format == "cn=config":
            if not _live():
                return _rehearsed(ret, f"would bring cn=config at "
                                       f"{uri or cfg('mailha_ldap:config_uri', core_ldap.DEFAULT_CONFIG_URI)} "
                                       f"to mirror mode; not connected")
            return _cnconfig(ret, site, uri or cfg("mailha_ldap:config_uri", core_ldap.DEFAULT_CONFIG_URI))
        default_conf = glue.under_root("/etc/ldap/slapd.conf", __opts__, __pillar__)  # noqa: F821
        return _slapd_conf(ret, site, config or cfg("mailha_ldap:slapd_conf", default_conf),
                           service or cfg("mailha_ldap:service", "slapd"), restart and _live())
    except (MailhaError, ValueError, OSError) as exc:
        return _fail(ret, site, f"{type(exc).__name__}: {exc}")


def _slapd_conf(ret, site, path, service, restart):
    try:
        with open(path, encoding="utf-8") as f:
            old = f.read()
    except FileNotFoundError:
        raise core_ldap.ConfigConflict(f"{path} does not exist: install slapd/iRedMail first, or point minion "
                                       f"config mailha_ldap:slapd_conf at slapd's config file") from None
    new = core_ldap.merge_slapd_conf(old, site, path)
    if new == old:
        ret["comment"] = f"{path} already has the mirror-mode block"
        return ret
    secrets = site.secrets()
    diff = list(difflib.unified_diff(old.splitlines(), new.splitlines(), lineterm="", n=0))
    removed = [line[1:] for line in diff if line.startswith("-") and not line.startswith("---")]
    added = [line[1:] for line in diff if line.startswith("+") and not line.startswith("+++")]
    changes = {path: {"old": removed, "new": added}}
    if restart:
        changes[f"service {service}"] = {"old": "running the old config", "new": "restarted"}
    changes = core_ldap.mask_credentials(redact(changes, secrets))
    _slaptest(path, new, site)
    if __opts__["test"]:  # noqa: F821
        ret["result"] = None
        ret["changes"] = changes
        ret["comment"] = (f"would write the mirror-mode block to {path}"
                          + (f" and restart {service}" if restart else ""))
        return ret
    _write(path, new)
    ret["changes"] = changes
    ret["comment"] = f"wrote the mirror-mode block to {path}"
    if restart:
        try:
            ok = __salt__["service.restart"](service)  # noqa: F821
        except Exception as exc:  # noqa: BLE001 - report the service layer's failure as the result
            ok, why = False, f": {exc}"
        else:
            why = ""
        if ok is False:
            ret["result"] = False
            ret["comment"] = redact(f"{ret['comment']}, but restarting {service} failed{why}; slapd still "
                                    f"runs the old config: fix and run service.restart {service}", secrets)
            return ret
        ret["comment"] += f" and restarted {service}"
    elif not _live():
        ret["comment"] += f"; REHEARSAL, {service} not restarted: {rehearsal.why(__opts__, __pillar__)}"  # noqa: F821
    else:
        ret["comment"] += f"; {service} must restart to apply it (watch this state)"
    return ret


def _slaptest(path, text, site):
    """Check ``text`` with ``slaptest -u`` from a private temporary file (0600, outside the
    config directory, removed at once): test mode runs it too, so it predicts a refusal."""
    fd, tmp = tempfile.mkstemp(prefix="mailha-slapd-", suffix=".conf")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        res = __salt__["cmd.run_all"](["slaptest", "-Q", "-u", "-f", tmp],  # noqa: F821
                                      python_shell=False, output_loglevel="quiet", ignore_retcode=True)
    finally:
        os.unlink(tmp)
    if res["retcode"] != 0:
        out = ((res.get("stderr") or "") + (res.get("stdout") or "")).replace(tmp, path)
        raise core_ldap.ConfigConflict(f"slaptest -u refuses {path} with the mirror-mode block; it was left "
                                       f"unchanged: {redact(out, site.secrets()).strip()}")


def _write(path, text):
    """Write next to ``path`` and rename over it, keeping its mode and owner (atomic)."""
    st = os.stat(path)
    fd, tmp = tempfile.mkstemp(prefix=".slapd.conf.", dir=os.path.dirname(os.path.abspath(path)))
    try:
        os.fchmod(fd, st.st_mode & 0o7777)
        os.fchown(fd, st.st_uid, st.st_gid)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
        tmp = None
    finally:
        if tmp is not None:
            os.unlink(tmp)


def _cnconfig(ret, site, uri):
    secrets = site.secrets()
    if uri.startswith("ldapi://"):
        conn = core_ldap.connect(uri)  # SASL EXTERNAL: the local root user, as Debian's cn=config allows
    else:  # a bound connection: cn=config's olcAccess must give mailha:ldap:rootdn manage
        conn = core_ldap.connect(uri, site.ldap.rootdn, site.ldap.rootpw)
    try:
        live = core_ldap.read_cnconfig(conn, site.ldap.suffix)
        ops = core_ldap.plan_cnconfig(core_ldap.desired_cnconfig(site), live)
        if not ops:
            ret["comment"] = f"cn=config at {uri} already runs mirror mode as specified"
            return ret
        changes = core_ldap.mask_credentials(redact(core_ldap.describe_ops(ops, live), secrets))
        whys = "; ".join(op.why for op in ops)
        if __opts__["test"]:  # noqa: F821
            ret["result"] = None
            ret["changes"] = changes
            ret["comment"] = f"would change cn=config at {uri}: {whys}"
            return ret
        done = []
        try:
            for op in ops:
                core_ldap.apply_ops(conn, [op])
                done.append(op)
        except MailhaError as exc:
            # report what did change before the failure: cn=config has no transaction across entries
            ret["changes"] = core_ldap.mask_credentials(redact(core_ldap.describe_ops(done, live), secrets))
            ret["result"] = False
            ret["comment"] = redact(f"{exc}; re-run the state once the cause is fixed", secrets)
            return ret
    finally:
        conn.unbind()
    ret["changes"] = changes
    ret["comment"] = f"changed cn=config at {uri} live: {whys}"
    return ret
