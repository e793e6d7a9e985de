"""The site model: the ``mailha:`` pillar parsed into frozen dataclasses, validated as a whole.

``parse_site(data)`` reads every section, collects every problem (structure, types, unknown keys,
then cross-section topology rules) and raises one ``ValidationError`` listing them all, each with
the pillar key and the fix. Everything downstream takes a ``Site``, never raw pillar.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from . import formats
from .errors import ValidationError
from .secret import Secret, derived_secrets

ROLES = ("lb", "db", "quorum", "garbd", "mail", "filer", "dns")
# Which VIP tier each role is a client of: mail nodes reach the database through the db VIP.
ROLE_CLIENT_OF = {"mail": ("db",)}
SCHEDULERS = ("rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq")
CHECKS = ("mysql", "http", "https", "imap", "imaps", "pop", "pops", "smtp", "submission", "connect")
SST_METHODS = ("rsync", "mariabackup", "mysqldump")
ARBITRATORS = ("none", "garbd")
TSIG_ALGORITHMS = ("hmac-sha256", "hmac-sha384", "hmac-sha512")
LDAP_FORMATS = ("slapd.conf", "cn=config")
VRRP_AUTH_MAX = 8  # keepalived silently cuts auth_pass to 8 bytes
_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_DN_RDN = re.compile(r"^[A-Za-z][A-Za-z0-9-]*=.+$")
_DNS_NAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                       r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")


def _frozen(mapping):
    return MappingProxyType(dict(mapping))


# ----------------------------------------------------------------------------------- models


@dataclass(frozen=True)
class Node:
    id: str
    roles: tuple
    addresses: Mapping[str, str]  # network name -> IPv4 address (str)
    interface: str = "eth0"
    order: int = 0  # position in the pillar: keepalived priority and LDAP serverID follow it
    fqdn: str = ""

    def has(self, role):
        return role in self.roles

    def address(self, network):
        return self.addresses.get(network)


@dataclass(frozen=True)
class Vip:
    name: str
    address: str
    network: str
    real_servers: str  # the role whose nodes hold this VIP on lo:0
    virtual_router_id: int
    hostname: str
    fqdn: str


@dataclass(frozen=True)
class Service:
    name: str
    vip: str
    port: int
    check: str
    scheduler: str


@dataclass(frozen=True)
class KeepalivedSpec:
    auth_pass: Secret
    advert_int: float = 1.0
    vrrp_version: int = 3
    unicast: bool = False
    preempt: bool = True
    priority_top: int = 150
    priority_step: int = 50


@dataclass(frozen=True)
class LdirectordSpec:
    checkinterval: int = 5
    checktimeout: int = 3
    failurecount: int = 3
    quiescent: bool = True
    fork: bool = True
    health_page: str = "ldirectord.txt"
    health_content: str = "ldirectord"


@dataclass(frozen=True)
class MonitorSpec:
    user: str
    password: Secret
    database: str = "monitoring"


@dataclass(frozen=True)
class GaleraInstance:
    """Where one member's mariadbd (or garbd) lives. Defaults are Debian's; ``galera:instances``
    overrides them per node (several members on one machine, as the tests run them)."""
    port: int = 3306
    gmcast_port: int = 4567
    ist_port: int = 4568
    sst_port: int = 4444
    bind_address: str = "0.0.0.0"
    config: str = "/etc/mysql/mariadb.conf.d/60-mailha-galera.cnf"
    datadir: str = "/var/lib/mysql"
    socket: str = "/run/mysqld/mysqld.sock"
    pidfile: str = "/run/mysqld/mysqld.pid"
    log_error: str = "/var/log/mysql/error.log"
    tmpdir: str = "/tmp"


@dataclass(frozen=True)
class EvsSpec:
    """Galera group-communication timeouts in seconds; None keeps Galera's default."""
    suspect_timeout: float | None = None
    inactive_timeout: float | None = None
    inactive_check_period: float | None = None
    keepalive_period: float | None = None
    install_timeout: float | None = None
    join_retrans_period: float | None = None

    def options(self):
        """``(name, seconds)`` of the timeouts that are set, in a stable order."""
        return tuple((k, getattr(self, k)) for k in EVS_KEYS if getattr(self, k) is not None)


EVS_KEYS = ("suspect_timeout", "inactive_timeout", "inactive_check_period", "keepalive_period",
            "install_timeout", "join_retrans_period")
# Galera's own defaults, used to check the relations between the ones a pillar sets.
EVS_DEFAULTS = {"suspect_timeout": 5.0, "inactive_timeout": 15.0, "inactive_check_period": 0.5,
                "keepalive_period": 1.0, "install_timeout": 7.5, "join_retrans_period": 1.0}
GALERA_LAUNCHERS = ("systemd", "direct")


@dataclass(frozen=True)
class GaleraSpec:
    cluster_name: str
    bootstrap_node: str
    network: str
    sst_method: str
    arbitrator: str
    sst_user: str
    sst_password: Secret
    monitor: MonitorSpec
    # How the state starts mariadbd: "systemd" (the mariadb unit) or "direct" (a detached
    # ``mariadbd --defaults-file=<rendered cnf>`` with its own pidfile: hosts without systemd).
    launcher: str = "systemd"
    provider: str = "/usr/lib/galera/libgalera_smm.so"
    user: str = "mysql"
    join_timeout: int = 300  # seconds a joiner waits for a Primary component before failing
    gcache_size: str = "128M"
    evs: EvsSpec = field(default_factory=EvsSpec)
    instances: Mapping[str, GaleraInstance] = field(default_factory=lambda: _frozen({}))

    def instance(self, node_id):
        """Ports and paths of ``node_id``'s instance (the pillar's override or the defaults)."""
        return self.instances.get(node_id) or GaleraInstance()


@dataclass(frozen=True)
class LdapReplication:
    binddn: str
    credentials: Secret
    searchbase: str


@dataclass(frozen=True)
class LdapServer:
    node: str
    server_id: int
    url: str


@dataclass(frozen=True)
class LdapSpec:
    suffix: str
    rootdn: str
    rootpw: Secret
    network: str
    port: int
    config_format: str
    replication: LdapReplication
    servers: tuple = ()  # LdapServer per mail node, in node order


@dataclass(frozen=True)
class DnsServer:
    address: str
    port: int = 53


@dataclass(frozen=True)
class TsigSpec:
    name: str
    algorithm: str
    secret: Secret


@dataclass(frozen=True)
class DnsSpec:
    zone: str
    updater: str
    servers: tuple
    tsig: TsigSpec
    ttl_default: int
    ttl_failover: int
    mx: Mapping[str, int]  # mail node -> preference
    names: tuple
    max_delete_share: float = 0.3


@dataclass(frozen=True)
class VmailSpec:
    path: str
    nfs_server: str
    export: str
    options: tuple
    uid: int = 2000  # iRedMail's vmail uid/gid: the same on every node that writes the share
    gid: int = 2000
    network: str = "private"  # mail nodes mount the filer's address on this network
    export_options: tuple = ("rw", "sync", "no_subtree_check")  # the filer's /etc/exports options
    # "nfs" (the guide) or "bind": ``export`` is a local directory already shared with every mail
    # node (a cluster filesystem, or the lab's shared directory on a kernel without NFS).
    fstype: str = "nfs"


VMAIL_FSTYPES = ("nfs", "bind")
IREDMAIL_COMPONENTS = ("iredadmin", "roundcube", "sogo", "netdata", "fail2ban")


