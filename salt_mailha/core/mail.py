"""The mail tier: iRedMail's installer ``config``, the native Postfix/Dovecot configuration with
mailbox lookups in the node's own (mirror-mode) slapd, the vmail NFS share (fstab line, mount
table, the "not mounted -> no mail services" guard), the ldirectord health page and, on the native
path, the nginx server that serves it.

Pure: renderers take the ``Site`` and a ``Node`` and return text; parsers take text. Paths and
ports come from ``site.mail.instance(node.id)`` (Debian's defaults unless ``mail:instances``
overrides them), so the tests run these very files with scratch paths and loopback ports.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import dataclass

from . import formats
from .errors import MailhaError, ParseError
from .render import render_template

# iRedMail.sh reads these instead of asking (its cleanup questions and the final "Continue?").
# The site runs its own firewall and no local MySQL, so those cleanups are declined.
IREDMAIL_AUTO_FLAGS = (
    ("AUTO_USE_EXISTING_CONFIG_FILE", "y"),
    ("AUTO_INSTALL_WITHOUT_CONFIRM", "y"),
    ("AUTO_CLEANUP_REMOVE_SENDMAIL", "y"),
    ("AUTO_CLEANUP_REMOVE_MOD_PYTHON", "y"),
    ("AUTO_CLEANUP_REPLACE_FIREWALL_RULES", "n"),
    ("AUTO_CLEANUP_RESTART_FIREWALL", "n"),
    ("AUTO_CLEANUP_RESTART_IPTABLES", "n"),
    ("AUTO_CLEANUP_REPLACE_MYSQL_CONFIG", "n"),
    ("AUTO_CLEANUP_RESTART_POSTFIX", "n"),
)
# Service passwords iRedMail would otherwise generate at random on each node: derived from the
# pillar instead, so every mail node gets the same ones (the guide copies `config` by hand).
IREDMAIL_DERIVED = (
    "VMAIL_DB_BIND_PASSWD", "VMAIL_DB_ADMIN_PASSWD", "MLMMJADMIN_API_AUTH_TOKEN", "NETDATA_DB_PASSWD",
    "LDAP_ADMIN_PW", "AMAVISD_DB_PASSWD", "IREDADMIN_DB_PASSWD", "RCM_DB_PASSWD", "SOGO_DB_PASSWD",
    "SOGO_SIEVE_MASTER_PASSWD", "IREDAPD_DB_PASSWD", "FAIL2BAN_DB_PASSWD",
)
IREDMAIL_CONFIG_MODE = "0600"
IREDMAIL_MARKER = "/var/lib/mailha/iredmail.installed"
INSTALLER = "iRedMail.sh"


def serves_vmail(site, node):
    """Does ``node`` export the vmail share? Only the pillar's NFS server, and only for an NFS share
    (a bind share is a directory every mail node already has)."""
    v = site.mail.vmail if site.mail is not None else None
    return v is not None and v.fstype == "nfs" and v.nfs_server == node.id


def uses_native_path(site, node=None):
    """Mail nodes run Debian's Postfix/Dovecot configured by us unless the pillar has mail:iredmail."""
    return site.mail is not None and site.mail.iredmail is None


def _require_mail(site, node):
    if site.mail is None or site.mail.vmail is None:
        raise MailhaError("pillar mailha:mail:vmail is missing: the mail tier needs the vmail share")
    if not node.has("mail"):
        raise MailhaError(f"node {node.id} has no role mail: it gets no mail configuration")
    if site.ldap is None:
        raise MailhaError("pillar mailha:ldap is missing: mailboxes are looked up in LDAP")


def _require_iredmail(site, node):
    _require_mail(site, node)
    if site.mail.iredmail is None:
        raise MailhaError("pillar mailha:mail:iredmail is missing: add source, source_hash, admin_password ...")
    return site.mail.iredmail


