"""OpenLDAP mirror mode: render, merge, parse and decide. No Salt here.

Four parts:

* **Servers.** ``mirror_servers(site)``: one ``LdapServer`` (node, serverID, URL) per mail node,
  in pillar order. The URL is ``ldap://<private address>:<port>/`` and must be exactly the URL
  slapd listens on (``slapd -h``): slapd compares them literally to find which ``syncrepl`` rid
  points at itself and skips it, so the same text works on every node.
* **Rendering.** ``render_mirrormode(site)`` gives the slapd.conf block (a global part: serverID,
  ``moduleload syncprov``; a database part: indexes, ``syncrepl``, ``mirrormode``, the syncprov
  overlay); ``merge_slapd_conf(text, block, suffix)`` places it inside an existing slapd.conf
  (iRedMail's) between managed markers without touching anything else.
  ``desired_cnconfig(site)`` + ``plan_cnconfig(desired, live)`` do the same for cn=config as a list
  of LDAP operations.
* **Parsing.** ``parse_csn`` / ``parse_context_csns`` read contextCSN values, ``parse_syncrepl``
  reads an ``olcSyncrepl`` value as slapd returns it.
* **Deciding.** ``compare_replication(views)`` says whether the providers agree and, when not, who
  lags by how much.

Rendered text and planned operations carry the replication credential (slapd needs it in
clear): callers pass anything shown to a user through ``secret.redact(.., site.secrets())``.
"""

from __future__ import annotations

import dataclasses
import datetime
import re
import shlex

from . import formats, secret
from .errors import MailhaError, ParseError, ValidationError
from .render import environment

# Why these syncrepl timings: "1 60 5 +" retries every second for the first minute after a peer
# goes away (a restart or reboot comes back inside that), then every 5 s forever. The guide's
# "5 10 60 +" leaves a survivor polling only once a minute after ~50 s of outage, so writes made
# on the returning node could stay one-sided for up to a minute. The returning node itself
# pulls what it missed as soon as it starts (its own consumer refreshes at startup).
# keepalive: a persist connection to a peer that vanished without a RST (power loss) would
# otherwise hang until the kernel gives up (hours) and the consumer would never retry.
SYNCREPL_RETRY = "1 60 5 +"
SYNCREPL_TIMEOUT = 3
SYNCREPL_NETWORK_TIMEOUT = 3
SYNCREPL_KEEPALIVE = "60:3:10"
SYNCPROV_CHECKPOINT = "100 10"
SYNCPROV_SESSIONLOG = "100"
MODULE_PATH = "/usr/lib/ldap"  # Debian's slapd modules

BEGIN = "# BEGIN salt-mailha ldap mirrormode ({part}): managed by Salt, edits are replaced"
END = "# END salt-mailha ldap mirrormode ({part})"
_MARKER = re.compile(r"^# (BEGIN|END) salt-mailha ldap mirrormode \((global|database)\)")


class ConfigConflict(MailhaError):
    """The existing slapd config cannot take the managed block as it is; the message says why."""


# ----------------------------------------------------------------------------------- servers


@dataclasses.dataclass(frozen=True)
class MirrorServer:
    node: str
    server_id: int
    url: str

    @property
    def rid(self):
        return f"{self.server_id:03d}"


def listener_url(address, port):
    return f"ldap://{address}:{port}/"


def mirror_servers(site):
    """One ``MirrorServer`` per mail node, in pillar order.

    serverIDs come from ``mailha:ldap:servers:<node>:server_id`` when given, else the node's
    position among the mail nodes (1, 2, ...). The site model has already refused colliding
    serverIDs and URLs that do not match the listener.
    """
    lds = site.ldap
    overrides = {s.node: s for s in getattr(lds, "servers", ()) or ()}
    out = []
    for pos, node in enumerate(site.nodes_with("mail"), start=1):
        ov = overrides.get(node.id)
        sid = ov.server_id if ov is not None and ov.server_id else pos
        out.append(MirrorServer(node.id, sid, listener_url(node.address(lds.network), lds.port)))
    return tuple(out)


# ----------------------------------------------------------------------------------- rendering


def _quote(value):
    """A slapd.conf / syncrepl quoted value (``formats.site_problems`` has refused what slapd
    cannot carry: a double quote, a backslash, control characters)."""
    return formats.slapd_quote(str(value))


def syncrepl_params(site, server):
    """Ordered (key, value) pairs of one ``syncrepl`` statement (values unquoted)."""
    repl = site.ldap.replication
    return (
        ("rid", server.rid),
        ("provider", server.url),
        ("bindmethod", "simple"),
        ("binddn", repl.binddn),
        ("credentials", repl.credentials.reveal()),
        ("searchbase", repl.searchbase),
        ("scope", "sub"),
        ("type", "refreshAndPersist"),
        ("retry", SYNCREPL_RETRY),
        ("timeout", str(SYNCREPL_TIMEOUT)),
        ("network-timeout", str(SYNCREPL_NETWORK_TIMEOUT)),
        ("keepalive", SYNCREPL_KEEPALIVE),
    )


_QUOTED_KEYS = {"binddn", "credentials", "searchbase", "retry"}


