"""Facts of a mail node: the vmail share (mounted? immutable mountpoint? fstab line?), the
balancers' checks of this node, where its nginx serves the health page, and the installer
environment iRedMail would run with.

Nothing here returns a secret: the installer environment holds none by construction.
"""
import os

from salt.exceptions import CommandExecutionError

from salt_mailha import glue
from salt_mailha.core import mail as core
from salt_mailha.core.errors import MailhaError

__virtualname__ = "mailha_mail"


def __virtual__():
    return __virtualname__


def _rooted(path):
    return glue.under_root(path, __opts__, __pillar__)


def _site_node(node):
    return glue.site_and_node(__pillar__, __opts__, node)


def share_status(node=None):
    """State of the vmail share on this node: ``path``, ``mounted``, ``source``, ``fstype``,
    ``fstab_line`` (present/add/replace), ``immutable`` (of the mountpoint when unmounted; None
    when mounted: the flag then belongs to the share's root), and the guard's ``reason``.

    CLI Example:

    .. code-block:: bash

        salt 'mail*' mailha_mail.share_status
    """
    try:
        site, n = _site_node(node)
        want = core.vmail_fstab_entry(site, n)
        path = _rooted(want.file)
        with open("/proc/self/mounts", encoding="utf-8", errors="surrogateescape") as f:
            mounts = core.parse_mounts(f.read())
        m = core.mount_at(mounts, path)
        entry = core.FstabEntry(want.spec, path, want.vfstype, want.options)
        fstab_text = glue.read_text(_rooted("/etc/fstab")) or ""
        _, action, _ = core.plan_fstab(fstab_text, entry)
        immutable = None
        if m is None and os.path.isdir(path):
            out = __salt__["cmd.run_all"](["lsattr", "-d", path], python_shell=False,
                                          ignore_retcode=True)
            immutable = "i" in core.parse_lsattr(out["stdout"], path) if out["retcode"] == 0 else None
    except (MailhaError, OSError) as exc:
        raise CommandExecutionError(str(exc)) from None
    decision = core.share_guard(mounts, path)
    return {"path": path, "mounted": m is not None, "source": m.spec if m else None,
            "fstype": m.vfstype if m else None, "fstab_line": action, "immutable": immutable,
            "allowed": decision.allowed, "reason": decision.reason}


def checks(node=None):
    """The balancers' checks of this node's mail services: service, check type, VIP port and the
    port this node listens on.

    CLI Example:

    .. code-block:: bash

        salt 'mail*' mailha_mail.checks
    """
    try:
        site, n = _site_node(node)
        return [{"service": s, "check": c, "vip_port": vp, "port": p} for s, c, vp, p in core.mail_checks(site, n)]
    except MailhaError as exc:
        raise CommandExecutionError(str(exc)) from None


def web_listeners(node=None):
    """Where salt-mailha's nginx serves the health page on this node: one entry (service, check,
    port, listen, tls) per http/https service of the mail VIP; empty on the iRedMail path (its own
    nginx serves the page) or when no service is checked over http/https.

    CLI Example:

    .. code-block:: bash

        salt 'mail*' mailha_mail.web_listeners
    """
    try:
        site, n = _site_node(node)
        if not core.serves_health_page(site, n):
            return []
        return [{"service": w.service, "check": w.check, "port": w.port, "listen": w.listen, "tls": w.tls}
                for w in core.web_listeners(site, n)]
    except MailhaError as exc:
        raise CommandExecutionError(str(exc)) from None


def serves_vmail(node=None):
    """True on the node that exports the vmail NFS share (``mail:vmail:nfs_server``).

    CLI Example:

    .. code-block:: bash

        salt filer1 mailha_mail.serves_vmail
    """
    site, n = _site_node(node)
    return core.serves_vmail(site, n)


def installer():
    """``iredmail`` when the pillar has ``mail:iredmail`` (iRedMail's installer sets the node up),
    else ``native`` (Debian's Postfix and Dovecot configured from the model).

    CLI Example:

    .. code-block:: bash

        salt 'mail*' mailha_mail.installer
    """
    site = glue.site_from_pillar(__pillar__, __opts__)
    if site.mail is None:
        raise CommandExecutionError("pillar mailha:mail is missing: a mail node needs the vmail share settings")
    return "native" if core.uses_native_path(site) else "iredmail"


def iredmail_environment(node=None):
    """The environment iRedMail.sh runs with on this node (answers, MYSQL_SERVER ...; no secret).

    CLI Example:

    .. code-block:: bash

        salt 'mail1' mailha_mail.iredmail_environment
    """
    try:
        site, n = _site_node(node)
        return core.iredmail_environment(site, n)
    except MailhaError as exc:
        raise CommandExecutionError(str(exc)) from None