@dataclass(frozen=True)
class IredmailSpec:
    source: str
    source_hash: str
    admin_user: str
    admin_password: Secret
    postmaster_password: Secret
    components: tuple = ("iredadmin", "roundcube", "fail2ban")
    workdir: str = "/root"  # the tarball is unpacked here; the installer `config` sits beside iRedMail.sh


@dataclass(frozen=True)
class MailTls:
    """The certificate the mail nodes serve. ``ca``: the PEM bundle that signs ``cert`` when the
    balancers' trust store does not (a private CA, a self-signed certificate); ldirectord's https
    checks and the health beacon then verify the chain against it alone. None: the system store
    (a certificate from a public CA needs nothing)."""
    cert: str = "/etc/ssl/certs/iRedMail.crt"
    key: str = "/etc/ssl/private/iRedMail.key"
    ca: str | None = None
    # the DNS name clients connect to, which the balancers' imaps/pops checks verify in the
    # certificate (they connect to each real server by address); None: the chain only
    name: str | None = None


@dataclass(frozen=True)
class MailLookup:
    """How Postfix and Dovecot read mailboxes from the node's own slapd. ``bind_dn`` None means
    the LDAP rootdn/rootpw (set a read-only DN such as cn=vmail,<suffix> in production)."""
    bind_dn: str | None = None
    bind_password: Secret | None = None
    object_class: str = "inetOrgPerson"  # iRedMail's schema: mailUser


@dataclass(frozen=True)
class MailInstance:
    """Where one mail node's Postfix and Dovecot live. Defaults are Debian's; ``mail:instances``
    overrides them per node (several nodes on one machine, as the tests run them)."""
    postfix_dir: str = "/etc/postfix"
    queue_directory: str = "/var/spool/postfix"
    data_directory: str = "/var/lib/postfix"
    maillog_file: str = ""  # "" logs to syslog
    dovecot_dir: str = "/etc/dovecot"
    dovecot_base_dir: str = "/run/dovecot"
    dovecot_state_dir: str = "/var/lib/dovecot"
    dovecot_log: str = ""  # "" logs to syslog
    bind_address: str = ""  # "" listens on every address (the VIP on lo included)
    ldap_uri: str = ""  # "" is the node's own slapd: ldap://127.0.0.1:<ldap:port>/
    smtp_port: int = 25
    submission_port: int = 587
    smtps_port: int = 465
    imaps_port: int = 993
    pop3s_port: int = 995


MAIL_INSTANCE_PATHS = ("postfix_dir", "queue_directory", "data_directory", "maillog_file", "dovecot_dir",
                       "dovecot_base_dir", "dovecot_state_dir", "dovecot_log")
MAIL_INSTANCE_PORTS = ("smtp_port", "submission_port", "smtps_port", "imaps_port", "pop3s_port")


@dataclass(frozen=True)
class MailSpec:
    vmail: VmailSpec
    iredmail: IredmailSpec | None = None
    tls: MailTls = field(default_factory=MailTls)
    lookup: MailLookup = field(default_factory=MailLookup)
    web_root: str = "/var/www/html"  # the ldirectord health page is written here
    instances: Mapping[str, MailInstance] = field(default_factory=lambda: _frozen({}))

    def instance(self, node_id):
        """Paths and ports of ``node_id``'s Postfix/Dovecot (the pillar's override or the defaults)."""
        return self.instances.get(node_id) or MailInstance()


@dataclass(frozen=True)
class RemediationSpec:
    probe_interval: float = 1.0
    down_after: int = 3
    up_after: int = 3
    max_actions: int = 4
    window: int = 60


@dataclass(frozen=True)
class Site:
    name: str
    domain: str
    networks: Mapping[str, Any]  # name -> ipaddress.IPv4Network
    nodes: tuple  # Node, in pillar order
    vips: Mapping[str, Vip]
    services: tuple  # Service
    keepalived: KeepalivedSpec | None
    ldirectord: LdirectordSpec
    galera: GaleraSpec | None
    ldap: LdapSpec | None
    dns: DnsSpec | None
    mail: MailSpec | None
    remediation: RemediationSpec = field(default_factory=RemediationSpec)
    #: the example's placeholder secrets are accepted on real nodes (a lab's own choice)
    allow_placeholder_secrets: bool = False

    def node(self, node_id):
        for n in self.nodes:
            if n.id == node_id:
                return n
        raise KeyError(node_id)

    def has_node(self, node_id):
        return any(n.id == node_id for n in self.nodes)

    def nodes_with(self, *roles):
        return tuple(n for n in self.nodes if any(r in n.roles for r in roles))

    def real_servers(self, vip_name):
        """Nodes that hold ``vip_name`` on ``lo:0`` and receive its traffic by direct routing."""
        return self.nodes_with(self.vips[vip_name].real_servers)

    def vips_held_by(self, node):
        return tuple(v for v in self.vips.values() if node.has(v.real_servers))

    def services_on(self, vip_name):
        return tuple(s for s in self.services if s.vip == vip_name)

    def galera_members(self):
        """Full Galera members (data nodes and the quorum node), in pillar order."""
        return self.nodes_with("db", "quorum")

    def roles_of(self, node_id):
        return self.node(node_id).roles

    def secrets(self):
        """Every secret of the site and every form derived from them that code writes, sends or
        may print (``secret.derived_secrets``: hashes, encodings, keepalived's 8 characters ...),
        for ``secret.redact``."""
        found = []
        _collect_secrets(self, found, set())
        return tuple(found) + derived_secrets(self, found)


def _collect_secrets(obj, found, seen):
    if id(obj) in seen:
        return
    seen.add(id(obj))
    if isinstance(obj, Secret):
        found.append(obj)
    elif hasattr(obj, "__dataclass_fields__"):
        for name in obj.__dataclass_fields__:
            _collect_secrets(getattr(obj, name), found, seen)
    elif isinstance(obj, (tuple, list)):
        for v in obj:
            _collect_secrets(v, found, seen)
    elif isinstance(obj, Mapping):
        for v in obj.values():
            _collect_secrets(v, found, seen)


# ----------------------------------------------------------------------------------- reader


class _Missing:
    pass


MISSING = _Missing()