def syncrepl_value(params):
    return " ".join(f"{k}={_quote(v)}" if k in _QUOTED_KEYS else f"{k}={v}" for k, v in params)


@dataclasses.dataclass(frozen=True)
class MirrorBlock:
    """The slapd.conf text we manage: ``global_lines`` go before the first ``database``,
    ``database_lines`` at the end of the database holding the suffix. Contains the credential."""

    global_lines: tuple
    database_lines: tuple
    suffix: str


def render_mirrormode(site, moduleload=True, modulepath=False, indexes=("entryCSN", "entryUUID")):
    """The managed slapd.conf block for ``site`` (identical on every mail node).

    ``moduleload``/``modulepath``/``indexes`` leave out what the existing file already has
    (``merge_slapd_conf`` decides that); the defaults render the full block.
    """
    servers = mirror_servers(site)
    text = environment().get_template("slapd-mirrormode.conf.j2").render(
        servers=servers,
        syncrepls=[syncrepl_params(site, s) for s in servers],
        quote=_quote,
        quoted_keys=_QUOTED_KEYS,
        moduleload=moduleload,
        modulepath=MODULE_PATH if modulepath else None,
        indexes=list(indexes),
        checkpoint=SYNCPROV_CHECKPOINT,
        sessionlog=SYNCPROV_SESSIONLOG,
    )
    glob, _, db = text.partition("# -- database --\n")
    return MirrorBlock(tuple(glob.splitlines()), tuple(db.splitlines()), site.ldap.suffix)


# ------------------------------------------------------------------ slapd.conf merge


@dataclasses.dataclass(frozen=True)
class _Directive:
    first: int  # index of the first line
    last: int  # index of the last continuation line
    keyword: str
    args: str


def _directives(lines):
    """Logical directives (a line plus its whitespace-led continuation lines)."""
    out = []
    for i, line in enumerate(lines):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if line[0] in " \t":
            if out:
                d = out[-1]
                out[-1] = dataclasses.replace(d, last=i, args=f"{d.args} {line.strip()}")
            continue
        keyword, _, args = line.strip().partition(" ")
        if "\t" in keyword:
            keyword, _, rest = keyword.partition("\t")
            args = f"{rest} {args}"
        out.append(_Directive(i, i, keyword.lower(), args.strip()))
    return out


def _strip_managed(lines, path):
    out, inside = [], None
    for i, line in enumerate(lines, start=1):
        m = _MARKER.match(line)
        if m:
            kind, part = m.groups()
            if kind == "BEGIN":
                if inside:
                    raise ConfigConflict(f"{path} line {i}: managed block {part!r} starts inside {inside!r}; "
                                         f"remove the broken salt-mailha markers and re-run")
                inside = part
            else:
                if inside != part:
                    raise ConfigConflict(f"{path} line {i}: END marker of {part!r} without its BEGIN; remove "
                                         f"the broken salt-mailha markers and re-run")
                inside = None
            continue
        if inside is None:
            out.append(line)
    if inside:
        raise ConfigConflict(f"{path}: managed block {inside!r} has no END marker; remove the broken "
                             f"salt-mailha markers and re-run")
    return out


def _unquote(value):
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


def normalize_dn(dn):
    return ",".join(p.strip().lower() for p in _unquote(dn).split(","))


def _index_types(directives):
    """attribute (lower) -> set of index types, from ``index`` directives."""
    out = {}
    for d in directives:
        if d.keyword != "index":
            continue
        parts = d.args.split(None, 1)
        attrs = parts[0].split(",")
        types = set((parts[1] if len(parts) > 1 else "default").replace(" ", "").split(","))
        for a in attrs:
            out.setdefault(a.strip().lower(), set()).update(types)
    return out


_CONFLICTING_GLOBAL = {"serverid"}
_CONFLICTING_DB = {"syncrepl", "mirrormode", "multiprovider", "syncprov-checkpoint", "syncprov-sessionlog",
                   "syncprov-nopresent", "syncprov-reloadhint"}


