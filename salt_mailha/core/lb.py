"""Load-balancer tier: keepalived, ldirectord and the direct-routing real servers.

Renderers (pure, deterministic; registered in ``core.render.ARTIFACTS``):

- ``render_keepalived_conf(site, node)``: two VRRP instances (one per VIP) in one sync group;
  priorities from the order of the lb nodes in the pillar (first = highest).
- ``render_keepalived_notify(site, node)``: the notify hook that fires
  ``mailha/keepalived/<vip>/<master|backup|fault|stop>`` Salt events.
- ``render_ldirectord_cf(site, node)``: every service of the pillar; real servers are the nodes
  holding the VIP, by direct routing (``gate``); drain/undrain through ``maintenancedir``.
- ``render_ldirectord_ca_dropin(site, node)``: the systemd drop-in that points ldirectord's https
  checks at the site CA (``mail:tls:ca``); ``check_ca_bundle`` vets that file on the balancer.
- ``render_dr_loopback(site, node)`` / ``render_dr_sysctl(site, node)``: the VIPs on ``lo`` and
  ``arp_ignore``/``arp_announce`` for reboots (ifupdown stanza, /etc/sysctl.d).

Real-server decisions: ``dr_wanted`` (what a node must have live), ``parse_ip_addr_json`` (the
``ip -j addr show dev lo`` reader) and ``dr_plan`` (live state -> actions).
"""
import ipaddress
import json
import re

from salt_mailha.core import formats, galera, ipvs
from salt_mailha.core.errors import MailhaError, ParseError, ValidationError

NOTIFY_SCRIPT = "/etc/keepalived/mailha-notify.sh"
READY_SCRIPT = "/etc/keepalived/mailha-ipvs-ready"
IPVSADM = "/usr/sbin/ipvsadm"
SALT_CALL = "/usr/bin/salt-call"
MAINTENANCE_DIR = "/etc/ldirectord.maintenance"
LDIRECTORD_LOG = "/var/log/ldirectord.log"
LDIRECTORD_CA_DROPIN = "/etc/systemd/system/ldirectord.service.d/mailha-ca.conf"
#: our TLS checks (checktype=external-perl) that replace Debian's imaps/pops checks: pillar check ->
#: (script path, protocol, greeting regex, greeting as documented, logout command)
TLS_CHECKS = {
    "imaps": ("/etc/ha.d/mailha-check-imaps", "IMAP", r"^\* (OK|PREAUTH)", "* OK", "a LOGOUT"),
    "pops": ("/etc/ha.d/mailha-check-pops", "POP3", r"^\+OK", "+OK", "QUIT"),
}
#: why each replaces ldirectord's own check (Debian 12's ldirectord 4.12), for the script's header
_TLS_CHECK_WHY = {
    "imaps": ("Net::IMAP::Simple::SSL connects by the real\n# server's address and IO::Socket::SSL "
              "then verifies the certificate's host name against\n# that address, which no mail "
              "certificate names: every real server was marked down."),
    "pops": ("Mail::POP3Client returns an object even when the\n# connection or the TLS handshake "
             "fails, so every real server was marked up."),
}
#: sysctls of a DR real server: (key, value). ``all`` covers every interface (the kernel uses
#: the max of ``all`` and the device value); ``lo`` is set too, as the guide does.
DR_SYSCTLS = (
    ("net.ipv4.conf.all.arp_ignore", "1"),
    ("net.ipv4.conf.all.arp_announce", "2"),
    ("net.ipv4.conf.lo.arp_ignore", "1"),
    ("net.ipv4.conf.lo.arp_announce", "2"),
)
_PATH_RE = re.compile(r"^/[A-Za-z0-9._/-]+$")


def _env():
    from salt_mailha.core.render import environment

    return environment()


def _render(template, **context):
    return _env().get_template(template).render(**context)


def _require_lb(node):
    if not node.has("lb"):
        raise ValidationError([(f"mailha:nodes:{node.id}:roles",
                                "is not a load balancer (role lb); keepalived/ldirectord files are "
                                "rendered for lb nodes only")])