def _shell_quote(value):
    """One single-quoted shell word (iRedMail sources `config` with bash)."""
    return "'" + value.replace("'", "'\"'\"'") + "'"


def derived_secret(site, name):
    """A stable per-site service password for iRedMail ``name``: HMAC of the admin password."""
    key = site.mail.iredmail.admin_password.reveal().encode()
    return hmac.new(key, f"salt-mailha/{site.name}/iredmail/{name}".encode(), hashlib.sha256).hexdigest()[:32]


# ----------------------------------------------------------------------------------- iRedMail


def db_server_name(site):
    """MYSQL_SERVER for iRedMail: the db VIP's name (``<vips:db:hostname>.<domain>``)."""
    if "db" not in site.vips:
        raise MailhaError("pillar mailha:vips has no 'db' VIP: iRedMail reaches MySQL through it")
    return site.vips["db"].fqdn


def iredmail_settings(site, node):
    """``(name, value, secret)`` for every line of the installer ``config``, in file order."""
    im = _require_iredmail(site, node)
    lk = site.mail.lookup
    yes = {c: "YES" if c in im.components else "NO" for c in ("iredadmin", "roundcube", "sogo", "netdata", "fail2ban")}
    rows = [
        ("STORAGE_BASE_DIR", site.mail.vmail.path, False),
        ("WEB_SERVER", "NGINX", False),
        ("BACKEND_ORIG", "OPENLDAP", False),
        ("BACKEND", "OPENLDAP", False),
        ("LDAP_SUFFIX", site.ldap.suffix, False),
        ("LDAP_ROOTPW", site.ldap.rootpw.reveal(), True),
        ("LDAP_BINDPW", (lk.bind_password.reveal() if lk.bind_password is not None
                         else derived_secret(site, "LDAP_BINDPW")), True),
        ("MYSQL_ROOT_PASSWD", im.admin_password.reveal(), True),
        ("FIRST_DOMAIN", site.domain, False),
        ("DOMAIN_ADMIN_PASSWD_PLAIN", im.postmaster_password.reveal(), True),
        ("USE_IREDADMIN", yes["iredadmin"], False),
        ("USE_ROUNDCUBE", yes["roundcube"], False),
        ("USE_SOGO", yes["sogo"], False),
        ("USE_NETDATA", yes["netdata"], False),
        ("USE_FAIL2BAN", yes["fail2ban"], False),
    ]
    rows += [(name, derived_secret(site, name), True) for name in IREDMAIL_DERIVED]
    return tuple(rows)


def render_iredmail_config(site, node):
    """The installer's ``config`` (sourced by iRedMail.sh): identical on every mail node."""
    rows = [(name, _shell_quote(value)) for name, value, _ in iredmail_settings(site, node)]
    return render_template("iredmail.config.j2", rows=rows)


def iredmail_secrets(site, node):
    """Every secret value the installer ``config`` holds, for ``secret.redact``."""
    return tuple(v for _, v, secret in iredmail_settings(site, node) if secret)


def iredmail_environment(site, node):
    """The environment of the unattended run: answers and the remote-MySQL settings, no secret
    (passwords are only in the 0600 ``config`` file). The first mail node creates the SQL data;
    the others only install (iRedMail's INITIALIZE_SQL_DATA for a MySQL cluster)."""
    im = _require_iredmail(site, node)
    first = site.nodes_with("mail")[0].id == node.id
    db_port = next((s.port for s in site.services if s.vip == "db" and s.check == "mysql"), 3306)
    env = dict(IREDMAIL_AUTO_FLAGS)
    env.update({
        "MYSQL_SERVER": db_server_name(site),  # the name the guide used (iRedMail 0.8)
        "MYSQL_SERVER_ADDRESS": db_server_name(site),  # iRedMail >= 0.9.8
        "MYSQL_SERVER_PORT": str(db_port),
        "MYSQL_ROOT_USER": im.admin_user,
        "MYSQL_GRANT_HOST": "%",
        "USE_EXISTING_MYSQL": "YES",
        "INITIALIZE_SQL_DATA": "YES" if first else "NO",
        "LDAP_SERVER_PORT": str(site.ldap.port),
        "IREDMAIL_HOSTNAME": node.fqdn,
        "STORAGE_BASE_DIR": site.mail.vmail.path,
        "LANG": "C",
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": "/root",
    })
    return env


