"""OpenLDAP mirror mode: what each provider holds and whether they agree; the suffix entry the
native mail path needs.

Reads the site from the ``mailha`` pillar; talks to every mail node's slapd over LDAP (ldap3),
bound as ``mailha:ldap:replication:binddn`` (the suffix entry functions bind as
``mailha:ldap:rootdn``). Credentials never leave this module: not in argv (no ldapsearch), not in
return data, not in logs.

Rehearsals are offline: under a scratch ``mailha_root`` the functions that connect
(``replication_status``, ``base_entry_status``, ``create_base_entry``) raise
CommandExecutionError saying so; minion config ``mailha_live: True`` lifts that (see
``salt_mailha.rehearsal``).
"""

import logging

from salt.exceptions import CommandExecutionError

from salt_mailha import glue, rehearsal
from salt_mailha.core import ldap as core_ldap
from salt_mailha.core.errors import MailhaError, ValidationError
from salt_mailha.core.model import load_site
from salt_mailha.core.secret import redact

log = logging.getLogger(__name__)

__virtualname__ = "mailha_ldap"

try:
    import ldap3  # noqa: F401

    HAS_LDAP3 = True
except ImportError:
    HAS_LDAP3 = False


def __virtual__():
    if not HAS_LDAP3:
        return False, "mailha_ldap needs the ldap3 Python library: pip install 'ldap3>=2.9,<3' into Salt's Python"
    return __virtualname__


def _site():
    try:
        site = load_site(__pillar__, node=glue.node_id(__opts__))  # noqa: F821 - Salt dunder
    except ValidationError as exc:
        raise CommandExecutionError(str(exc)) from None
    if site.ldap is None:
        raise CommandExecutionError("pillar mailha:ldap is missing: this site has no LDAP tier")
    return site


def render(config_format=None):
    """Show the mirror-mode configuration this site wants on every mail node, with the
    replication credential redacted.

    config_format
        ``slapd.conf`` or ``cn=config``; defaults to ``mailha:ldap:config_format``.

    CLI Example:

    .. code-block:: bash

        salt mail1 mailha_ldap.render
        salt mail1 mailha_ldap.render config_format=cn=config
    """
    site = _site()
    fmt = config_format or site.ldap.config_format
    try:
        if fmt == "slapd.conf":
            block = core_ldap.render_mirrormode(site)
            text = "\n".join(block.global_lines + ("# -- in the database section --",) + block.database_lines)
        elif fmt == "cn=config":
            text = core_ldap.render_cnconfig_ldif(site)
        else:
            raise CommandExecutionError(f"config_format {fmt!r}: use slapd.conf or cn=config")
    except (MailhaError, ValueError) as exc:
        raise CommandExecutionError(redact(str(exc), site.secrets())) from None
    return redact(text, site.secrets())


@rehearsal.refused_offline("connects to every LDAP server")
def replication_status(timeout=3):
    """contextCSN of every mail node's slapd, per serverID, and whether they agree.

    timeout
        Seconds for connecting to and reading each provider.

    Returns ``{"agree": bool, "reason": str, "lag": {node: seconds}, "behind": {node: [sid]},
    "servers": {node: {"server_id", "url", "reachable", "error", "context_csn": {sid: csn}}}}``.
    An unreachable provider is reported (``reachable: False``), never raised.

    CLI Example:

    .. code-block:: bash

        salt mail1 mailha_ldap.replication_status
    """
    site = _site()
    lds = site.ldap
    try:
        servers = core_ldap.mirror_servers(site)
    except ValidationError as exc:
        raise CommandExecutionError(str(exc)) from None
    views, out = {}, {}
    for srv in servers:
        info = {"server_id": srv.server_id, "url": srv.url, "reachable": False, "error": None, "context_csn": {}}
        try:
            conn = core_ldap.connect(srv.url, lds.replication.binddn, lds.replication.credentials,
                                     timeout=float(timeout))
            try:
                csns = core_ldap.read_context_csns(conn, lds.suffix)
            finally:
                conn.unbind()
            info["reachable"] = True
            info["context_csn"] = {str(sid): c.text for sid, c in sorted(csns.items())}
            views[srv.node] = csns
        except Exception as exc:  # noqa: BLE001 - one provider's failure is a value in the report
            info["error"] = f"{type(exc).__name__}: {exc}"
            views[srv.node] = None
        out[srv.node] = info
    verdict = core_ldap.compare_replication(views)
    log.debug("mailha_ldap.replication_status: %s", verdict.reason)
    return redact({
        "agree": verdict.agree,
        "reason": verdict.reason,
        "lag": verdict.lag,
        "behind": {k: v for k, v in verdict.behind.items()},
        "servers": out,
    }, site.secrets())