def instance_name(vip):
    """The VRRP instance of a VIP: ``MAILHA_MAIL``, ``MAILHA_DB``."""
    return "MAILHA_" + re.sub(r"[^A-Za-z0-9]", "_", vip.name).upper()


def priority(site, node):
    """First lb in the pillar gets ``priority_top``, each next one ``priority_step`` less."""
    lbs = [n.id for n in site.nodes_with("lb")]
    ka = site.keepalived
    prio = ka.priority_top - lbs.index(node.id) * ka.priority_step
    if prio < 1:
        raise ValidationError([("mailha:keepalived:priority_step",
                                f"gives {node.id} priority {prio}; VRRP priorities are 1..254: lower "
                                f"priority_step or raise priority_top")])
    return prio


def _instances(site, node):
    out = []
    for vip in site.vips.values():
        src = node.address(vip.network)
        peers = [n.address(vip.network) for n in site.nodes_with("lb") if n.id != node.id]
        out.append({"name": instance_name(vip), "vip": vip, "src": src, "peers": peers,
                    "prefixlen": site.networks[vip.network].prefixlen})
    return out


def _advert(value):
    return str(int(value)) if float(value) == int(value) else f"{value:g}"


def ready_weight(site):
    """How much an unready balancer's priority drops: the first balancer, unready, falls just
    below the last one, ready (keepalived keeps an effective priority within 1..254)."""
    ka = site.keepalived
    return min(253, (len(site.nodes_with("lb")) - 1) * ka.priority_step + 1)


def render_keepalived_conf(site, node, notify_script=NOTIFY_SCRIPT, ready_script=READY_SCRIPT):
    """keepalived.conf of lb ``node``. With vrrp_version 2 it holds ``auth_pass`` (a secret)."""
    _require_lb(node)
    for key, value in (("notify_script", notify_script), ("ready_script", ready_script)):
        if not _PATH_RE.match(value):
            raise ValidationError([(key, f"{value!r} is not an absolute path")])
    ka = site.keepalived
    return _render(
        "keepalived.conf.j2", site=site, node=node, ka=ka, instances=_instances(site, node),
        priority=priority(site, node), advert_int=_advert(ka.advert_int),
        # quoted: unquoted, keepalived would cut it at a blank and drop it after "#" or "!"
        auth_pass=formats.keepalived_quote(ka.auth_pass.reveal()) if ka.vrrp_version == 2 else None,
        notify_script=notify_script, ready_script=ready_script, ready_weight=ready_weight(site),
    )


def render_keepalived_ipvs_ready(site, node, ipvsadm=IPVSADM):
    """keepalived's readiness check: the IPVS table holds every service, each with a live server."""
    _require_lb(node)
    if not _PATH_RE.match(ipvsadm):
        raise ValidationError([("ipvsadm", f"{ipvsadm!r} is not an absolute path")])
    return _render("keepalived-ipvs-ready.sh.j2", site=site, node=node, ipvsadm=ipvsadm,
                   want=len(site.services))


def render_keepalived_notify(site, node, salt_call=SALT_CALL):
    """The notify hook: validates keepalived's arguments, then ``salt-call event.send``."""
    _require_lb(node)
    if not _PATH_RE.match(salt_call):
        raise ValidationError([("salt_call", f"{salt_call!r} is not an absolute path")])
    return _render("keepalived-notify.sh.j2", node=node, instances=_instances(site, node),
                   salt_call=salt_call)