def iredmail_dir(site, tarball_name):
    """Where the tarball unpacks: ``<workdir>/iRedMail-<version>`` from ``iRedMail-<version>.tar.gz``."""
    base = os.path.basename(tarball_name)
    for ext in (".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".tar"):
        if base.endswith(ext):
            base = base[: -len(ext)]
            break
    if not base or base.startswith("."):
        raise MailhaError(f"cannot tell the installer directory from {tarball_name!r}")
    return os.path.join(site.mail.iredmail.workdir, base)


# ----------------------------------------------------------------------------------- Postfix/Dovecot


def ldap_uri(site, node):
    """Each mail node looks up its own slapd (the guide: local LDAP, mirror-mode between nodes)."""
    inst = site.mail.instance(node.id)
    return inst.ldap_uri or f"ldap://127.0.0.1:{site.ldap.port}/"


def lookup_bind(site):
    """``(bind_dn, Secret)`` Postfix and Dovecot bind with."""
    lk = site.mail.lookup
    if lk.bind_dn is not None:
        return lk.bind_dn, lk.bind_password
    return site.ldap.rootdn, site.ldap.rootpw


def postfix_map_paths(site, node):
    d = site.mail.instance(node.id).postfix_dir
    return {"virtual_mailbox_maps": os.path.join(d, "ldap", "virtual_mailbox_maps.cf")}


def dovecot_paths(site, node):
    inst = site.mail.instance(node.id)
    return {
        "conf": os.path.join(inst.dovecot_dir, "dovecot.conf"),
        "ldap": os.path.join(inst.dovecot_dir, "dovecot-ldap.conf.ext"),
        "auth_socket": os.path.join(inst.dovecot_base_dir, "auth-client"),
    }


def _context(site, node):
    _require_mail(site, node)
    inst = site.mail.instance(node.id)
    bind_dn, bind_pw = lookup_bind(site)
    # formats.site_problems has refused what these files cannot carry (blanks at either end for
    # Postfix, control characters); Dovecot's values are quoted, Postfix's written as they are.
    return {
        "site": site, "node": node, "inst": inst, "vmail": site.mail.vmail, "tls": site.mail.tls,
        "ldap_uri": ldap_uri(site, node), "suffix": site.ldap.suffix, "bind_dn": bind_dn,
        "bind_pw": bind_pw.reveal(), "dovecot_ldap": {"dn": formats.dovecot_quote(bind_dn),
        "dnpass": formats.dovecot_quote(bind_pw.reveal()), "base": formats.dovecot_quote(site.ldap.suffix)},
        "object_class": site.mail.lookup.object_class,
        "maps": postfix_map_paths(site, node), "dovecot": dovecot_paths(site, node),
        "listen": inst.bind_address, "myhostname": node.fqdn or f"{node.id}.{site.domain}",
    }


def render_postfix_main_cf(site, node):
    return render_template("postfix-main.cf.j2", **_context(site, node))


def render_postfix_master_cf(site, node):
    return render_template("postfix-master.cf.j2", **_context(site, node))


def render_postfix_virtual_mailbox_maps(site, node):
    return render_template("postfix-ldap-virtual-mailbox-maps.cf.j2", **_context(site, node))


def render_dovecot_conf(site, node):
    return render_template("dovecot-dovecot.conf.j2", **_context(site, node))


def render_dovecot_ldap_conf(site, node):
    return render_template("dovecot-ldap.conf.ext.j2", **_context(site, node))


@dataclass(frozen=True)
class MailFile:
    path: str
    mode: str
    content: str
    group: str = "root"  # postfix's map readers run as group postfix


def mail_files(site, node):
    """Every file of this node's native Postfix + Dovecot, with modes (the LDAP bind password is
    inside the map and Dovecot's LDAP file: never world-readable)."""
    inst = site.mail.instance(node.id)
    maps = postfix_map_paths(site, node)
    dc = dovecot_paths(site, node)
    return (
        MailFile(os.path.join(inst.postfix_dir, "main.cf"), "0644", render_postfix_main_cf(site, node)),
        MailFile(os.path.join(inst.postfix_dir, "master.cf"), "0644", render_postfix_master_cf(site, node)),
        MailFile(maps["virtual_mailbox_maps"], "0640", render_postfix_virtual_mailbox_maps(site, node), "postfix"),
        MailFile(dc["conf"], "0644", render_dovecot_conf(site, node)),
        MailFile(dc["ldap"], "0600", render_dovecot_ldap_conf(site, node)),
    )


# ----------------------------------------------------------------------------------- vmail share


def _fstab_escape(field):
    return field.replace("\\", "\\134").replace(" ", "\\040").replace("\t", "\\011").replace("\n", "\\012")


def _fstab_unescape(field):
    out, i = [], 0
    while i < len(field):
        octal = field[i + 1:i + 4]
        if field[i] == "\\" and len(octal) == 3 and all(c in "01234567" for c in octal):
            out.append(chr(int(octal, 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


@dataclass(frozen=True)
class FstabEntry:
    spec: str
    file: str
    vfstype: str
    options: tuple
    freq: int = 0
    passno: int = 0

    def line(self):
        return " ".join((_fstab_escape(self.spec), _fstab_escape(self.file), self.vfstype,
                         ",".join(self.options), str(self.freq), str(self.passno)))


BOOT_SAFE_OPTIONS = ("_netdev", "nofail")


def vmail_fstab_entry(site, node):
    """The guide's ``filer1.local:/srv/var/vmail /var/vmail nfs vers=3,noatime,nodiratime,noexec 0 0``,
    with the filer's address on the share network (names may not resolve while DNS is failing over)."""
    _require_mail(site, node)
    v = site.mail.vmail
    if v.fstype == "bind":
        return FstabEntry(v.export, v.path, "none", ("bind", "nofail"))
    filer = site.node(v.nfs_server)
    addr = filer.address(v.network)
    if not addr:
        raise MailhaError(f"the NFS server {filer.id} has no address on network {v.network!r}; "
                          f"set mailha:nodes:{filer.id}:addresses:{v.network}")
    # _netdev: mount after the network; nofail: a filer outage must not hold the boot (the share
    # guard keeps Postfix and Dovecot stopped until the share is mounted).
    options = v.options + tuple(o for o in BOOT_SAFE_OPTIONS if o not in v.options)
    return FstabEntry(f"{addr}:{v.export}", v.path, "nfs", options)


def parse_fstab(text):
    """``(line, FstabEntry | None)`` for every line of an fstab (None for comments and blanks)."""
    out = []
    for line in text.splitlines():
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            out.append((line, None))
            continue
        if len(fields) < 4:
            raise ParseError(f"fstab line {line!r} has {len(fields)} fields; need at least 4")
        freq = int(fields[4]) if len(fields) > 4 and fields[4].isdigit() else 0
        passno = int(fields[5]) if len(fields) > 5 and fields[5].isdigit() else 0
        out.append((line, FstabEntry(_fstab_unescape(fields[0]), _fstab_unescape(fields[1]), fields[2],
                                     tuple(fields[3].split(",")), freq, passno)))
    return out


def plan_fstab(text, entry):
    """``(new_text, action, old_line)``: action ``present`` (nothing to do), ``add`` or ``replace``
    (the line(s) already mounting ``entry.file`` become one right line; other lines are kept)."""
    want, target = entry.line(), os.path.normpath(entry.file)
    parsed = parse_fstab(text or "")
    matches = [line for line, p in parsed if p is not None and os.path.normpath(p.file) == target]
    if matches == [want]:
        return text, "present", want
    lines, placed = [], False
    for line, p in parsed:
        if p is not None and os.path.normpath(p.file) == target:
            if not placed:
                lines.append(want)
                placed = True
            continue
        lines.append(line)
    if not placed:
        lines.append(want)
    return "\n".join(lines) + "\n", ("replace" if matches else "add"), (matches[0] if matches else None)


def vmail_exports_line(site, node):
    """The filer's ``/etc/exports`` line: the vmail export to each mail node's address on the share
    network, ``<export> 10.1.1.17(rw,sync,no_subtree_check) 10.1.1.18(...)``."""
    if site.mail is None or site.mail.vmail is None:
        raise MailhaError("pillar mailha:mail:vmail is missing: the filer exports the vmail share")
    v = site.mail.vmail
    if node.id != v.nfs_server:
        raise MailhaError(f"node {node.id} is not mail:vmail:nfs_server ({v.nfs_server}): it exports nothing")
    opts = ",".join(v.export_options)
    clients = []
    for m in site.nodes_with("mail"):
        addr = m.address(v.network)
        if not addr:
            raise MailhaError(f"mail node {m.id} has no address on {v.network!r} (mail:vmail:network); "
                              f"set mailha:nodes:{m.id}:addresses:{v.network}")
        clients.append(f"{addr}({opts})")
    return " ".join([_fstab_escape(v.export), *clients])


def plan_exports(text, line):
    """``(new_text, action, old_line)`` for the exports line of the same path (first field)."""
    path = _fstab_unescape(line.split()[0])
    out, placed, matches = [], False, []
    for raw in (text or "").splitlines():
        fields = raw.split()
        if fields and not fields[0].startswith("#") and _fstab_unescape(fields[0]) == path:
            matches.append(raw)
            if not placed:
                out.append(line)
                placed = True
            continue
        out.append(raw)
    if matches == [line]:
        return text, "present", line
    if not placed:
        out.append(line)
    return "\n".join(out) + "\n", ("replace" if matches else "add"), (matches[0] if matches else None)


@dataclass(frozen=True)
class Mount:
    spec: str
    file: str
    vfstype: str
    options: tuple


def parse_mounts(text):
    """Entries of ``/proc/self/mounts`` (octal escapes decoded), in mount order."""
    out = []
    for line in text.splitlines():
        fields = line.split()
        if not fields:
            continue
        if len(fields) < 4:
            raise ParseError(f"mount table line {line!r} has {len(fields)} fields; need at least 4")
        out.append(Mount(_fstab_unescape(fields[0]), _fstab_unescape(fields[1]), fields[2], tuple(fields[3].split(","))))
    return tuple(out)


def mount_at(mounts, path):
    """The mount on top at ``path`` (the last one mounted there), or None."""
    path = os.path.normpath(path)
    found = None
    for m in mounts:
        if os.path.normpath(m.file) == path:
            found = m
    return found


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str


def share_guard(mounts, path, services=("postfix", "dovecot")):
    """May the mail services start? Only when the vmail share is mounted: otherwise Maildirs would be
    written to the local disk under the (immutable) mountpoint and split from the other nodes."""
    m = mount_at(mounts, path)
    names = ", ".join(services)
    if m is None:
        return Decision(False, f"vmail share {path} is not mounted: refusing to start {names} (mail would "
                               f"land on the local disk); mount it (mount {path}) and re-apply")
    return Decision(True, f"vmail share {path} is mounted ({m.spec}, {m.vfstype}): {names} may run")


def parse_lsattr(text, path):
    """The attribute letters of ``path`` from ``lsattr -d path`` output (``----i---------e------- /p``)."""
    for line in text.splitlines():
        parts = line.split(None, 1)
        if len(parts) == 2 and os.path.normpath(parts[1].strip()) == os.path.normpath(path):
            return frozenset(c for c in parts[0] if c != "-")
    raise ParseError(f"lsattr output has no line for {path}: {text.strip()[:200]!r}")


# ----------------------------------------------------------------------------------- health


def _health_page_name(site):
    if site.mail is None:
        raise MailhaError("pillar mailha:mail is missing: the health page lives in mail:web_root")
    # formats.site_problems has refused a page outside the web root
    return site.ldirectord.health_page.lstrip("/")


def health_page(site):
    """``(path, content)`` of the page ldirectord's http/https checks request (``request``/``receive``)."""
    return os.path.join(site.mail.web_root, _health_page_name(site)), site.ldirectord.health_content + "\n"


def mail_checks(site, node):
    """The balancers' checks of this mail node: ``(service, check, vip_port, local_port)``, where the
    local port is where this node's instance listens (the same as the VIP's in production)."""
    _require_mail(site, node)
    inst = site.mail.instance(node.id)
    by_port = {25: inst.smtp_port, 587: inst.submission_port, 465: inst.smtps_port, 993: inst.imaps_port,
               995: inst.pop3s_port}
    web = {w.service: w.port for w in web_listeners(site, node)}
    out = []
    for s in site.services:
        if s.vip != "mail":
            continue
        if s.name in web:
            out.append((s.name, s.check, s.port, web[s.name]))
        elif s.port in by_port:
            out.append((s.name, s.check, s.port, by_port[s.port]))
    return tuple(out)


# ----------------------------------------------------------------------------------- web server


# Debian's nginx.conf includes conf.d/*.conf and sites-enabled/*; its default site (a link in
# sites-enabled) also claims port 80 as default_server, so it goes (mailha_mail.default_site_disabled).
NGINX_DEFAULT_SITE = "/etc/nginx/sites-enabled/default"
WEB_CHECKS = ("http", "https")


@dataclass(frozen=True)
class WebListener:
    service: str  # the pillar's service name (mailha:services:<name>)
    check: str  # http or https
    port: int
    listen: str  # nginx's ``listen`` address:port (the port alone: every address, the VIP on lo included)

    @property
    def tls(self):
        return self.check == "https"


def web_services(site):
    """The mail VIP's services that ldirectord and the health beacon check over http/https."""
    return tuple(sorted((s for s in site.services if s.vip == "mail" and s.check in WEB_CHECKS),
                        key=lambda s: (s.port, s.name)))


def serves_health_page(site, node):
    """Does salt-mailha run the node's web server? On the native path, when some service of the
    mail VIP is checked over http/https (iRedMail's own nginx serves the page on its path)."""
    return uses_native_path(site, node) and node.has("mail") and bool(web_services(site))


def web_listeners(site, node):
    """Where the node's web server listens: one ``WebListener`` per http/https service of the mail
    VIP, on the service's port (direct routing keeps the VIP's port) and the node's
    ``mail:instances:<node>:bind_address`` when set."""
    _require_mail(site, node)
    addr = site.mail.instance(node.id).bind_address  # IPv4; the model gives each VIP port one service
    return tuple(WebListener(s.name, s.check, s.port, f"{addr}:{s.port}" if addr else str(s.port))
                 for s in web_services(site))


def render_nginx_site(site, node):
    """The nginx server that answers the balancers' http/https checks with the health page, with
    the certificate Postfix and Dovecot use (``mail:tls``)."""
    listeners = web_listeners(site, node)
    if not listeners:
        raise MailhaError("no service of pillar mailha:services on the mail VIP has check http or https: "
                          "nothing requests the health page, so the node needs no web server")
    return render_template("nginx-mailha.conf.j2", site=site, node=node, listeners=listeners,
                           web_root=site.mail.web_root, page="/" + _health_page_name(site),
                           tls=site.mail.tls if any(w.tls for w in listeners) else None)