def merge_slapd_conf(text, site, path="slapd.conf"):
    """Return ``text`` with the mirror-mode block placed inside it (idempotent).

    The global part goes right after the last global directive, the database part right after
    the last directive of the database whose ``suffix`` is the site suffix. Everything else
    (iRedMail's ACLs, indexes, modules) stays byte for byte. ``moduleload syncprov``,
    ``modulepath`` and the entryCSN/entryUUID indexes are added only when the file lacks them.
    Raises ``ConfigConflict`` naming the line when unmanaged replication settings are present.
    """
    lines = _strip_managed(text.splitlines(), path)
    directives = _directives(lines)
    suffix = normalize_dn(site.ldap.suffix)
    db_starts = [k for k, d in enumerate(directives) if d.keyword == "database"]
    if not db_starts:
        raise ConfigConflict(f"{path} has no 'database' section; is this slapd's config file?")
    glob = directives[:db_starts[0]]
    target = None
    for n, start in enumerate(db_starts):
        end = db_starts[n + 1] if n + 1 < len(db_starts) else len(directives)
        section = directives[start:end]
        if any(d.keyword == "suffix" and normalize_dn(d.args) == suffix for d in section):
            target = section
            break
    if target is None:
        raise ConfigConflict(f"{path} has no database with suffix {site.ldap.suffix!r} (mailha:ldap:suffix); "
                             f"fix the pillar or install the directory first")
    problems = []
    for d in glob:
        if d.keyword in _CONFLICTING_GLOBAL:
            problems.append(f"line {d.first + 1}: {d.keyword} is set outside the managed block")
    if not any(d.keyword == "rootdn" for d in target):
        problems.append(f"the database of {site.ldap.suffix} has no rootdn; slapd needs one before syncrepl "
                        f"(set it to mailha:ldap:rootdn)")
    for d in target:
        if d.keyword in _CONFLICTING_DB or (d.keyword == "overlay" and d.args.lower().startswith("syncprov")):
            what = "overlay syncprov" if d.keyword == "overlay" else d.keyword
            problems.append(f"line {d.first + 1}: {what} is set outside the managed block")
    types = _index_types(target)
    indexes = []
    for attr in ("entryCSN", "entryUUID"):
        have = types.get(attr.lower())
        if have is None:
            indexes.append(attr)
        elif "eq" not in have and "default" not in have:
            problems.append(f"{attr} is indexed without 'eq'; add eq to that index line")
    if problems:
        raise ConfigConflict(f"{path}: cannot add mirror mode: " + "; ".join(problems)
                             + " (remove these lines: salt-mailha manages replication settings itself)")
    has_module = any(d.keyword == "moduleload" and re.match(r"^(\S*/)?syncprov(\.la|\.so)?$", d.args)
                     for d in glob)
    has_path = any(d.keyword == "modulepath" for d in glob)
    block = render_mirrormode(site, moduleload=not has_module, modulepath=not has_path, indexes=indexes)
    g_at = glob[-1].last + 1 if glob else directives[db_starts[0]].first
    d_at = target[-1].last + 1
    g_block = [BEGIN.format(part="global"), *block.global_lines, END.format(part="global")]
    d_block = [BEGIN.format(part="database"), *block.database_lines, END.format(part="database")]
    out = lines[:g_at] + g_block + lines[g_at:d_at] + d_block + lines[d_at:]
    return "\n".join(out) + "\n"


# ----------------------------------------------------------------------------------- cn=config


@dataclasses.dataclass(frozen=True)
class CnConfigDesired:
    suffix: str
    server_ids: tuple  # "1 ldap://10.1.1.17:389/"
    syncrepls: tuple  # tuples of (key, value) per rid
    indexes: tuple = ("entryCSN", "entryUUID")
    module: str = "syncprov"
    checkpoint: str = SYNCPROV_CHECKPOINT
    sessionlog: str = SYNCPROV_SESSIONLOG


def desired_cnconfig(site):
    servers = mirror_servers(site)
    return CnConfigDesired(
        suffix=site.ldap.suffix,
        server_ids=tuple(f"{s.server_id} {s.url}" for s in servers),
        syncrepls=tuple(syncrepl_params(site, s) for s in servers),
    )


@dataclasses.dataclass(frozen=True)
class CnConfigLive:
    """What a live cn=config holds (read by the execution side)."""

    server_ids: tuple  # olcServerID values, ordering prefix stripped
    modules: tuple  # ((dn, (olcModuleLoad values without {n}, ...)), ...)
    database_dn: str | None  # the olcDatabase entry whose olcSuffix is the site suffix
    indexes: tuple  # olcDbIndex values
    syncrepls: tuple  # olcSyncrepl values, ordering prefix stripped
    multiprovider: bool
    overlay_dn: str | None  # olcOverlay={n}syncprov,<database_dn>
    overlay: tuple = ()  # ((attr, value), ...): olcSpCheckpoint, olcSpSessionlog
    has_rootdn: bool = True  # olcRootDN is set: slapd refuses olcSyncrepl without it


@dataclasses.dataclass(frozen=True)
class LdapOp:
    """One LDAP operation on cn=config. ``kind`` is "add" (entry) or "modify"; ``changes`` is
    ``((attr, op, values), ...)`` with op one of add/replace/delete."""

    kind: str
    dn: str
    changes: tuple
    why: str


_ORDER_PREFIX = re.compile(r"^\{-?\d+\}")


def strip_order(value):
    return _ORDER_PREFIX.sub("", str(value))


def parse_syncrepl(value):
    """An olcSyncrepl/syncrepl value -> dict (keys lower-case, values unquoted).

    >>> parse_syncrepl('{0}rid=001 provider=ldap://a:389/ retry="1 +"')["retry"]
    '1 +'
    """
    try:
        tokens = shlex.split(strip_order(value), posix=True)
    except ValueError as exc:
        raise ParseError(f"cannot parse syncrepl value: {exc}") from None
    out = {}
    for tok in tokens:
        key, sep, val = tok.partition("=")
        if not sep:
            raise ParseError(f"syncrepl token {key!r} has no '='")
        out[key.lower()] = val
    return out