def _ldirectord_virtuals(site, check_paths):
    out = []
    g = site.galera
    for s in site.services:
        vip = site.vips[s.vip]
        v = {"service": s, "vip": vip, "check": s.check,
             "reals": [n.address(vip.network) for n in site.real_servers(vip.name)],
             "schedflags": ",".join(schedflags(site, s)),
             "checkcommand": check_paths.get(s.check)}
        if s.check == "mysql":
            if g is None or g.monitor is None:
                raise ValidationError([("mailha:galera:monitor",
                                        f"is required: service {s.name} has check mysql")])
            # formats.site_problems has refused what ldirectord.cf cannot carry ('#', tabs, ...)
            pw = g.monitor.password.reveal()
            # ldirectord's mysql check (DBI) has no timeout of its own: a server that accepts and
            # never greets (a joiner mid-SST, a stalled host) hung it, and every check of every
            # service with it, for good. ldirectord pastes this value into the DSN, where DBD::mysql
            # takes its timeouts.
            t = site.ldirectord.checktimeout
            v.update(login=g.monitor.user, passwd=pw, request=galera.health_query(g.monitor.database),
                     database=f"{g.monitor.database};mysql_connect_timeout={t};"
                              f"mysql_read_timeout={t};mysql_write_timeout={t}")
        out.append(v)
    return out


def render_ldirectord_cf(site, node, maintenancedir=MAINTENANCE_DIR, logfile=LDIRECTORD_LOG,
                         check_paths=None):
    """ldirectord.cf of lb ``node``: holds the Galera monitor password (mode 0600).

    imaps and pops services are checked by our TLS checks (``render_ldirectord_tls_check``, at
    ``check_paths[check]``, default ``TLS_CHECKS``); ``sh`` services of a quiescent site get
    ``schedflags=sh-fallback``."""
    _require_lb(node)
    paths = {c: spec[0] for c, spec in TLS_CHECKS.items()}
    paths.update(check_paths or {})
    for key, value in (("maintenancedir", maintenancedir), ("logfile", logfile), *paths.items()):
        if not _PATH_RE.match(value):
            raise ValidationError([(key, f"{value!r} is not an absolute path")])
    return _render("ldirectord.cf.j2", site=site, node=node, ld=site.ldirectord,
                   virtuals=_ldirectord_virtuals(site, paths),
                   maintenancedir=maintenancedir, logfile=logfile)


def tls_name(site):
    """The host name the TLS checks verify in the real servers' certificates (``mail:tls:name``),
    None: the chain only."""
    return site.mail.tls.name if site.mail is not None else None


def render_ldirectord_tls_check(site, node, check="imaps", path=None):
    """The external check ldirectord runs for the ``check`` services (imaps or pops): TLS to the
    real server's address, the chain verified against ``mail:tls:ca`` (or the system store), the
    host name against ``mail:tls:name`` when set, then the protocol's greeting."""
    _require_lb(node)
    if check not in TLS_CHECKS:
        raise ValidationError([("check", f"{check!r} has no TLS check; one of {', '.join(TLS_CHECKS)}")])
    default_path, proto, greeting, greeting_text, logout = TLS_CHECKS[check]
    ca, name = site_ca(site), tls_name(site)
    # again here: both land in single-quoted Perl strings
    if ca is not None and not re.fullmatch(r"/[A-Za-z0-9._/+-]+", ca):
        raise ValidationError([("mailha:mail:tls:ca", f"{ca!r} is not an absolute path")])
    if name is not None and not re.fullmatch(r"[A-Za-z0-9.-]+", name):
        raise ValidationError([("mailha:mail:tls:name", f"{name!r} is not a DNS name")])
    return _render("ldirectord-tls-check.pl.j2", site=site, node=node, path=path or default_path,
                   why=_TLS_CHECK_WHY[check], proto=proto, greeting=greeting, greeting_text=greeting_text, logout=logout,
                   ca=ca, name=name, timeout=site.ldirectord.checktimeout)


def render_ldirectord_imaps_check(site, node):
    return render_ldirectord_tls_check(site, node, "imaps")


def render_ldirectord_pops_check(site, node):
    return render_ldirectord_tls_check(site, node, "pops")


def site_ca(site):
    """The CA bundle the balancers' https checks trust (``mail:tls:ca``), None: the system store."""
    return site.mail.tls.ca if site.mail is not None else None


