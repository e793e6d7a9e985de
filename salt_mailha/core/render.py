"""Model -> files. The shared Jinja environment and the registry of every file salt-mailha renders.

Renderers are pure: same ``Site`` and node, same bytes. Each tier module provides its
``render_*(site, node) -> str`` functions; this registry says which file each one produces, for
which roles, with which mode, so the formula and the states never hard-code a path twice.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

import jinja2

from .errors import MailhaError

_ENV = None


def environment():
    """The one Jinja environment: templates from salt_mailha/templates, undefined is an error."""
    global _ENV
    if _ENV is None:
        _ENV = jinja2.Environment(
            loader=jinja2.PackageLoader("salt_mailha", "templates"),
            undefined=jinja2.StrictUndefined,
            keep_trailing_newline=True,
            trim_blocks=True,
            lstrip_blocks=True,
            autoescape=False,
        )
    return _ENV


def render_template(name, **context):
    return environment().get_template(name).render(**context)


@dataclass(frozen=True)
class Artifact:
    id: str
    path: str
    mode: str
    roles: tuple  # a node gets the file when it has any of these roles
    renderer: str  # "module:function" inside salt_mailha.core, called as f(site, node)
    sls: str = ""  # the formula file (states/mailha/<sls>.sls) that manages it; one owner per file
    secret: bool = False  # holds a secret: mode must keep it private; diffs are redacted anyway
    when: str = ""  # optional "module:function" predicate f(site, node) -> bool
    group: str = ""  # owning group (owner is root) when a daemon reads it after dropping root

    def applies(self, site, node):
        return any(node.has(r) for r in self.roles) and (not self.when or _resolve(self.when)(site, node))

    def render(self, site, node):
        return _resolve(self.renderer)(site, node)


def _resolve(ref):
    mod_name, func_name = ref.split(":")
    try:
        return getattr(importlib.import_module(f"salt_mailha.core.{mod_name}"), func_name)
    except (ImportError, AttributeError) as exc:
        raise MailhaError(f"{ref} is not available: {exc}") from exc


ARTIFACTS = (
    Artifact("keepalived", "/etc/keepalived/keepalived.conf", "0640", ("lb",),
             "lb:render_keepalived_conf", "lb", secret=True),
    Artifact("keepalived-ipvs-ready", "/etc/keepalived/mailha-ipvs-ready", "0755", ("lb",),
             "lb:render_keepalived_ipvs_ready", "lb"),
    # /etc/ha.d: Debian's ldirectord.service runs `ldirectord start`, which reads only /etc/ha.d/ldirectord.cf.
    Artifact("ldirectord", "/etc/ha.d/ldirectord.cf", "0600", ("lb",), "lb:render_ldirectord_cf", "lb",
             secret=True),
    # The CA ldirectord's https checks trust (mail:tls:ca); written without a CA too, so removing it
    # from the pillar removes the setting. lb.sls reloads systemd when it changes.
    Artifact("ldirectord-ca", "/etc/systemd/system/ldirectord.service.d/mailha-ca.conf", "0644", ("lb",),
             "lb:render_ldirectord_ca_dropin", "lb"),
    # ldirectord's checks of the imaps and pops services (checktype=external): TLS as a client does it.
    Artifact("ldirectord-check-imaps", "/etc/ha.d/mailha-check-imaps", "0755", ("lb",),
             "lb:render_ldirectord_imaps_check", "lb"),
    Artifact("ldirectord-check-pops", "/etc/ha.d/mailha-check-pops", "0755", ("lb",),
             "lb:render_ldirectord_pops_check", "lb"),
    Artifact("dr-loopback", "/etc/network/interfaces.d/mailha-lo0", "0644", ("db", "mail"),
             "lb:render_dr_loopback", "realserver"),
    Artifact("dr-sysctl", "/etc/sysctl.d/90-mailha-dr.conf", "0644", ("db", "mail"),
             "lb:render_dr_sysctl", "realserver"),
    Artifact("galera", "/etc/mysql/mariadb.conf.d/60-mailha-galera.cnf", "0640", ("db", "quorum"),
             "galera:render_galera_cnf", "galera", secret=True),
    # Native mail path only: on the iRedMail path its installer owns slapd.conf and
    # mailha_ldap.mirrormode merges the block into it.
    Artifact("slapd", "/etc/ldap/slapd.conf", "0640", ("mail",), "ldap:render_native_slapd_conf", "ldap",
             secret=True, when="mail:uses_native_path", group="openldap"),
    Artifact("slapd-default", "/etc/default/slapd", "0644", ("mail",), "ldap:render_slapd_default", "ldap",
             when="mail:uses_native_path"),
    # Native mail path only (iRedMail's own nginx serves it otherwise): the server that answers the
    # balancers' http/https checks with the health page. conf.d/*.conf is included by Debian's nginx.conf.
    Artifact("nginx", "/etc/nginx/conf.d/mailha.conf", "0644", ("mail",), "mail:render_nginx_site", "mail",
             when="mail:serves_health_page"),
    # The site's authoritative BIND (role dns); the zone file itself is seeded once by
    # mailha_dns.zone_seeded, never rendered over (named rewrites it with the updates).
    Artifact("bind-tsig", "/etc/bind/mailha-tsig.key", "0640", ("dns",), "dns:render_tsig_key", "dns",
             secret=True, group="bind"),
    Artifact("bind-local", "/etc/bind/named.conf.local", "0644", ("dns",), "dns:render_named_conf_local",
             "dns", group="bind"),
)


# Debian packages each formula file needs on a node (installed before its files and services).
PACKAGES = {
    "lb": ("keepalived", "ldirectord", "liblwp-protocol-https-perl", "ipvsadm", "libdbd-mysql-perl"),
    "realserver": ("iproute2", "ifupdown"),
    "galera": ("mariadb-server", "galera-4", "rsync", "socat", "pv", "mariadb-backup"),
    "garbd": ("galera-arbitrator-4",),
    "ldap": ("slapd", "ldap-utils"),
    "mail": ("postfix", "postfix-ldap", "dovecot-imapd", "dovecot-pop3d", "dovecot-ldap", "dovecot-lmtpd",
             "nginx-light", "e2fsprogs", "nfs-common"),
    "filer": ("nfs-kernel-server",),
    "dns": ("bind9", "bind9-utils"),
}


def packages_for(sls, site=None, node=None):
    """Debian packages formula file ``sls`` installs. The iRedMail path brings its own mail stack."""
    if sls in ("mail", "ldap") and site is not None and site.mail is not None and site.mail.iredmail is not None:
        return ("e2fsprogs", "nfs-common") if sls == "mail" else ()
    return PACKAGES.get(sls, ())


def formula_for(site, node):
    """The formula files (states/mailha/<name>.sls) this node runs: one per role, plus ``dns`` on
    the pillar's DNS updater even when it has no dns role (a site whose DNS is hosted elsewhere)."""
    names = list(node.roles)
    if site.dns is not None and site.dns.updater == node.id and "dns" not in names:
        names.append("dns")
    return names


def artifacts_for(site, node):
    """The artifacts a node gets, in registry order."""
    return tuple(a for a in ARTIFACTS if a.applies(site, node))


def artifact(artifact_id):
    for a in ARTIFACTS:
        if a.id == artifact_id:
            return a
    raise MailhaError(f"unknown artifact {artifact_id!r}; known: {', '.join(a.id for a in ARTIFACTS)}")