def _syncrepl_matches(want_params, have_value):
    have = parse_syncrepl(have_value)
    for k, v in want_params:
        got = have.get(k.lower())
        if k == "rid":
            if got is None or int(got) != int(v):
                return False
        elif k in ("binddn", "searchbase"):
            if got is None or normalize_dn(got) != normalize_dn(v):
                return False
        elif got != v:
            return False
    return True


def plan_cnconfig(desired, live):
    """The LDAP operations that bring ``live`` to ``desired``, in the order slapd accepts them
    (module, serverIDs, indexes, overlay, then syncrepl + multi-provider together). Empty when
    nothing differs."""
    if live.database_dn is None:
        raise ConfigConflict(f"cn=config has no database with olcSuffix {desired.suffix!r} "
                             f"(mailha:ldap:suffix); fix the pillar or install the directory first")
    if not live.has_rootdn:
        raise ConfigConflict(f"{live.database_dn} has no olcRootDN; slapd refuses syncrepl without one "
                             f"(set it to mailha:ldap:rootdn); nothing was changed")
    ops = []
    loaded = [strip_order(v) for _, vals in live.modules for v in vals]
    if not any(re.match(r"^(\S*/)?syncprov(\.la|\.so)?$", v) for v in loaded):
        if live.modules:
            ops.append(LdapOp("modify", live.modules[0][0], (("olcModuleLoad", "add", ("syncprov",)),),
                              "load the syncprov module"))
        else:
            ops.append(LdapOp("add", "cn=module,cn=config",
                              (("objectClass", "add", ("olcModuleList",)), ("cn", "add", ("module",)),
                               ("olcModulePath", "add", (MODULE_PATH,)), ("olcModuleLoad", "add", ("syncprov",))),
                              "load the syncprov module"))
    if list(live.server_ids) != list(desired.server_ids):
        ops.append(LdapOp("modify", "cn=config", (("olcServerID", "replace", desired.server_ids),),
                          "set one serverID per mail node"))
    have_idx = {}
    for v in live.indexes:
        parts = strip_order(v).split(None, 1)
        for a in parts[0].split(","):
            have_idx.setdefault(a.lower(), set()).update((parts[1] if len(parts) > 1 else "default").split(","))
    missing = []
    for attr in desired.indexes:
        types = have_idx.get(attr.lower())
        if types is None:
            missing.append(f"{attr} eq")
        elif "eq" not in types and "default" not in types:
            raise ConfigConflict(f"{live.database_dn}: {attr} is indexed without 'eq'; add eq to its olcDbIndex")
    if missing:
        ops.append(LdapOp("modify", live.database_dn, (("olcDbIndex", "add", tuple(missing)),),
                          "index entryCSN/entryUUID for syncprov"))
    want_ov = (("olcSpCheckpoint", desired.checkpoint), ("olcSpSessionlog", desired.sessionlog))
    if live.overlay_dn is None:
        ops.append(LdapOp("add", f"olcOverlay=syncprov,{live.database_dn}",
                          (("objectClass", "add", ("olcOverlayConfig", "olcSyncProvConfig")),
                           ("olcOverlay", "add", ("syncprov",)),
                           *((a, "add", (v,)) for a, v in want_ov)),
                          "add the syncprov overlay"))
    else:
        have_ov = dict(live.overlay)
        diff = tuple((a, "replace", (v,)) for a, v in want_ov if have_ov.get(a) != v)
        if diff:
            ops.append(LdapOp("modify", live.overlay_dn, diff, "set syncprov checkpoint/sessionlog"))
    # compared per rid: slaptest -F (slapd.conf -> cn=config) stores them in its own order
    by_rid = {}
    for v in live.syncrepls:
        rid = parse_syncrepl(v).get("rid", "")
        by_rid[int(rid) if rid.isdigit() else rid] = v
    same = len(by_rid) == len(live.syncrepls) == len(desired.syncrepls) and all(
        int(w[0][1]) in by_rid and _syncrepl_matches(w, by_rid[int(w[0][1])]) for w in desired.syncrepls)
    if not same or not live.multiprovider:
        changes = []
        if not same:
            changes.append(("olcSyncrepl", "replace",
                            tuple(f"{{{i}}}{syncrepl_value(p)}" for i, p in enumerate(desired.syncrepls))))
        if not live.multiprovider:
            changes.append(("olcMultiProvider", "replace", ("TRUE",)))
        ops.append(LdapOp("modify", live.database_dn, tuple(changes),
                          "replicate from every provider in mirror mode"))
    return ops


_CREDENTIALS = re.compile(r'(credentials=)("[^"]*"|\S+)', re.IGNORECASE)