def _base_entry_context(node=None):
    """(site, this node id, BaseEntry, servers, creator) or CommandExecutionError naming the fix."""
    site, me = glue.site_and_node(__pillar__, __opts__, node)  # noqa: F821
    if site.ldap is None:
        raise CommandExecutionError("pillar mailha:ldap is missing: this site has no LDAP tier")
    try:
        entry = core_ldap.base_entry(site.ldap.suffix)
        servers = core_ldap.mirror_servers(site)
        creator = core_ldap.base_entry_creator(site)
    except MailhaError as exc:
        raise CommandExecutionError(str(exc)) from None
    if me.id not in {s.node for s in servers}:
        raise CommandExecutionError(f"{me.id} is not an LDAP server (only nodes with role mail run slapd)")
    return site, me.id, entry, servers, creator


def _views(site, servers, dn, timeout):
    """{node: True/False/None} (holds dn / lacks it / unreadable) and {node: error text}."""
    lds = site.ldap
    views, errors = {}, {}
    for srv in servers:
        try:
            conn = core_ldap.connect(srv.url, lds.rootdn, lds.rootpw, timeout=float(timeout))
            try:
                views[srv.node] = core_ldap.entry_exists(conn, dn)
            finally:
                conn.unbind()
        except Exception as exc:  # noqa: BLE001 - an unreadable server is a value the decision weighs
            views[srv.node] = None
            errors[srv.node] = f"{type(exc).__name__}: {exc}"
    return views, errors


def base_entry_spec():
    """The suffix entry the native mail path creates (DN, objectClasses, attributes), derived from
    ``mailha:ldap:suffix``, and which server creates it. Reads no server: the formula calls it
    while rendering, so an unsupported suffix stops the run before anything is written.

    CLI Example:

    .. code-block:: bash

        salt mail1 mailha_ldap.base_entry_spec
    """
    site, _, entry, _, creator = _base_entry_context()
    return redact({"dn": entry.dn, "entry": entry.describe(), "creator": creator.node}, site.secrets())


@rehearsal.refused_offline("connects to every LDAP server")
def base_entry_status(force=False, timeout=3):
    """Whether every LDAP server holds the suffix entry, and what this node would do about it.

    Read-only: one base search per server, bound as ``mailha:ldap:rootdn``.

    force
        Let the creator create the entry although other servers cannot be read (see
        ``create_base_entry``).
    timeout
        Seconds for connecting to and reading each server.

    Returns ``{"dn", "node", "creator", "entry": {objectClass, attributes}, "present": {node:
    True/False/None}, "errors": {node: text}, "action": "none"/"create"/"wait", "reason", "hint"}``.

    CLI Example:

    .. code-block:: bash

        salt 'mail*' mailha_ldap.base_entry_status
    """
    return _status(_base_entry_context(), force, timeout)


def _status(ctx, force, timeout):
    site, me, entry, servers, creator = ctx
    views, errors = _views(site, servers, entry.dn, timeout)
    decision = core_ldap.decide_base_entry(me, creator.node, views, force=bool(force))
    return redact({
        "dn": entry.dn, "node": me, "creator": creator.node, "entry": entry.describe(),
        "present": views, "errors": errors,
        "action": decision.action, "reason": decision.reason, "hint": decision.hint,
    }, site.secrets())


@rehearsal.refused_offline("writes to this node's LDAP server")
def create_base_entry(force=False, timeout=3):
    """Create the suffix entry on this node's slapd when the decision says so: only on the first
    LDAP server (site order), and only when no server holds it; syncrepl carries it to the others.

    force
        Create although other servers cannot be read. Only when they hold no directory (new,
        wiped or gone for good): a second entry for the same DN conflicts in mirror mode. Never
        creates while a server is known to hold the entry.
    timeout
        Seconds for connecting to and reading each server.

    Returns ``{"dn", "node", "created": bool, "action", "reason", "hint"}``; ``created`` is False
    when nothing was to do or another node has to act (``reason`` says which).

    CLI Example:

    .. code-block:: bash

        salt mail1 mailha_ldap.create_base_entry
    """
    ctx = _base_entry_context()
    site, me, entry, servers, _ = ctx
    status = _status(ctx, force, timeout)
    out = {k: status[k] for k in ("dn", "node", "action", "reason", "hint")}
    out["created"] = False
    if status["action"] != "create":
        return out
    own = next(s for s in servers if s.node == me)
    try:
        conn = core_ldap.connect(own.url, site.ldap.rootdn, site.ldap.rootpw, timeout=float(timeout))
        try:
            out["created"] = core_ldap.add_entry(conn, entry)
        finally:
            conn.unbind()
    except MailhaError as exc:
        raise CommandExecutionError(redact(str(exc), site.secrets())) from None
    if out["created"]:
        others = [s.node for s in servers if s.node != me]
        out["reason"] = f"created {entry.dn} on {me}" + (f"; syncrepl carries it to {', '.join(others)}"
                                                         if others else "")
        log.info("mailha_ldap.create_base_entry: created %s on %s", entry.dn, me)
    else:
        out.update(action="none", reason=f"{entry.dn} appeared on {me} while creating it (another writer)")
    return out
