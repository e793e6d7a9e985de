"""OpenLDAP mirror mode: what each provider holds and whether they agree.

Reads the site from the ``mailha`` pillar; talks to every mail node's slapd over LDAP (ldap3),
bound as ``mailha:ldap:replication:binddn``. The credential never leaves this module: it is not
in argv (no ldapsearch), not in return data, not in logs.
"""

import logging

from salt.exceptions import CommandExecutionError

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
        site = load_site(__pillar__)  # noqa: F821 - Salt dunder
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