def mask_credentials(data):
    """Replace every ``credentials=...`` value in ``data`` (str or nested lists/dicts) with
    ``<redacted>``: a diff also shows the *old* credential, which is no longer a pillar secret
    that ``secret.redact`` would know."""
    if isinstance(data, str):
        return _CREDENTIALS.sub(r'\1"<redacted>"', data)
    if isinstance(data, dict):
        return {k: mask_credentials(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return type(data)(mask_credentials(v) for v in data)
    return data


def render_cnconfig_ldif(site):
    """The cn=config form as LDIF (for review and for ``ldapmodify``); contains the credential."""
    d = desired_cnconfig(site)
    return environment().get_template("slapd-mirrormode-cnconfig.ldif.j2").render(
        d=d, syncrepls=[syncrepl_value(p) for p in d.syncrepls],
    )


def describe_ops(ops, live):
    """``{dn: {"old": {attr: values}, "new": {attr: values}}}`` for state ``changes``. Contains
    the credential (olcSyncrepl): redact before returning it."""
    current = {
        "olcServerID": list(live.server_ids),
        "olcDbIndex": [strip_order(v) for v in live.indexes],
        "olcSyncrepl": list(live.syncrepls),
        "olcMultiProvider": ["TRUE" if live.multiprovider else "FALSE"],
        "olcModuleLoad": [v for _, vals in live.modules[:1] for v in vals],
        **{a: [v] for a, v in live.overlay},
    }
    out = {}
    for op in ops:
        entry = out.setdefault(op.dn, {"old": None if op.kind == "add" else {}, "new": {}})
        for attr, how, vals in op.changes:
            vals = [strip_order(v) for v in vals]
            if op.kind == "add":
                entry["new"][attr] = vals
                continue
            old = current.get(attr, [])
            entry["old"][attr] = old
            entry["new"][attr] = old + [v for v in vals if v not in old] if how == "add" else vals
    return out


# ----------------------------------------------------------------------------------- contextCSN

_CSN = re.compile(r"^(\d{14})\.(\d{6})Z#([0-9a-fA-F]{6})#([0-9a-fA-F]{3})#([0-9a-fA-F]{6})$")


@dataclasses.dataclass(frozen=True, order=True)
class Csn:
    """One change sequence number: ``YYYYmmddHHMMSS.uuuuuuZ#count#sid#mod`` (hex fields)."""

    time: datetime.datetime
    count: int
    sid: int
    mod: int
    text: str = dataclasses.field(compare=False)


def parse_csn(text):
    text = text.decode() if isinstance(text, bytes) else str(text)
    m = _CSN.match(text.strip())
    if not m:
        raise ParseError(f"{text!r} is not a CSN (expected YYYYmmddHHMMSS.uuuuuuZ#cnt#sid#mod)")
    stamp, micro, count, sid, mod = m.groups()
    when = datetime.datetime.strptime(stamp, "%Y%m%d%H%M%S").replace(
        microsecond=int(micro), tzinfo=datetime.timezone.utc)
    return Csn(when, int(count, 16), int(sid, 16), int(mod, 16), text.strip())


def parse_context_csns(values):
    """contextCSN values of one provider -> {serverID: Csn}. One value per serverID."""
    out = {}
    for v in values:
        csn = parse_csn(v)
        if csn.sid in out:
            raise ParseError(f"two contextCSN values for serverID {csn.sid}: {out[csn.sid].text}, {csn.text}")
        out[csn.sid] = csn
    return out


def parse_ldif_context_csns(text):
    """``ldapsearch -LLL ... contextCSN`` output -> {dn: {serverID: Csn}} (continuations joined)."""
    entries, dn, vals, last = {}, None, [], None
    for raw in text.splitlines() + [""]:
        if raw.startswith(" ") and last is not None:
            last[-1] += raw[1:]
            continue
        line = raw.strip()
        if not line:
            if dn is not None:
                entries[dn] = parse_context_csns(vals)
            dn, vals, last = None, [], None
            continue
        if line.startswith("#"):
            continue
        key, sep, value = line.partition(":")
        if not sep:
            raise ParseError(f"not LDIF: {line!r}")
        holder = [value.strip()]
        if key.lower() == "dn":
            dn = holder[0]
            last = None
            continue
        if key.lower() == "contextcsn":
            vals.append(holder[0])
            last = vals
    return entries


@dataclasses.dataclass(frozen=True)
class ReplicationVerdict:
    agree: bool
    reason: str
    lag: dict  # node -> seconds behind the newest change it lacks (0.0 when caught up)
    behind: dict  # node -> sorted serverIDs it is behind on


def compare_replication(views):
    """Decide whether providers agree.

    ``views``: node -> {serverID: Csn} (its contextCSN) or ``None`` when the node could not be
    read. They agree when every node was read and all hold the same CSN for every serverID. A
    node's lag is, over the serverIDs it is behind on, the largest gap between the newest CSN
    any peer has and its own (a serverID it lacks entirely counts from the peer's oldest change).
    """
    if not views:
        return ReplicationVerdict(False, "no LDAP providers to compare", {}, {})
    down = sorted(n for n, v in views.items() if v is None)
    read = {n: v for n, v in views.items() if v is not None}
    newest = {}
    for v in read.values():
        for sid, csn in v.items():
            if sid not in newest or csn > newest[sid]:
                newest[sid] = csn
    oldest = min((c.time for c in newest.values()), default=None)
    lag, behind = {}, {}
    for node, v in read.items():
        worst = 0.0
        for sid, top in newest.items():
            mine = v.get(sid)
            if mine is not None and mine >= top:
                continue
            behind.setdefault(node, []).append(sid)
            base = mine.time if mine is not None else oldest
            worst = max(worst, (top.time - base).total_seconds())
        lag[node] = worst
    parts = []
    if down:
        parts.append(f"cannot read {', '.join(down)}")
    for node in sorted(behind):
        parts.append(f"{node} is behind on serverID {','.join(map(str, behind[node]))} by {lag[node]:.3f} s")
    if parts:
        return ReplicationVerdict(False, "; ".join(parts), lag, {k: sorted(v) for k, v in behind.items()})
    return ReplicationVerdict(True, f"{len(read)} providers agree on {len(newest)} serverID(s)", lag, {})


# ----------------------------------------------------------------------------------- live access
# Thin ldap3 helpers shared by the execution and state modules. ldap3 keeps its own logging off
# unless asked, so bound credentials never reach a log from here.

DEFAULT_CONFIG_URI = "ldapi://%2Fvar%2Frun%2Fslapd%2Fldapi"  # Debian's slapd, root via SASL EXTERNAL
_URI = re.compile(r"^(ldap|ldaps)://[A-Za-z0-9.\-\[\]:]+/?$|^ldapi://[A-Za-z0-9%._\-/]+$")


def connect(uri, binddn=None, password=None, timeout=3):
    """An ldap3 connection: SASL EXTERNAL on ``ldapi://`` without ``binddn``, else a simple bind.
    Raises ``CommandFailed`` naming the URI (never the password)."""
    import ldap3  # noqa: PLC0415 - only the live side needs it

    from .errors import CommandFailed

    if not _URI.match(uri or ""):
        raise CommandFailed(f"{uri!r} is not an ldap://host:port/ or ldapi://<percent-encoded socket> URI")
    # ldap3 wants no trailing "/" after the port (slapd's serverID URLs have one)
    host = uri.rstrip("/") if not uri.startswith("ldapi://") else uri
    timeout = max(1, int(-(-float(timeout) // 1)))  # ldap3 packs the receive timeout as an integer
    server = ldap3.Server(host, connect_timeout=timeout, get_info=ldap3.NONE)
    try:
        if binddn is None:
            conn = ldap3.Connection(server, authentication=ldap3.SASL, sasl_mechanism=ldap3.EXTERNAL,
                                    sasl_credentials="", receive_timeout=timeout, raise_exceptions=True)
        else:
            conn = ldap3.Connection(server, user=binddn, password=password.reveal(),
                                    receive_timeout=timeout, raise_exceptions=True)
        conn.bind()
    except ldap3.core.exceptions.LDAPException as exc:
        raise CommandFailed(f"cannot bind to {uri}{' as ' + binddn if binddn else ''}: "
                            f"{type(exc).__name__}: {exc}") from None
    return conn


def read_context_csns(conn, suffix):
    """{serverID: Csn} from the suffix entry's contextCSN (empty when it has none yet)."""
    import ldap3  # noqa: PLC0415

    try:
        conn.search(suffix, "(objectClass=*)", search_scope=ldap3.BASE, attributes=["contextCSN"])
    except ldap3.core.exceptions.LDAPNoSuchObjectResult:  # an empty directory: nothing replicated yet
        return {}
    if not conn.entries:
        return {}
    values = conn.response[0]["raw_attributes"].get("contextCSN", [])
    return parse_context_csns(values)


def _values(entry, attr):
    for k, v in entry["raw_attributes"].items():
        if k.lower() == attr.lower():
            return tuple(x.decode() for x in v)
    return ()


def read_cnconfig(conn, suffix):
    """Snapshot the parts of a live cn=config that mirror mode touches."""
    import ldap3  # noqa: PLC0415

    conn.search("cn=config", "(objectClass=*)", search_scope=ldap3.BASE, attributes=["olcServerID"])
    server_ids = tuple(strip_order(v) for v in _values(conn.response[0], "olcServerID"))
    conn.search("cn=config", "(objectClass=olcModuleList)", search_scope=ldap3.LEVEL,
                attributes=["olcModuleLoad"])
    modules = tuple(sorted((r["dn"], tuple(strip_order(v) for v in _values(r, "olcModuleLoad")))
                           for r in conn.response if r.get("type") == "searchResEntry"))
    conn.search("cn=config", "(olcSuffix=*)", search_scope=ldap3.LEVEL,
                attributes=["olcSuffix", "olcDbIndex", "olcSyncrepl", "olcMultiProvider", "olcMirrorMode",
                            "olcRootDN"])
    db = None
    for r in conn.response:
        if r.get("type") == "searchResEntry" and any(
                normalize_dn(s) == normalize_dn(suffix) for s in _values(r, "olcSuffix")):
            db = r
    if db is None:
        return CnConfigLive(server_ids, modules, None, (), (), False, None)
    multi = "TRUE" in _values(db, "olcMultiProvider") + _values(db, "olcMirrorMode")
    syncrepls = tuple(sorted(_values(db, "olcSyncrepl"), key=lambda v: int(v[1:v.index("}")])
                             if v.startswith("{") else 0))
    conn.search(db["dn"], "(objectClass=olcSyncProvConfig)", search_scope=ldap3.LEVEL,
                attributes=["olcSpCheckpoint", "olcSpSessionlog"])
    ov = next((r for r in conn.response if r.get("type") == "searchResEntry"), None)
    overlay = ()
    if ov is not None:
        overlay = tuple((a, _values(ov, a)[0]) for a in ("olcSpCheckpoint", "olcSpSessionlog") if _values(ov, a))
    return CnConfigLive(server_ids, modules, db["dn"], _values(db, "olcDbIndex"),
                        tuple(strip_order(v) for v in syncrepls), multi,
                        ov["dn"] if ov is not None else None, overlay, bool(_values(db, "olcRootDN")))


def apply_ops(conn, ops):
    """Run planned cn=config operations in order; stops at the first failure (``CommandFailed``
    naming the operation; slapd rejects a bad cn=config change as a whole, so nothing of a
    failed operation stays)."""
    import ldap3  # noqa: PLC0415

    from .errors import CommandFailed

    kinds = {"add": ldap3.MODIFY_ADD, "replace": ldap3.MODIFY_REPLACE, "delete": ldap3.MODIFY_DELETE}
    done = []
    for op in ops:
        try:
            if op.kind == "add":
                attrs = {a: list(v) for a, _, v in op.changes}
                conn.add(op.dn, attributes=attrs)
            else:
                conn.modify(op.dn, {a: [(kinds[o], list(v))] for a, o, v in op.changes})
        except ldap3.core.exceptions.LDAPException as exc:
            raise CommandFailed(f"cn=config: {op.why} ({op.kind} {op.dn}) failed after {len(done)} "
                                f"applied operation(s): {type(exc).__name__}: {exc}") from None
        done.append(op)
    return done


# ----------------------------------------------------------------------------------- native path


def render_native_slapd_conf(site, node):
    """The whole slapd.conf of a mail node on the native path (no iRedMail installer), with the
    mirror-mode block merged in. The rootpw is stored hashed (``secret.slapd_rootpw_hash``)."""
    lds = site.ldap
    base = environment().get_template("slapd-native.conf.j2").render(
        node=node, suffix=lds.suffix, rootdn=lds.rootdn,
        rootpw_hash=secret.slapd_rootpw_hash(lds.rootpw, site.name, node.id))
    return merge_slapd_conf(base, site, "/etc/ldap/slapd.conf")


def render_slapd_default(site, node):
    """/etc/default/slapd for the native path: slapd.conf (not slapd.d), and listeners that include
    this node's serverID URL exactly (slapd refuses to start with "no serverID / URL match"),
    loopback for the node's own Postfix/Dovecot lookups, and ldapi for root."""
    own = next(s.url for s in mirror_servers(site) if s.node == node.id)
    local = listener_url("127.0.0.1", site.ldap.port)
    return environment().get_template("slapd-default.j2").render(node=node, services=f"{own} {local} ldapi:///")


# ----------------------------------------------------------------------------------- base entry
# On the native path slapd starts with an empty database: nothing can be added below the suffix
# until its own entry exists (iRedMail's installer creates its tree itself). Postfix and Dovecot
# search the suffix itself (see the mail templates), so the suffix entry is the only container
# the native path needs.

_RDN_VALUE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._-]*$")
_DC_VALUE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?$")
_SUPPORTED = "dc=<label> (dcObject + organization), o=<name> (organization) or ou=<name> (organizationalUnit)"


@dataclasses.dataclass(frozen=True)
class BaseEntry:
    """The suffix entry to create: its DN, objectClasses and attributes (values as lists)."""

    dn: str
    object_classes: tuple
    attributes: tuple  # ((attr, value), ...), the RDN attribute first

    def as_ldap3(self):
        return {a: [v] for a, v in self.attributes}

    def describe(self):
        """Plain data for a state's ``changes``: objectClass and attributes."""
        return {"objectClass": list(self.object_classes), **{a: v for a, v in self.attributes}}


def _rdns(dn):
    out = []
    for part in dn.split(","):
        attr, sep, value = part.strip().partition("=")
        out.append((attr.strip().lower(), value.strip()) if sep else (part.strip(), None))
    return out


def base_entry(suffix):
    """The entry that makes ``suffix`` (``mailha:ldap:suffix``) exist, derived from its first RDN.

    ``dc=example,dc=net`` -> dcObject + organization with ``o: example.net`` (the domain, when
    every RDN is a dc; else the dc value); ``o=Example`` -> organization; ``ou=Mail,...`` ->
    organizationalUnit. Anything else raises ``ValidationError`` on ``mailha:ldap:suffix``.
    """
    key = "mailha:ldap:suffix"
    rdns = _rdns(suffix or "")
    attr, value = rdns[0]
    if value is None or not attr:
        raise ValidationError([(key, f"{suffix!r} is not a DN, e.g. dc=example,dc=net")])
    if "+" in value:
        raise ValidationError([(key, f"{suffix!r} starts with a multi-valued RDN; salt-mailha creates the suffix "
                                     f"entry only for a single {_SUPPORTED}")])
    if attr not in ("dc", "o", "ou"):
        raise ValidationError([(key, f"{suffix!r} starts with {attr}=, for which salt-mailha cannot create the "
                                     f"suffix entry on the native mail path; use a suffix starting with "
                                     f"{_SUPPORTED}")])
    pattern = _DC_VALUE if attr == "dc" else _RDN_VALUE
    if not pattern.match(value):
        raise ValidationError([(key, f"{suffix!r}: the value {value!r} of its first RDN is not supported; "
                                     "use letters, digits and " + ("'-'" if attr == "dc" else "space . _ -")
                                     + " only")])
    dn = ",".join(f"{a}={v}" for a, v in rdns)
    if attr == "dc":
        dcs = [v for a, v in rdns if a == "dc"]
        org = ".".join(dcs) if len(dcs) == len(rdns) else value
        return BaseEntry(dn, ("top", "dcObject", "organization"), (("dc", value), ("o", org)))
    if attr == "o":
        return BaseEntry(dn, ("top", "organization"), (("o", value),))
    return BaseEntry(dn, ("top", "organizationalUnit"), (("ou", value),))


def base_entry_creator(site):
    """The one server that creates the suffix entry: the first LDAP server in site order (the
    first mail node). Both mirror-mode providers accept writes, so two could race and add the
    same DN twice; the others wait for syncrepl to carry it."""
    servers = mirror_servers(site)
    if not servers:
        raise ValidationError([("mailha:nodes", "no node has role mail, so no LDAP server holds the suffix")])
    return servers[0]


@dataclasses.dataclass(frozen=True)
class BaseEntryAction:
    """What one node does about the suffix entry: ``none`` (it exists here), ``create`` (this
    node is the creator and no server holds it) or ``wait`` (syncrepl or the creator has to act
    first). ``reason`` says why; ``hint`` says what an operator does if the wait never ends."""

    action: str
    reason: str
    hint: str = ""


def decide_base_entry(node, creator, views, force=False):
    """Decide for ``node`` from ``views``: LDAP server node -> True (holds the suffix entry),
    False (reachable, lacks it) or None (could not be read).

    Only ``creator`` ever creates, and only once every other server is known to lack the entry:
    a rebuilt or briefly-down creator next to a peer that still holds the directory must take the
    peer's entry through syncrepl, not add a second one with another entryUUID. ``force`` lets
    the creator proceed when peers cannot be read (they are new, wiped or gone for good); it
    never creates while a peer is known to hold the entry.
    """
    here = views.get(node)
    if here is None:
        return BaseEntryAction("wait", f"cannot read {node}'s own slapd",
                               f"check that slapd runs on {node} and listens on its serverID URL")
    if here:
        return BaseEntryAction("none", f"exists on {node}")
    holders = sorted(n for n, v in views.items() if v and n != node)
    if holders:
        return BaseEntryAction("wait", f"missing on {node} but {', '.join(holders)} hold(s) it; syncrepl carries "
                                       f"it here", f"check replication: salt {node} mailha_ldap.replication_status")
    if node != creator:
        if views.get(creator) is None:
            return BaseEntryAction("wait", f"missing on {node}; {creator} creates it (first LDAP server) but cannot "
                                           f"be read", f"bring slapd on {creator} up; if {creator} is gone for good, "
                                                       f"list another mail node first in mailha:nodes")
        return BaseEntryAction("wait", f"missing on {node}; {creator} creates it (first LDAP server) and syncrepl "
                                       f"carries it here", f"apply mailha.ldap on {creator}, which creates it")
    unknown = sorted(n for n, v in views.items() if v is None)
    if unknown and not force:
        return BaseEntryAction(
            "wait", f"missing on {node}, which creates it, but {', '.join(unknown)} cannot be read: one of them may "
                    f"hold the directory, and a second entry for the same DN would conflict in mirror mode",
            f"start slapd on {', '.join(unknown)}; or, if they hold no directory (new, wiped or gone for good), "
            f"run: salt {node} mailha_ldap.create_base_entry force=True")
    others = sorted(n for n in views if n != node)
    return BaseEntryAction("create", f"missing on {node}, which creates it (first LDAP server)"
                                     + (f"; syncrepl carries it to {', '.join(others)}" if others else ""))


def entry_exists(conn, dn):
    """True when ``dn`` exists on the server behind ``conn`` (a base search; noSuchObject is False)."""
    import ldap3  # noqa: PLC0415

    try:
        conn.search(dn, "(objectClass=*)", search_scope=ldap3.BASE, attributes=["1.1"])
    except ldap3.core.exceptions.LDAPNoSuchObjectResult:
        return False
    return bool(conn.entries)


def add_entry(conn, entry):
    """Add ``entry``; False when it already exists (another writer got there first)."""
    import ldap3  # noqa: PLC0415

    from .errors import CommandFailed

    try:
        conn.add(entry.dn, list(entry.object_classes), entry.as_ldap3())
    except ldap3.core.exceptions.LDAPEntryAlreadyExistsResult:
        return False
    except ldap3.core.exceptions.LDAPException as exc:
        raise CommandFailed(f"adding {entry.dn} failed: {type(exc).__name__}: {exc}") from None
    return True