class _Section:
    """Reads one mapping of the pillar, recording problems under its key path."""

    def __init__(self, problems, path, data):
        self.problems = problems
        self.path = path
        self.ok = isinstance(data, Mapping)
        if not self.ok:
            problems.append((path, f"must be a mapping, got {type(data).__name__}"))
            data = {}
        self.data = data
        self.seen = set()

    def key(self, name):
        return f"{self.path}:{name}"

    def problem(self, name, message):
        self.problems.append((self.key(name) if name else self.path, message))

    def raw(self, name, default=MISSING):
        self.seen.add(name)
        if name in self.data and self.data[name] is not None:
            return self.data[name]
        if default is MISSING:
            self.problem(name, "is required")
            return None
        return default

    def str(self, name, default=MISSING, choices=None, pattern=None, hint=""):
        v = self.raw(name, default)
        if v is None or v is default and default is not MISSING:
            return v
        if not isinstance(v, str) or not v.strip():
            self.problem(name, f"must be a non-empty string, got {v!r}")
            return None
        if choices and v not in choices:
            self.problem(name, f"{v!r} is not one of {', '.join(choices)}")
            return None
        if pattern and not pattern.fullmatch(v):
            self.problem(name, f"{v!r} is not valid{hint}")
            return None
        return v

    def int(self, name, default=MISSING, lo=None, hi=None):
        v = self.raw(name, default)
        if v is None or v is default and default is not MISSING:
            return v
        if isinstance(v, bool) or not isinstance(v, int):
            self.problem(name, f"must be an integer, got {v!r}")
            return None
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            self.problem(name, f"{v} is out of range [{lo}, {hi}]")
            return None
        return v

    def number(self, name, default=MISSING, lo=None, hi=None):
        v = self.raw(name, default)
        if v is None or v is default and default is not MISSING:
            return v
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            self.problem(name, f"must be a number, got {v!r}")
            return None
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            self.problem(name, f"{v} is out of range [{lo}, {hi}]")
            return None
        return float(v)

    def bool(self, name, default=MISSING):
        v = self.raw(name, default)
        if v is None or v is default and default is not MISSING:
            return v
        if not isinstance(v, bool):
            self.problem(name, f"must be true or false, got {v!r}")
            return None
        return v

    def secret(self, name, default=MISSING):
        v = self.raw(name, default)
        if v is None or v is default and default is not MISSING:
            return v
        if isinstance(v, bool) or not isinstance(v, (str, int, Secret)) or str(v) == "":
            # never echo the value: it is a secret
            self.problem(name, "must be a non-empty string (a secret; value not shown)")
            return None
        return Secret(v)

    def ip(self, name, default=MISSING):
        v = self.raw(name, default)
        if v is None or v is default and default is not MISSING:
            return v
        try:
            return str(ipaddress.IPv4Address(str(v)))
        except ValueError:
            self.problem(name, f"{v!r} is not an IPv4 address")
            return None

    def section(self, name, default=MISSING):
        v = self.raw(name, default)
        if v is None:
            return None
        return _Section(self.problems, self.key(name), v)

    def list(self, name, default=MISSING):
        v = self.raw(name, default)
        if v is None:
            return None
        if not isinstance(v, (list, tuple)):
            self.problem(name, f"must be a list, got {type(v).__name__}")
            return None
        return list(v)

    def done(self):
        """Report keys nobody read: a typo must never be silently ignored."""
        for k in self.data:
            if k not in self.seen:
                known = ", ".join(sorted(self.seen))
                self.problems.append((self.key(k), f"unknown key; known keys here: {known}"))


def _check_galera_instances(site, g, members, p):
    ids = {m.id for m in members}
    for node_id in g.instances:
        if node_id not in ids:
            p(f"mailha:galera:instances:{node_id}", f"{node_id!r} is not a Galera member or garbd node; "
                                                    f"use one of {', '.join(sorted(ids))}")
    # Two members on one address (one machine) must not share a listening port or a path.
    taken = {}
    for m in members:
        inst = g.instance(m.id)
        addr = m.address(g.network) if g.network else None
        for k in ("port", "gmcast_port", "ist_port", "sst_port"):
            key = (addr, getattr(inst, k))
            if key in taken:
                p(f"mailha:galera:instances:{m.id}:{k}", f"{addr}:{key[1]} is also used by {taken[key]}; give "
                                                         f"each member on one address its own ports")
            taken[key] = f"{m.id} ({k})"
        if m.has("garbd"):
            continue
        for k in ("datadir", "socket", "pidfile", "config"):
            key = (addr, getattr(inst, k))
            if key in taken:
                p(f"mailha:galera:instances:{m.id}:{k}", f"{key[1]} is also used by {taken[key]} on {addr}; "
                                                         f"give each member on one address its own paths")
            taken[key] = f"{m.id} ({k})"


# ---------------------------------------------------------------------------------- secrets

NO_SECRETS = "<no secrets>"  # parse_site(node=NO_SECRETS): a pillar that carries the topology alone


def secret_fields(site):
    """``[(pillar key, Secret or None, ids of the nodes that use it)]`` for every secret the
    model knows: the one table behind least privilege. A secret the configuration does not call
    for (auth_pass under VRRPv3, sst_password with rsync) has no user, so no node should hold it."""
    ids = lambda *roles: frozenset(n.id for n in site.nodes if any(n.has(r) for r in roles))  # noqa: E731
    out = []
    if site.keepalived is not None:
        out.append(("mailha:keepalived:auth_pass", site.keepalived.auth_pass,
                    ids("lb") if site.keepalived.vrrp_version == 2 else frozenset()))
    g = site.galera
    if g is not None:
        out.append(("mailha:galera:sst_password", g.sst_password,
                    ids("db", "quorum") if g.sst_method != "rsync" else frozenset()))
        if g.monitor is not None:  # balancers log in with it; the members create the account
            out.append(("mailha:galera:monitor:password", g.monitor.password, ids("lb", "db", "quorum")))
    lds = site.ldap
    if lds is not None:
        out.append(("mailha:ldap:rootpw", lds.rootpw, ids("mail")))
        repl = lds.replication
        if repl is not None and repl.credentials is not lds.rootpw:
            out.append(("mailha:ldap:replication:credentials", repl.credentials, ids("mail")))
    d = site.dns
    if d is not None and d.tsig is not None:  # the updater signs; the servers verify
        out.append(("mailha:dns:tsig:secret", d.tsig.secret, ids("dns") | {d.updater} - {None}))
    m = site.mail
    if m is not None and m.iredmail is not None:
        out.append(("mailha:mail:iredmail:admin_password", m.iredmail.admin_password, ids("mail")))
        out.append(("mailha:mail:iredmail:postmaster_password", m.iredmail.postmaster_password, ids("mail")))
    if m is not None and (m.lookup.bind_dn is not None or m.lookup.bind_password is not None):
        out.append(("mailha:mail:lookup:bind_password", m.lookup.bind_password, ids("mail")))
    return out


def _check_secrets(site, node, problems):
    for key, value, users in secret_fields(site):
        if value is not None or node == NO_SECRETS or not users:
            continue
        if node is None:
            problems.append((key, f"is required: {', '.join(sorted(users))} use(s) it"))
        elif node in users:
            roles = ", ".join(site.node(node).roles)
            problems.append((key, f"is required on {node} (roles {roles}): assign the pillar file that "
                                  f"holds it to this minion"))


# ----------------------------------------------------------------------------------- parse


def load_site(pillar, node=None):
    """Parse the ``mailha`` key of a whole pillar dict (``node``: see ``parse_site``)."""
    errors = pillar.get("_errors") if isinstance(pillar, Mapping) else None
    if errors:  # Salt's own rendering errors (a YAML mistake): a file of the site is missing
        raise ValidationError([("mailha", f"the pillar did not render: {e}") for e in errors])
    if not isinstance(pillar, Mapping) or "mailha" not in pillar:
        raise ValidationError([("mailha", "the pillar has no 'mailha' key: assign the site pillar to this minion")])
    return parse_site(pillar["mailha"], node=node)


_PLACEHOLDER = re.compile(r"(?<![a-z0-9])CHANGE-?ME", re.I)  # not inside a word (exchange-metrics)


def placeholder_problems(data):
    """``[(key, message)]`` for every value of the ``mailha`` pillar ``data`` that is still one of
    the example's placeholders (``CHANGE-ME...``, ``CHANGEME``, or base64 of such a text, as the
    example's TSIG key). Pure: the caller decides where they are refused (``mailha_site``: on
    real nodes, unless ``allow_placeholder_secrets``)."""
    found = []

    def is_placeholder(text):
        if _PLACEHOLDER.search(text):
            return True
        try:
            decoded = base64.b64decode(text, validate=True).decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            return False
        return bool(_PLACEHOLDER.search(decoded))

    def walk(obj, key):
        if isinstance(obj, Mapping):
            for k, v in obj.items():
                walk(v, f"{key}:{k}")
        elif isinstance(obj, (list, tuple)):
            for i, v in enumerate(obj):
                walk(v, f"{key}:{i}")
        elif isinstance(obj, (str, Secret)):
            text = obj.reveal() if isinstance(obj, Secret) else obj
            if is_placeholder(text):
                found.append((key, "is still the example's placeholder: set a real secret (or, for a "
                                   "throw-away lab, mailha:allow_placeholder_secrets: true)"))

    walk(data, "mailha")
    return found