def render_ldirectord_ca_dropin(site, node):
    """Drop-in of ldirectord.service: ``PERL_LWP_SSL_CA_FILE`` = the site CA, which LWP (ldirectord's
    http/https checks) then uses instead of the system store. Rendered without a CA too (no
    setting), so removing ``mail:tls:ca`` from the pillar takes the variable away again."""
    _require_lb(node)
    ca = site_ca(site)
    # again here: the value lands unquoted in a unit file (no spaces, quotes or % specifiers)
    if ca is not None and not re.fullmatch(r"/[A-Za-z0-9._/+-]+", ca):
        raise ValidationError([("mailha:mail:tls:ca", f"{ca!r} is not an absolute path")])
    return _render("ldirectord-ca.conf.j2", site=site, node=node, ca=ca)


def check_ca_bundle(path, key="mailha:mail:tls:ca"):
    """Vet the CA bundle at ``path`` (on this node) before ldirectord is pointed at it.

    Returns the number of certificates OpenSSL loads from it; raises ``MailhaError`` naming the
    file and pillar ``key`` when it is missing or unreadable, holds no PEM certificate, or holds a
    private key (the bundle is public: a key there is a mistake).
    """
    import ssl

    what = f"CA bundle {path} (pillar {key})"
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise MailhaError(f"{what}: {exc.strerror}; put the PEM CA certificate that signs "
                          "mail:tls:cert there on every balancer, or remove ca from the pillar to "
                          "trust the system store") from None
    if b"PRIVATE KEY-----" in data:
        raise MailhaError(f"{what} holds a private key; point ca at the CA certificate only")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        ctx.load_verify_locations(cafile=path)  # what IO::Socket::SSL does with SSL_ca_file
    except (ssl.SSLError, OSError) as exc:
        raise MailhaError(f"{what} holds no certificate OpenSSL can load "
                          f"({getattr(exc, 'reason', None) or exc}); it must be PEM "
                          "(-----BEGIN CERTIFICATE-----)") from None
    return ctx.cert_store_stats()["x509"]


def schedflags(site, service):
    """Scheduler flags of ``service`` (``ipvsadm -b``). sh with quiescent servers: a client hashed
    to a weight-0 server gets no server at all (ip_vs_sh finds none and the connection times out)
    unless the scheduler falls back to the next available one: ``sh-fallback`` (kernel 3.18+)."""
    return ("sh-fallback",) if service.scheduler == "sh" and site.ldirectord.quiescent else ()


def check_round(site):
    """Seconds within which ldirectord has checked every real server once, at worst (every check
    running into its timeout): with ``fork`` one process per virtual service checks that service's
    real servers one after another, then sleeps ``checkinterval``; without it one process does
    every service's in turn. A maintenance file older than this has been seen by a running
    ldirectord."""
    ld = site.ldirectord
    reals = [len(site.real_servers(site.vips[s.vip].name)) for s in site.services] or [0]
    checks = max(reals) if ld.fork else sum(reals)
    return ld.checkinterval + ld.checktimeout * checks


def desired_table(site, weight=1):
    """The IPVS table the model wants (what ldirectord builds): for ``mailha_ipvs.diff``."""
    out = []
    for s in site.services:
        vip = site.vips[s.vip]
        reals = tuple(ipvs.RealServer(n.address(vip.network), s.port, "dr", weight)
                      for n in site.real_servers(vip.name))
        out.append(ipvs.VirtualService("tcp", vip.address, s.port, scheduler=s.scheduler,
                                       real_servers=reals, schedflags=schedflags(site, s)))
    return out


# --------------------------------------------------------------------------------------------
# real servers (direct routing)


def dr_wanted(site, node):
    """``[(label, Vip)]`` the node must hold on lo: ``lo:0``, ``lo:1`` ... in pillar VIP order."""
    return [(f"lo:{i}", vip) for i, vip in enumerate(site.vips_held_by(node))]


def render_dr_loopback(site, node):
    return _render("lo0.interfaces.j2", node=node, held=dr_wanted(site, node))