def parse_site(data, node=None):
    """The validated ``Site`` of the ``mailha`` pillar ``data``, or one ``ValidationError`` with
    every problem. ``node`` sets whose secrets must be present (``secret_fields``): None, every
    secret the site's configuration uses (the master's whole-site check); a node id, only those of
    that node's roles (what a minion receives); ``NO_SECRETS``, none (the topology alone)."""
    problems = []
    top = _Section(problems, "mailha", data)
    name = top.str("site", pattern=_LABEL, hint=": use lowercase letters, digits and '-'")
    domain = top.str("domain", pattern=re.compile(r"^([a-z0-9-]+\.)+[a-z]{2,}$"), hint=": e.g. example.net")
    networks = _parse_networks(top)
    nodes = _parse_nodes(top, networks, domain)
    vips = _parse_vips(top, domain)
    services = _parse_services(top)
    keepalived = _parse_keepalived(top)
    ldirectord = _parse_ldirectord(top)
    galera = _parse_galera(top)
    ldap = _parse_ldap(top, nodes)
    dns = _parse_dns(top)
    mail = _parse_mail(top)
    remediation = _parse_remediation(top)
    allow_placeholders = top.bool("allow_placeholder_secrets", False)
    top.done()
    # Build the site from what parsed, then check the topology too: the user sees every problem
    # in one run (the rules skip values that already failed to parse).
    site = Site(
        name=name, domain=domain, networks=_frozen(networks), nodes=tuple(nodes),
        vips=_frozen(vips), services=tuple(services), keepalived=keepalived,
        ldirectord=ldirectord, galera=galera, ldap=ldap, dns=dns, mail=mail,
        remediation=remediation, allow_placeholder_secrets=bool(allow_placeholders),
    )
    _check_topology(site, problems)
    _check_secrets(site, node, problems)
    problems += formats.site_problems(site)
    if problems:
        raise ValidationError(problems)
    return site


def _parse_networks(top):
    sec = top.section("networks")
    out = {}
    if sec is None:
        return out
    for name, cidr in sec.data.items():
        sec.seen.add(name)
        try:
            out[name] = ipaddress.IPv4Network(str(cidr), strict=True)
        except ValueError as exc:
            sec.problem(name, f"{cidr!r} is not an IPv4 network in CIDR form ({exc})")
    if not out and sec.ok:
        sec.problem("", "declare at least one network, e.g. public: 192.0.2.0/24")
    return out


def _parse_nodes(top, networks, domain):
    sec = top.section("nodes")
    nodes = []
    if sec is None:
        return nodes
    for order, node_id in enumerate(sec.data):
        sec.seen.add(node_id)
        if not isinstance(node_id, str) or not _LABEL.fullmatch(node_id):
            sec.problem(str(node_id), "node ids must be hostnames: lowercase letters, digits and '-'")
            continue
        n = sec.section(node_id)
        roles = n.list("roles") or []
        bad = [r for r in roles if r not in ROLES]
        if bad:
            n.problem("roles", f"unknown role(s) {bad}; roles are {', '.join(ROLES)}")
        if not roles and "roles" in n.data:
            n.problem("roles", "give the node at least one role")
        twice = sorted({r for r in roles if isinstance(r, str) and roles.count(r) > 1})
        if twice:
            n.problem("roles", f"lists {', '.join(twice)} more than once: list each role once")
        addrs_sec = n.section("addresses")
        addresses = {}
        if addrs_sec is not None:
            for net, _ in addrs_sec.data.items():
                ip = addrs_sec.ip(net)
                if ip is None:
                    continue
                if net not in networks:
                    addrs_sec.problem(net, f"network {net!r} is not declared under mailha:networks")
                elif ipaddress.IPv4Address(ip) not in networks[net]:
                    addrs_sec.problem(net, f"{ip} is not inside {net} {networks[net]}")
                addresses[net] = ip
            addrs_sec.done()
        interface = n.str("interface", "eth0", pattern=re.compile(r"^[A-Za-z0-9_.:-]{1,15}$"))
        fqdn = n.str("fqdn", f"{node_id}.{domain}" if domain else node_id, pattern=_DNS_NAME,
                     hint=": a host name of letters, digits and '-' labels (1-63 each, 253 in all), "
                          "e.g. mail1.example.net")
        n.done()
        nodes.append(Node(node_id, tuple(r for r in roles if r in ROLES), _frozen(addresses),
                          interface or "eth0", order, fqdn or node_id))
    return nodes


def _parse_vips(top, domain):
    sec = top.section("vips", {})
    out = {}
    if sec is None:
        return out
    for vname in sec.data:
        sec.seen.add(vname)
        v = sec.section(vname)
        address = v.ip("address")
        network = v.str("network")
        real = v.str("real_servers", choices=ROLES)
        vrid = v.int("virtual_router_id", lo=1, hi=255)
        hostname = v.str("hostname", vname, pattern=_LABEL)
        v.done()
        if None not in (address, network, real, vrid, hostname):
            out[vname] = Vip(vname, address, network, real, vrid, hostname,
                             f"{hostname}.{domain}" if domain else hostname)
    return out


def _parse_services(top):
    sec = top.section("services", {})
    out = []
    if sec is None:
        return out
    for sname in sec.data:
        sec.seen.add(sname)
        s = sec.section(sname)
        vip = s.str("vip")
        port = s.int("port", lo=1, hi=65535)
        check = s.str("check", "connect", choices=CHECKS)
        scheduler = s.str("scheduler", "wrr", choices=SCHEDULERS)
        s.done()
        if None not in (vip, port, check, scheduler):
            out.append(Service(sname, vip, port, check, scheduler))
    return out


def _parse_keepalived(top):
    k = top.section("keepalived", None)
    if k is None:
        return None
    auth = k.secret("auth_pass", None)  # required where used: _check_secrets
    size = len(auth.reveal().encode("utf-8", "surrogatepass")) if auth is not None else 0  # (formats refuses a lone surrogate)
    if size > VRRP_AUTH_MAX and size == len(auth):
        k.problem("auth_pass", f"is {len(auth)} characters; keepalived silently uses only the first "
                               f"{VRRP_AUTH_MAX}: set a password of at most {VRRP_AUTH_MAX} characters")
    elif size > VRRP_AUTH_MAX:
        k.problem("auth_pass", f"is {size} bytes in UTF-8; keepalived silently uses only the first "
                               f"{VRRP_AUTH_MAX} bytes: set a password of at most {VRRP_AUTH_MAX} ASCII "
                               f"characters (value not shown)")
    version = k.int("vrrp_version", 3, lo=2, hi=3)
    advert = k.number("advert_int", 1.0, lo=0.01, hi=255)
    if version == 2 and advert is not None and advert != int(advert):
        k.problem("advert_int", f"{advert} s needs vrrp_version: 3 (VRRPv2 adverts are whole seconds)")
    spec = KeepalivedSpec(
        auth_pass=auth, advert_int=advert, vrrp_version=version,
        unicast=k.bool("unicast", False), preempt=k.bool("preempt", True),
        priority_top=k.int("priority_top", 150, lo=2, hi=254),
        priority_step=k.int("priority_step", 50, lo=1, hi=100),
    )
    k.done()
    return spec


def _parse_ldirectord(top):
    d = top.section("ldirectord", {})
    if d is None:
        return LdirectordSpec()
    spec = LdirectordSpec(
        checkinterval=d.int("checkinterval", 5, lo=1, hi=3600),
        checktimeout=d.int("checktimeout", 3, lo=1, hi=3600),
        failurecount=d.int("failurecount", 3, lo=1, hi=100),
        quiescent=d.bool("quiescent", True),
        fork=d.bool("fork", True),
        health_page=d.str("health_page", "ldirectord.txt", pattern=re.compile(r"^[A-Za-z0-9._/-]+$")),
        health_content=d.str("health_content", "ldirectord"),
    )
    d.done()
    return spec


def _parse_galera(top):
    g = top.section("galera", None)
    if g is None:
        return None
    m = g.section("monitor")
    monitor = None
    if m is not None:
        monitor = MonitorSpec(m.str("user", "monitor", pattern=re.compile(r"^[^\s'\"`\\#]{1,80}$"),
                                    hint=": a MariaDB user name of at most 80 characters, without blanks, "
                                         "quotes, backslashes or '#'"),
                              m.secret("password", None),
                              m.str("database", "monitoring", pattern=re.compile(r"^\w{1,64}$")))
        m.done()
    if "root_password" in g.data:
        g.seen.add("root_password")
        g.problem("root_password", "is not used: salt-mailha manages MariaDB as root over the local socket "
                                   "(unix_socket authentication), so no node needs it; remove it from the pillar")
    spec = GaleraSpec(
        cluster_name=g.str("cluster_name", pattern=re.compile(r"^[\w.-]{1,64}$")),
        bootstrap_node=g.str("bootstrap_node"),
        network=g.str("network", "private"),
        sst_method=g.str("sst_method", "rsync", choices=SST_METHODS),
        arbitrator=g.str("arbitrator", "none", choices=ARBITRATORS),
        sst_user=g.str("sst_user", "sst", pattern=re.compile(r"^\w{1,32}$")),
        sst_password=g.secret("sst_password", None),
        monitor=monitor,
        launcher=g.str("launcher", "systemd", choices=GALERA_LAUNCHERS),
        provider=g.str("provider", "/usr/lib/galera/libgalera_smm.so", pattern=_ABS_PATH,
                       hint=": give an absolute path"),
        user=g.str("user", "mysql", pattern=re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")),
        join_timeout=g.int("join_timeout", 300, lo=1, hi=86400),
        gcache_size=g.str("gcache_size", "128M", pattern=re.compile(r"^\d+[KMG]?$"),
                          hint=": e.g. 128M"),
        evs=_parse_galera_evs(g),
        instances=_frozen(_parse_galera_instances(g)),
    )
    g.done()
    return spec


_ABS_PATH = re.compile(r"^/[A-Za-z0-9._/+-]*$")


def _parse_galera_evs(g):
    e = g.section("evs", {})
    if e is None or not e.data:
        if e is not None:
            e.done()
        return EvsSpec()
    values = {k: e.number(k, None, lo=0.01, hi=3600) for k in EVS_KEYS}
    e.done()
    eff = {k: values[k] if values[k] is not None else EVS_DEFAULTS[k] for k in EVS_KEYS}
    # Galera rejects these at startup with a misleading "Failed to read thread schedparams".
    if eff["keepalive_period"] >= eff["suspect_timeout"] / 3:
        e.problem("keepalive_period", f"{eff['keepalive_period']} must be less than suspect_timeout/3 "
                                      f"({eff['suspect_timeout']}/3): Galera refuses to start otherwise")
    if eff["inactive_timeout"] < eff["suspect_timeout"]:
        e.problem("inactive_timeout", f"{eff['inactive_timeout']} must be at least suspect_timeout "
                                      f"({eff['suspect_timeout']})")
    if eff["install_timeout"] > eff["inactive_timeout"]:
        e.problem("install_timeout", f"{eff['install_timeout']} must not exceed inactive_timeout "
                                     f"({eff['inactive_timeout']})")
    return EvsSpec(**values)


def _parse_galera_instances(g):
    sec = g.section("instances", {})
    out = {}
    if sec is None:
        return out
    d = GaleraInstance()
    for node_id in sec.data:
        sec.seen.add(node_id)
        i = sec.section(node_id)
        kw = {k: i.int(k, getattr(d, k), lo=1, hi=65535)
              for k in ("port", "gmcast_port", "ist_port", "sst_port")}
        kw["bind_address"] = i.ip("bind_address", d.bind_address)
        for k in ("config", "datadir", "socket", "pidfile", "log_error", "tmpdir"):
            kw[k] = i.str(k, getattr(d, k), pattern=_ABS_PATH, hint=": give an absolute path of "
                          "letters, digits and . _ / + -")
        i.done()
        if None not in kw.values():
            ports = [kw[k] for k in ("port", "gmcast_port", "ist_port", "sst_port")]
            if len(set(ports)) != 4:
                i.problem("", f"port, gmcast_port, ist_port and sst_port must differ, got {ports}")
            out[node_id] = GaleraInstance(**kw)
    return out


def _parse_ldap(top, nodes):
    s = top.section("ldap", None)
    if s is None:
        return None
    rootdn, rootpw = s.data.get("rootdn"), s.secret("rootpw", None)
    r = s.section("replication")
    repl = None
    if r is not None:
        binddn = r.str("binddn", rootdn)
        credentials = r.secret("credentials", None)
        if binddn and rootdn and binddn.replace(" ", "").lower() == str(rootdn).replace(" ", "").lower():
            # Replication binds as the rootdn (iRedMail's ACLs hide userPassword from anyone else,
            # so passwords would silently not replicate): its credential can only be rootpw.
            if credentials is not None and rootpw is not None and credentials != rootpw:
                r.problem("credentials", "differs from mailha:ldap:rootpw but binddn is the rootdn, so slapd "
                                         "would refuse the bind (err=49): drop credentials (rootpw is used)")
            credentials = rootpw
        repl = LdapReplication(binddn, credentials, r.str("searchbase", s.data.get("suffix")))
        r.done()
    servers = []
    srv = s.section("servers", {})
    if srv is not None:
        for node_id in srv.data:
            srv.seen.add(node_id)
            one = srv.section(node_id)
            sid = one.int("server_id", lo=1, hi=4095)
            url = one.str("url")
            one.done()
            servers.append(LdapServer(node_id, sid, url))
    spec = LdapSpec(
        suffix=s.str("suffix"), rootdn=s.str("rootdn"), rootpw=rootpw,
        network=s.str("network", "private"), port=s.int("port", 389, lo=1, hi=65535),
        config_format=s.str("config_format", "slapd.conf", choices=LDAP_FORMATS),
        replication=repl, servers=tuple(servers),
    )
    s.done()
    return spec


def _parse_dns(top):
    s = top.section("dns", None)
    if s is None:
        return None
    servers = []
    for i, raw in enumerate(s.list("servers") or []):
        one = _Section(s.problems, f"{s.key('servers')}:{i}", raw)
        servers.append(DnsServer(one.ip("address"), one.int("port", 53, lo=1, hi=65535)))
        one.done()
    if not servers and "servers" in s.data:
        s.problem("servers", "list at least one authoritative server: - {address: 192.0.2.10, port: 53}")
    t = s.section("tsig")
    tsig = None
    if t is not None:
        tsig = TsigSpec(t.str("name", pattern=re.compile(r"^[A-Za-z0-9.-]+$")),
                        t.str("algorithm", "hmac-sha256"), t.secret("secret", None))
        if tsig.algorithm and tsig.algorithm not in TSIG_ALGORITHMS:
            t.problem("algorithm", f"{tsig.algorithm!r} is too weak or unknown: use one of "
                                   f"{', '.join(TSIG_ALGORITHMS)} (tsig-keygen -a hmac-sha256)")
        if tsig.secret is not None:
            try:
                base64.b64decode(tsig.secret.reveal(), validate=True)
            except (binascii.Error, ValueError):
                t.problem("secret", "is not valid base64 (value not shown): paste the secret "
                                    "from tsig-keygen's output")
        t.done()
    ttl = s.section("ttl", {})
    ttl_default = ttl.int("default", 3600, lo=1, hi=604800) if ttl else 3600
    ttl_failover = ttl.int("failover", 60, lo=1, hi=604800) if ttl else 60
    if ttl:
        ttl.done()
    mx = {}
    mx_sec = s.section("mx")
    if mx_sec is not None:
        for node_id in mx_sec.data:
            pref = mx_sec.int(node_id, lo=0, hi=65535)
            if pref is not None:
                mx[node_id] = pref
        if not mx_sec.data:
            mx_sec.problem("", "list at least one mail node with its MX preference")
    names = s.list("names", ["mail", "smtp", "imap", "pop"]) or []
    for i, n in enumerate(names):
        if not isinstance(n, str) or not _LABEL.fullmatch(n):
            s.problem(f"names:{i}", f"{n!r} is not a DNS label (lowercase letters, digits, '-')")
    spec = DnsSpec(
        zone=s.str("zone", pattern=_DNS_NAME, hint=": a DNS zone name such as example.net"), updater=s.str("updater"), servers=tuple(servers), tsig=tsig,
        ttl_default=ttl_default, ttl_failover=ttl_failover, mx=_frozen(mx), names=tuple(names),
        max_delete_share=s.number("max_delete_share", 0.3, lo=0.0, hi=1.0),
    )
    s.done()
    return spec


def _abs_path(sec, name, default=MISSING, example="/var/vmail", empty_ok=False):
    v = sec.raw(name, default)
    if v is None or (empty_ok and v == ""):
        return v
    if not isinstance(v, str) or not re.fullmatch(r"^/[A-Za-z0-9_./+-]*$", v) or "/../" in v + "/":
        sec.problem(name, f"{v!r} must be an absolute path (letters, digits, _ . / + -), e.g. {example}")
        return None
    return v


def _parse_mail(top):
    s = top.section("mail", None)
    if s is None:
        return None
    v = s.section("vmail")
    vmail = None
    if v is not None:
        path = _abs_path(v, "path", "/var/vmail")
        export = _abs_path(v, "export", example="/srv/var/vmail")
        options = v.list("options", ["vers=3", "noatime", "nodiratime", "noexec"]) or []
        for i, o in enumerate(options):
            if not isinstance(o, str) or not re.fullmatch(r"^[A-Za-z0-9_=.-]+$", o):
                v.problem(f"options:{i}", f"{o!r} is not a mount option")
        if not options and "options" in v.data:
            v.problem("options", "list at least one NFS mount option, e.g. [vers=3, noatime]")
        export_options = v.list("export_options", list(VmailSpec.export_options)) or []
        for i, o in enumerate(export_options):
            if not isinstance(o, str) or not re.fullmatch(r"^[A-Za-z0-9_=.-]+$", o):
                v.problem(f"export_options:{i}", f"{o!r} is not an exports(5) option")
        if not export_options and "export_options" in v.data:
            v.problem("export_options", "list at least one exports(5) option, e.g. [rw, sync, no_subtree_check]")
        vmail = VmailSpec(path, v.str("nfs_server"), export, tuple(options),
                          uid=v.int("uid", 2000, lo=1000, hi=65533), gid=v.int("gid", 2000, lo=1000, hi=65533),
                          network=v.str("network", "private"), export_options=tuple(export_options),
                          fstype=v.str("fstype", "nfs", choices=VMAIL_FSTYPES))
        v.done()
    i = s.section("iredmail", None)
    iredmail = None
    if i is not None:
        components = i.list("components", list(IredmailSpec.components)) or []
        for n, c in enumerate(components):
            if c not in IREDMAIL_COMPONENTS:
                i.problem(f"components:{n}", f"{c!r} is not one of {', '.join(IREDMAIL_COMPONENTS)}")
        source = i.str("source")
        if source and not re.fullmatch(r"^(salt|https?|file)://\S+$|^/\S+$", source):
            i.problem("source", f"{source!r} must be a salt://, http(s):// or file:// URL or an absolute path")
        source_hash = i.str("source_hash")
        if source_hash and not re.fullmatch(r"^(sha256|sha512)=\S+$", source_hash):
            i.problem("source_hash", f"{source_hash!r} must be sha256=<hex> (sha256sum of the tarball)")
        iredmail = IredmailSpec(source, source_hash,
                                i.str("admin_user", "admin_iredmail", pattern=re.compile(r"^[A-Za-z0-9_]{1,32}$"),
                                      hint=": a MySQL user name (letters, digits, _)"),
                                i.secret("admin_password", None), i.secret("postmaster_password", None),
                                components=tuple(components), workdir=_abs_path(i, "workdir", "/root", "/root"))
        i.done()
    t = s.section("tls", {})
    tls = MailTls()
    if t is not None:
        tls = MailTls(_abs_path(t, "cert", MailTls.cert, MailTls.cert), _abs_path(t, "key", MailTls.key, MailTls.key),
                      _abs_path(t, "ca", None, "/etc/ssl/certs/mailha-ca.pem"),
                      t.str("name", None, pattern=_DNS_NAME,
                            hint=": the DNS name clients connect to, e.g. imap.example.net"))
        if tls.ca is not None and tls.ca == tls.key:
            t.problem("ca", f"{tls.ca!r} is the private key; name the CA certificate (PEM) that signs cert")
        t.done()
    lk = s.section("lookup", {})
    lookup = MailLookup()
    if lk is not None:
        lookup = MailLookup(lk.str("bind_dn", None), lk.secret("bind_password", None),
                            lk.str("object_class", "inetOrgPerson", pattern=re.compile(r"^[A-Za-z][A-Za-z0-9-]*$"),
                                   hint=": an LDAP objectClass name such as mailUser"))
        if lookup.bind_dn is None and lookup.bind_password is not None:
            # (bind_dn without its password: _check_secrets, where the mail nodes use it)
            lk.problem("bind_dn", "bind_dn and bind_password go together: set both, or neither to use the rootdn")
        lk.done()
    instances = {}
    ins = s.section("instances", {})
    if ins is not None:
        for node_id in ins.data:
            ins.seen.add(node_id)
            one = ins.section(node_id)
            if one is None:
                continue
            kw = {}
            for k in MAIL_INSTANCE_PATHS:
                if k in one.data:
                    kw[k] = _abs_path(one, k, example=getattr(MailInstance, k) or "/var/log/mail.log",
                                      empty_ok=k in ("maillog_file", "dovecot_log"))
            for k in MAIL_INSTANCE_PORTS:
                if k in one.data:
                    kw[k] = one.int(k, lo=1, hi=65535)
            if "bind_address" in one.data:
                kw["bind_address"] = one.ip("bind_address")
            if "ldap_uri" in one.data:
                kw["ldap_uri"] = one.str("ldap_uri", pattern=re.compile(r"^ldaps?://[A-Za-z0-9.-]+(:\d{1,5})?/$"),
                                         hint=": e.g. ldap://127.0.0.1:389/")
            one.done()
            if all(x is not None for x in kw.values()):
                instances[node_id] = MailInstance(**kw)
    web_root = _abs_path(s, "web_root", "/var/www/html", "/var/www/html")
    s.done()
    return MailSpec(vmail, iredmail, tls=tls, lookup=lookup, web_root=web_root, instances=_frozen(instances))


def _parse_remediation(top):
    s = top.section("remediation", {})
    if s is None:
        return RemediationSpec()
    spec = RemediationSpec(
        probe_interval=s.number("probe_interval", 1.0, lo=0.1, hi=3600),
        down_after=s.int("down_after", 3, lo=1, hi=100),
        up_after=s.int("up_after", 3, lo=1, hi=100),
        max_actions=s.int("max_actions", 4, lo=1, hi=1000),
        window=s.int("window", 60, lo=1, hi=86400),
    )
    s.done()
    return spec


# ----------------------------------------------------------------------------------- topology


def _dn_parts(dn):
    return [p.strip().lower().replace(" ", "") for p in dn.split(",")]


def dn_under(dn, suffix):
    """True when ``dn`` equals ``suffix`` or sits below it (case/space-insensitive)."""
    d, s = _dn_parts(dn), _dn_parts(suffix)
    return len(d) >= len(s) and d[len(d) - len(s):] == s


def ldap_url(site, node):
    return f"ldap://{node.address(site.ldap.network)}:{site.ldap.port}/"


def _check_topology(site, problems):  # noqa: C901 - one flat list of rules reads best
    def p(key, msg):
        problems.append((key, msg))

    ids = {n.id for n in site.nodes}
    if not site.nodes:
        p("mailha:nodes", "declare the site's nodes (lb, db, mail ...)")

    # addresses: unique across nodes and VIPs
    owner = {}
    for n in site.nodes:
        for net, ip in n.addresses.items():
            if ip in owner:
                p(f"mailha:nodes:{n.id}:addresses:{net}",
                  f"{ip} is already the address of {owner[ip]}: every node needs its own address")
            else:
                owner[ip] = f"node {n.id}"
    vip_addr = {}
    for v in site.vips.values():
        key = f"mailha:vips:{v.name}:address"
        if v.network not in site.networks:
            p(f"mailha:vips:{v.name}:network", f"network {v.network!r} is not declared under mailha:networks")
        if not any(ipaddress.IPv4Address(v.address) in net for net in site.networks.values()):
            p(key, f"{v.address} is inside no declared network; put the VIP in one of "
                   f"{', '.join(str(x) for x in site.networks.values())}")
        elif v.network in site.networks and ipaddress.IPv4Address(v.address) not in site.networks[v.network]:
            p(key, f"{v.address} is not inside its network {v.network} {site.networks[v.network]}")
        if v.address in owner and owner[v.address].startswith("node"):
            p(key, f"{v.address} is the address of {owner[v.address]}: a VIP must be an address no node has")
        if v.address in vip_addr:
            p(key, f"{v.address} is also the {vip_addr[v.address]} VIP; the {v.name} VIP must be its own "
                   f"address (a real server cannot reach a VIP it holds on lo)")
        vip_addr.setdefault(v.address, v.name)

    # a node must never hold (on lo) a VIP it is also a client of: the guide's 2015 lesson
    for n in site.nodes:
        held = {v.address: v.name for v in site.vips.values() if n.has(v.real_servers)}
        for role in n.roles:
            for tier in ROLE_CLIENT_OF.get(role, ()):
                for v in site.vips.values():
                    if v.real_servers == tier and v.address in held:
                        via = held[v.address]
                        if via == v.name:
                            p(f"mailha:nodes:{n.id}:roles",
                              f"{n.id} holds the {v.name} VIP {v.address} on lo (role {v.real_servers}) and is "
                              f"a client of it (role {role}): it could never reach the balancer; put these "
                              f"roles on different nodes")
                        elif f"mailha:vips:{v.name}:address" not in {k for k, _ in problems}:
                            p(f"mailha:vips:{v.name}:address",
                              f"{v.address} is also the {via} VIP held on lo by {n.id}; the {v.name} VIP must "
                              f"be its own address (a real server cannot reach a VIP it holds on lo)")

    # a balancer forwards to real servers by direct routing and holds the VIP on its interface: it
    # cannot also be a real server of a VIP (held on lo, behind itself)
    for n in site.nodes_with("lb"):
        for v in site.vips.values():
            if n.has(v.real_servers):
                p(f"mailha:nodes:{n.id}:roles",
                  f"{n.id} is a balancer (role lb) and a real server of the {v.name} VIP (role "
                  f"{v.real_servers}): a director cannot forward to itself; put these roles on different nodes")

    # services
    if site.nodes_with("lb") and not site.services:
        p("mailha:services", "declare the virtual services the balancers forward (e.g. imaps: {vip: mail, "
                             "port: 993, check: imaps})")
    seen_ports = {}
    for s in site.services:
        key = f"mailha:services:{s.name}"
        if s.vip not in site.vips:
            p(f"{key}:vip", f"unknown VIP {s.vip!r}; declared VIPs: {', '.join(site.vips) or 'none'}")
            continue
        if (s.vip, s.port) in seen_ports:
            p(f"{key}:port", f"port {s.port} on the {s.vip} VIP is already used by {seen_ports[(s.vip, s.port)]}")
        seen_ports[(s.vip, s.port)] = s.name
    for v in site.vips.values():
        if not site.real_servers(v.name):
            p(f"mailha:vips:{v.name}:real_servers", f"no node has role {v.real_servers!r}: add one or fix the role")

    # load balancers and keepalived
    lbs = site.nodes_with("lb")
    if site.vips or lbs:
        if len(lbs) < 2:
            p("mailha:nodes", f"{len(lbs)} load balancer(s) (role lb); the VIPs need at least 2 to fail over")
        if site.keepalived is None:
            p("mailha:keepalived", "is required when the site has VIPs or lb nodes (auth_pass, advert_int ...)")
    ka = site.keepalived
    if ka is not None and lbs and None not in (ka.priority_top, ka.priority_step):
        last = ka.priority_top - (len(lbs) - 1) * ka.priority_step
        if last < 1:
            p("mailha:keepalived:priority_step", f"gives {lbs[-1].id} priority {last}; VRRP priorities are "
                                                 f"1..254: lower priority_step or raise priority_top")
    vrids = {}
    for v in site.vips.values():
        if v.virtual_router_id in vrids:
            p(f"mailha:vips:{v.name}:virtual_router_id",
              f"{v.virtual_router_id} is also used by the {vrids[v.virtual_router_id]} VIP; "
              f"each VRRP instance needs its own id")
        vrids.setdefault(v.virtual_router_id, v.name)
        for lb in lbs:
            if lb.address(v.network) is None:
                p(f"mailha:nodes:{lb.id}:addresses", f"load balancer {lb.id} needs an address on "
                                                     f"{v.network} to carry the {v.name} VIP")

    # Galera
    members = site.galera_members()
    if members or site.nodes_with("garbd"):
        g = site.galera
        if g is None:
            p("mailha:galera", "is required when nodes have role db or quorum")
        else:
            garbd = site.nodes_with("garbd")
            voters = len(members) + len(garbd)
            if len(site.nodes_with("db")) and voters < 3:
                p("mailha:galera", f"{voters} voting member(s); Galera needs at least 3 to keep quorum when one "
                                   f"fails: add a db node, a quorum node (role quorum) or garbd (role garbd)")
            elif voters % 2 == 0:
                p("mailha:galera", f"{voters} voting members is even: a clean split loses quorum on both sides; "
                                   f"add an arbitrator (a node with role garbd and galera:arbitrator: garbd) "
                                   f"or a quorum node")
            if g.arbitrator == "garbd" and not garbd:
                p("mailha:galera:arbitrator", "is garbd but no node has role garbd: give one node role garbd")
            if g.arbitrator == "none" and garbd:
                p("mailha:galera:arbitrator", f"is none but {garbd[0].id} has role garbd: set arbitrator: garbd")
            if g.bootstrap_node and g.bootstrap_node not in {m.id for m in members}:
                p("mailha:galera:bootstrap_node", f"{g.bootstrap_node!r} is not a Galera member; use one of "
                                                  f"{', '.join(m.id for m in members)}")
            if g.network is None:
                pass
            elif g.network not in site.networks:
                p("mailha:galera:network", f"network {g.network!r} is not declared under mailha:networks")
            else:
                for m in (*members, *garbd):
                    if m.address(g.network) is None:
                        p(f"mailha:nodes:{m.id}:addresses", f"Galera member {m.id} needs an address on "
                                                            f"{g.network} (galera:network)")
            if g.monitor is None:
                p("mailha:galera:monitor", "is required: the balancer's mysql check logs in with it")
            _check_galera_instances(site, g, (*members, *garbd), p)

    # LDAP: one suffix, serverIDs matching listeners
    mail_nodes = site.nodes_with("mail")
    if mail_nodes and site.ldap is None:
        p("mailha:ldap", "is required when nodes have role mail")
    if site.ldap is not None:
        lds = site.ldap
        if not lds.suffix:
            pass
        elif not all(_DN_RDN.fullmatch(x.strip()) for x in lds.suffix.split(",")):
            p("mailha:ldap:suffix", f"{lds.suffix!r} is not a DN, e.g. dc=example,dc=net")
        else:
            for key, dn in (("rootdn", lds.rootdn),
                            ("replication:binddn", lds.replication.binddn if lds.replication else None),
                            ("replication:searchbase", lds.replication.searchbase if lds.replication else None)):
                if dn and not dn_under(dn, lds.suffix):
                    p(f"mailha:ldap:{key}", f"{dn!r} is not under the suffix {lds.suffix!r}; every DN must sit "
                                            f"under the one suffix (a wrong suffix silently replicates nothing)")
        if lds.network is None:
            pass
        elif lds.network not in site.networks:
            p("mailha:ldap:network", f"network {lds.network!r} is not declared under mailha:networks")
        else:
            for n in mail_nodes:
                if n.address(lds.network) is None:
                    p(f"mailha:nodes:{n.id}:addresses", f"mail node {n.id} needs an address on {lds.network} "
                                                        f"(ldap:network) for replication")
        overrides = {srv.node: srv for srv in lds.servers}
        for node_id in overrides:
            if node_id not in ids or not site.node(node_id).has("mail"):
                p(f"mailha:ldap:servers:{node_id}", f"{node_id!r} is not a mail node; serverIDs belong to mail nodes")
        ids_seen = {}
        for pos, node in enumerate(mail_nodes, start=1):
            key = f"mailha:ldap:servers:{node.id}"
            ov = overrides.get(node.id)
            sid = ov.server_id if ov is not None and ov.server_id else pos
            if ov is not None and ov.url and node.address(lds.network) and ov.url != ldap_url(site, node):
                p(f"{key}:url", f"{ov.url!r} does not match the listener {ldap_url(site, node)!r}; slapd "
                                f"matches serverID URLs exactly and would replicate from itself")
            if sid in ids_seen:
                p(f"{key}:server_id", f"serverID {sid} is also used by {ids_seen[sid]}; give each mail node "
                                      f"its own (defaults follow node order: 1, 2, ...)")
            ids_seen[sid] = node.id

    # DNS
    if site.dns is None and site.nodes_with("dns"):
        p("mailha:dns", f"is required when nodes have role dns ({', '.join(n.id for n in site.nodes_with('dns'))}): "
                        "zone, updater, servers, tsig")
    if site.dns is not None:
        d = site.dns
        if d.updater and d.updater not in ids:
            p("mailha:dns:updater", f"{d.updater!r} is not a node of this site")
        if d.zone and site.domain and not (d.zone == site.domain or site.domain.endswith("." + d.zone)):
            p("mailha:dns:zone", f"{d.zone!r} does not contain the site domain {site.domain!r}")
        zone = (d.zone or "").rstrip(".").lower()
        for node_id in d.mx:
            if node_id not in ids or not site.node(node_id).has("mail"):
                p(f"mailha:dns:mx:{node_id}", f"{node_id!r} is not a mail node; MX targets must be mail nodes "
                                              f"({', '.join(n.id for n in mail_nodes) or 'none declared'})")
                continue
            fqdn = site.node(node_id).fqdn.lower()
            if zone and not (fqdn == zone or fqdn.endswith("." + zone)):
                p(f"mailha:nodes:{node_id}:fqdn", f"{fqdn!r} is outside the DNS zone {zone!r}: an MX target "
                                                  f"needs an A record the zone serves; use a name under {zone}")
        if "mail" not in site.vips and d.names:
            p("mailha:dns:names", "A records point at the mail VIP, but mailha:vips has no 'mail' VIP")

    # mail
    if mail_nodes and site.mail is None:
        p("mailha:mail", "is required when nodes have role mail (vmail share ...)")
    if site.mail is not None and site.mail.vmail is not None:
        srv = site.mail.vmail.nfs_server
        if srv and (srv not in ids or not site.node(srv).has("filer")):
            p("mailha:mail:vmail:nfs_server", f"{srv!r} is not a node with role filer")
        vnet = site.mail.vmail.network
        if vnet and vnet not in site.networks:
            p("mailha:mail:vmail:network", f"network {vnet!r} is not declared under mailha:networks")
        elif vnet and srv in ids and site.node(srv).has("filer") and not site.node(srv).address(vnet):
            p(f"mailha:nodes:{srv}:addresses", f"the NFS server {srv} needs an address on {vnet} "
                                               f"(mail:vmail:network): the share is mounted from it")
    if site.mail is not None:
        for node_id in site.mail.instances:
            if node_id not in ids or not site.node(node_id).has("mail"):
                p(f"mailha:mail:instances:{node_id}", f"{node_id!r} is not a mail node; instances belong to "
                                                      f"mail nodes ({', '.join(n.id for n in mail_nodes) or 'none'})")
        bdn = site.mail.lookup.bind_dn
        if bdn and site.ldap is not None and site.ldap.suffix and not dn_under(bdn, site.ldap.suffix):
            p("mailha:mail:lookup:bind_dn", f"{bdn!r} is not under the suffix {site.ldap.suffix!r}; every DN "
                                            f"must sit under the one suffix")
        if site.mail.iredmail is not None and mail_nodes and "db" not in site.vips:
            p("mailha:mail:iredmail", "iRedMail's MYSQL_SERVER is the db VIP, but mailha:vips has no 'db' VIP")