def render_dr_sysctl(site, node):
    return _render("sysctl-dr.conf.j2", node=node, sysctls=DR_SYSCTLS)


def sysctl_proc_path(key):
    """``net.ipv4.conf.all.arp_ignore`` -> ``/proc/sys/net/ipv4/conf/all/arp_ignore``."""
    if not re.fullmatch(r"[a-z0-9_]+(\.[a-z0-9_]+)+", key):
        raise ValidationError([("sysctl", f"{key!r} is not a sysctl key")])
    return "/proc/sys/" + key.replace(".", "/")


def parse_ip_addr_json(text):
    """``ip -j addr show dev lo`` -> ``[{"address", "prefixlen", "label"}]`` (IPv4 only)."""
    try:
        data = json.loads(text or "[]")
    except ValueError as exc:
        raise ParseError(f"ip -j addr: not JSON ({exc})") from None
    out = []
    for link in data:
        for a in link.get("addr_info", []):
            if a.get("family") != "inet":
                continue
            try:
                out.append({"address": str(ipaddress.IPv4Address(a["local"])),
                            "prefixlen": int(a["prefixlen"]),
                            "label": a.get("label", link.get("ifname"))})
            except (KeyError, ValueError) as exc:
                raise ParseError(f"ip -j addr: unreadable address entry {a!r} ({exc})") from None
    return out


def link_is_up(text):
    """Whether ``ip -j addr show dev lo`` says the link is administratively up."""
    try:
        return all("UP" in link.get("flags", []) for link in json.loads(text or "[]"))
    except ValueError as exc:
        raise ParseError(f"ip -j addr: not JSON ({exc})") from None


def dr_plan(site, node, addresses, sysctls, lo_up=True):
    """Actions that make the live system a DR real server of exactly its VIPs.

    ``addresses``: ``parse_ip_addr_json`` of lo. ``sysctls``: ``{key: current value or None}``.
    Returns ``[{"action": "up"|"add"|"del"|"sysctl", ...}]``: add missing VIPs (as /32 with their
    label), remove VIPs of the site this node must not hold (another tier's VIP), and set
    sysctls that differ. Addresses that are not site VIPs (127.0.0.1 ...) are never touched.
    """
    wanted = {vip.address: label for label, vip in dr_wanted(site, node)}
    plan = [] if lo_up or not wanted else [{"action": "up", "device": "lo"}]
    site_vips = {v.address: v.name for v in site.vips.values()}
    have = {a["address"]: a for a in addresses}
    for address, a in have.items():
        if address in site_vips and (address not in wanted or a["prefixlen"] != 32):
            plan.append({"action": "del", "address": address, "prefixlen": a["prefixlen"],
                         "vip": site_vips[address]})
    for address, label in wanted.items():
        a = have.get(address)
        if a is None or a["prefixlen"] != 32:
            plan.append({"action": "add", "address": address, "prefixlen": 32, "label": label,
                         "vip": site_vips[address]})
    for key, value in DR_SYSCTLS:
        if sysctls.get(key) != value:
            plan.append({"action": "sysctl", "key": key, "old": sysctls.get(key), "new": value})
    return plan


def ip_argv(step):
    """iproute2 argv of an up/add/del step (values validated again here)."""
    if step["action"] == "up":
        return ["ip", "link", "set", "lo", "up"]
    address = str(ipaddress.IPv4Address(step["address"]))
    prefix = int(step["prefixlen"])
    if not 0 <= prefix <= 32:
        raise ValidationError([("prefixlen", f"{prefix} is not an IPv4 prefix length")])
    if step["action"] == "add":
        label = step["label"]
        if not re.fullmatch(r"lo:[0-9]{1,3}", label):
            raise ValidationError([("label", f"{label!r} is not a lo:N label")])
        return ["ip", "addr", "add", f"{address}/{prefix}", "dev", "lo", "label", label]
    return ["ip", "addr", "del", f"{address}/{prefix}", "dev", "lo"]
