"""DNS tier: the records a site wants, the zone as it is, and the minimal plan between them.

Pure: no Salt, no sockets. ``salt_mailha.modules.mailha_dns`` reads the zone with dnspython,
hands the text to :func:`parse_rrsets`, asks :func:`plan` for a :class:`Plan` and sends it as one
RFC 2136 UPDATE whose prerequisites are each changed RRset's exact current contents.

Desired records (:func:`desired_records`), all under the site's mail domain:

* ``<domain> MX`` one record per node of ``dns:mx`` (``<pref> <node fqdn>``), minus withdrawn
  nodes; TTL ``dns:ttl:failover`` (it changes when a node fails).
* ``<name>.<domain> A <mail VIP>`` for every ``dns:names`` entry; TTL ``dns:ttl:failover``
  (clients re-resolve quickly if the VIP ever moves).
* ``<node fqdn> A <node address>`` for each MX target inside the zone (the address on the mail
  VIP's network); TTL ``dns:ttl:default``: a node's own address does not move on failover.

Ownership registry (one TXT string per record we own, kept next to the record)::

    _mailha-owner.<name>  TXT  "heritage=salt-mailha,site=<site>,rr=<TYPE> <rdata>"
    _mailha-owner.<domain> TXT "heritage=salt-mailha,site=<site>,withdrawn=<node>"

Ownership is per record, not per RRset, so a record added by hand, even inside an RRset we
manage (a backup MX at a provider), is never deleted; if it shares an RRset whose TTL the pillar
would change, the TTL is kept (one TTL per RRset) and the plan says so. A record that already
exists but is not ours is a conflict (so is a foreign address in the A RRset of a managed name:
clients would be split): the plan is refused unless ``take_over=True`` adopts those RRsets whole.
The ``withdrawn`` markers make a reactor's ``withdraw_mx`` stick: a later ``records`` run keeps
the node out of the MX set until ``restore_mx``. Registry strings of other sites are left alone.

Safety (checked on the whole plan before anything is sent, nothing half-applied):

* never empty the domain's MX RRset (not even with ``force``);
* never empty the A RRset of a name the pillar still uses (``dns:names``, MX targets); names
  dropped from the pillar are released: their records we own are deleted;
* refuse, unless ``force``, a plan deleting more than ``dns:max_delete_share`` of the records we
  own. Deletions are counted net per RRset, as octoDNS does: replacing a value is an update.
"""
import re
from dataclasses import dataclass, field

from salt_mailha.core.errors import CommandFailed, ParseError, Refused

OWNER_LABEL = "_mailha-owner"
HERITAGE = "heritage=salt-mailha"
MANAGED_TYPES = ("MX", "A")
RDTYPE = re.compile(r"^[A-Z][A-Z0-9]*$")
_CLASSES = {"IN", "CH", "HS"}


class ZoneChanged(CommandFailed):
    """A prerequisite of our UPDATE failed: someone changed the zone since we read it."""


# ----------------------------------------------------------------------------------- data


def absolute(name, origin):
    """``name`` as a lowercase absolute domain name; ``@`` and relative names join ``origin``."""
    origin = origin.strip().rstrip(".").lower()
    name = name.strip().lower()
    if name in ("@", ""):
        return origin + "."
    if name.endswith("."):
        return name
    return f"{name}.{origin}." if origin else f"{name}."


def in_zone(name, zone):
    zone = absolute(zone, ".")
    return name == zone or name.endswith("." + zone)


@dataclass(frozen=True)
class RRset:
    """One RRset: absolute owner name, type, TTL and the rdata texts (dnspython's form)."""

    name: str
    rdtype: str
    ttl: int
    rdatas: frozenset

    @property
    def key(self):
        return (self.name, self.rdtype)

    def lines(self):
        return [f"{self.name} {self.ttl} {self.rdtype} {r}" for r in sorted(self.rdatas)]


def parse_rrsets(text, origin="."):
    """Parse master-file lines (``dig``/AXFR/``rrset.to_text()`` form) into ``{(name, type): RRset}``.

    Each line is ``<name> <ttl> [<class>] <type> <rdata...>``; blank lines and ``;`` comments are
    skipped. Records of one RRset are merged (the TTL of the last one wins, as servers keep one
    TTL per RRset). SOA is kept like any other type (the caller reads the serial from it).
    """
    out = {}
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith(";"):
            continue
        parts = line.split(None, 4)
        try:
            name, ttl = parts[0], int(parts[1])
            rest = parts[2:]
            if rest and rest[0].upper() in _CLASSES:
                rest = " ".join(rest[1:]).split(None, 1)
            rdtype, rdata = rest[0].upper(), rest[1].strip()
        except (IndexError, ValueError):
            raise ParseError(f"DNS record line {lineno} is not '<name> <ttl> IN <type> <rdata>': "
                             f"{line!r}") from None
        if not RDTYPE.match(rdtype):
            raise ParseError(f"DNS record line {lineno}: {rdtype!r} is not a record type")
        key = (absolute(name, origin), rdtype)
        old = out.get(key)
        rdatas = (old.rdatas if old else frozenset()) | {rdata}
        out[key] = RRset(key[0], rdtype, ttl, rdatas)
    return out


def soa_serial(rrsets, zone):
    soa = rrsets.get((absolute(zone, "."), "SOA"))
    if not soa:
        return None
    return int(next(iter(soa.rdatas)).split()[2])


# ----------------------------------------------------------------------------------- desired


def desired_records(site, withdrawn=()):
    """``{(name, type): RRset}`` the site wants, without the ownership registry.

    ``withdrawn`` names mail nodes whose MX is left out (the reactor's withdraw_mx).
    """
    d = site.dns
    if d is None:
        raise Refused("pillar mailha:dns is not set: add the dns section to manage records")
    domain = absolute(site.domain, ".")
    zone = absolute(d.zone, ".")
    vip = site.vips.get("mail")
    net = vip.network if vip else "public"
    out = {}
    mx = set()
    for node_id, pref in d.mx.items():
        node = site.node(node_id)
        target = absolute(node.fqdn, ".")
        if node_id not in withdrawn:
            mx.add(f"{pref} {target}")
        address = node.address(net) or node.address("public")
        if in_zone(target, zone) and address:
            out[(target, "A")] = RRset(target, "A", d.ttl_default, frozenset({address}))
    if mx:
        out[(domain, "MX")] = RRset(domain, "MX", d.ttl_failover, frozenset(mx))
    if vip:
        for label in d.names:
            name = absolute(label, domain)
            out[(name, "A")] = RRset(name, "A", d.ttl_failover, frozenset({vip.address}))
    return out


# ----------------------------------------------------------------------------------- registry


def owner_name(name, zone):
    """The registry name for ``name``: ``_mailha-owner.<name>`` (``_mailha-owner.<zone>`` at the apex)."""
    return f"{OWNER_LABEL}.{name}"


def _owner_string(site_name, rest):
    return f'"{HERITAGE},site={site_name},{rest}"'


def parse_owner_txt(rdata):
    """``(site, kind, value)`` of one registry TXT rdata, or None if it is not one of ours.

    ``kind`` is ``rr`` (value ``(type, rdata)``) or ``withdrawn`` (value: node id).
    """
    if not (rdata.startswith('"') and rdata.endswith('"')) or rdata.count('"') != 2:
        return None
    body = rdata[1:-1]
    head, sep, rest = body.partition(",site=")
    if head != HERITAGE or not sep:
        return None
    site, sep, item = rest.partition(",")
    key, eq, value = item.partition("=")
    if not (sep and eq and site):
        return None
    if key == "rr":
        rdtype, _, rr = value.partition(" ")
        if not RDTYPE.match(rdtype) or not rr:
            return None
        return (site, "rr", (rdtype, rr))
    if key == "withdrawn":
        return (site, "withdrawn", value)
    return None


def read_registry(current, site_name):
    """``(owned, withdrawn)``: ``{(name, type): set(rdata)}`` we own, and withdrawn node ids."""
    owned, withdrawn = {}, set()
    prefix = OWNER_LABEL + "."
    for (name, rdtype), rrset in current.items():
        if rdtype != "TXT" or not name.startswith(prefix):
            continue
        target = name[len(prefix):]
        for rdata in rrset.rdatas:
            parsed = parse_owner_txt(rdata)
            if not parsed or parsed[0] != site_name:
                continue
            if parsed[1] == "rr":
                owned.setdefault((target, parsed[2][0]), set()).add(parsed[2][1])
            else:
                withdrawn.add(parsed[2])
    return owned, frozenset(withdrawn)


# ----------------------------------------------------------------------------------- plan


@dataclass(frozen=True)
class Change:
    """One RRset to change: ``old`` is its exact current content (None: absent), ``new`` the target."""

    name: str
    rdtype: str
    old: RRset | None
    new: RRset | None

    @property
    def adds(self):
        return sorted((self.new.rdatas if self.new else frozenset())
                      - (self.old.rdatas if self.old else frozenset()))

    @property
    def deletes(self):
        return sorted((self.old.rdatas if self.old else frozenset())
                      - (self.new.rdatas if self.new else frozenset()))

    @property
    def ttl_changed(self):
        return bool(self.old and self.new and self.old.ttl != self.new.ttl)

    @property
    def registry(self):
        return self.name.startswith(OWNER_LABEL + ".")

    def text(self):
        ttl = f"{self.old.ttl} -> {self.new.ttl}" if self.ttl_changed else (self.new or self.old).ttl
        lines = [f"{self.name} {self.rdtype} (ttl {ttl}):"]
        lines += [f"  + {r}" for r in self.adds]
        lines += [f"  - {r}" for r in self.deletes]
        return "\n".join(lines)


@dataclass(frozen=True)
class Plan:
    zone: str
    site: str
    changes: tuple = ()
    withdrawn: frozenset = frozenset()
    owned_count: int = 0
    notes: tuple = field(default=())

    def __bool__(self):
        return bool(self.changes)

    @property
    def record_changes(self):
        return tuple(c for c in self.changes if not c.registry)

    def counts(self):
        adds = sum(len(c.adds) for c in self.record_changes)
        deletes = sum(len(c.deletes) for c in self.record_changes)
        return adds, deletes

    def text(self):
        if not self.changes:
            return "\n".join([f"zone {self.zone} is as specified for site {self.site}", *self.notes])
        adds, deletes = self.counts()
        head = (f"zone {self.zone} (site {self.site}): {len(self.record_changes)} RRset(s) to change, "
                f"+{adds} -{deletes} record(s), {len(self.changes) - len(self.record_changes)} "
                f"ownership RRset(s)")
        return "\n".join([head, *[c.text() for c in self.changes], *self.notes])

    def changes_dict(self):
        """Salt ``changes``: ``{"<name> <type>": {"old": [...], "new": [...]}}`` (``ttl type rdata``)."""
        out = {}
        for c in self.changes:
            out[f"{c.name} {c.rdtype}"] = {
                "old": [f"{c.old.ttl} {r}" for r in sorted(c.old.rdatas)] if c.old else [],
                "new": [f"{c.new.ttl} {r}" for r in sorted(c.new.rdatas)] if c.new else [],
            }
        return out


def plan(site, current, *, withdraw=(), restore=(), take_over=False, force=False, only=None):
    """The minimal per-RRset change from ``current`` (``{(name, type): RRset}``) to what ``site`` wants.

    ``withdraw``/``restore``: mail nodes to add to / remove from the withdrawn set recorded in the
    zone. ``only``: restrict to these ``(name, type)`` keys (withdraw_mx touches the MX set only).
    Raises :class:`Refused` with the reason when a safety rule or an ownership conflict forbids it.
    """
    d = site.dns
    zone = absolute(d.zone, ".")
    domain = absolute(site.domain, ".")
    for node_id in (*withdraw, *restore):
        if node_id not in d.mx:
            raise Refused(f"{node_id!r} has no MX in pillar mailha:dns:mx "
                          f"(MX nodes: {', '.join(d.mx) or 'none'})")
    owned, withdrawn_now = read_registry(current, site.name)
    # Markers of nodes that left dns:mx are dropped: they can never be restored.
    withdrawn = ((withdrawn_now | set(withdraw)) - set(restore)) & set(d.mx)
    desired = desired_records(site, withdrawn)
    keys = set(desired) | set(owned)
    # Names the pillar still uses; A RRsets here must never end up empty.
    managed_names = {absolute(label, domain) for label in d.names}
    managed_names |= {absolute(site.node(n).fqdn, ".") for n in d.mx if site.has_node(n)}
    keys.add((domain, "MX"))  # an empty desired MX set must still be checked (last-MX rule)
    if only is not None:
        keys &= set(only)
    refusals, notes = [], []
    changes = []
    new_owned = {}
    owned_count = deleted = 0
    for key in sorted(keys):
        name, rdtype = key
        if not in_zone(name, zone):
            continue
        cur = current.get(key)
        c = set(cur.rdatas) if cur else set()
        want = desired.get(key)
        dset = set(want.rdatas) if want else set()
        mine = set(owned.get(key, ())) & c if not (take_over and want) else c
        adopt = (c & dset) - set(owned.get(key, ()))
        if adopt and not take_over:
            refusals.append(f"{name} {rdtype} {', '.join(sorted(adopt))} already exists but is not "
                            f"owned by salt-mailha site {site.name}: pass take_over=True to adopt it")
        deletes = mine - dset
        adds = dset - c
        final = (c - deletes) | adds
        foreign = final - dset
        if rdtype == "A" and want and foreign and not take_over:
            refusals.append(f"{name} A also holds {', '.join(sorted(foreign))}, not owned by salt-mailha: "
                            f"clients would be split between it and {', '.join(sorted(dset))}; "
                            f"pass take_over=True to replace it")
        ttl = want.ttl if want else (cur.ttl if cur else d.ttl_default)
        if cur and final and cur.ttl != ttl and foreign and not take_over:
            # One TTL per RRset: never change the TTL of records we do not own.
            notes.append(f"note: {name} {rdtype} keeps TTL {cur.ttl} (pillar wants {ttl}) because it "
                         f"also holds {', '.join(sorted(foreign))}, not owned by salt-mailha; "
                         f"take_over=True would apply the pillar's TTL and delete them")
            ttl = cur.ttl
        owned_count += len(mine)
        deleted += max(0, len(deletes) - len(adds))
        if c and not final:
            if rdtype == "MX" and name == domain:
                who = ", ".join(sorted(withdraw)) or "this plan"
                refusals.append(f"{name} MX: withdrawing {who} would remove the last MX record of "
                                f"{name} and mail would bounce: restore another mail node first")
            elif rdtype == "A" and name in managed_names:
                refusals.append(f"{name} A: the plan would remove the last A record of {name}, a name "
                                f"the pillar still uses (mailha:dns:names or an MX target): check the "
                                f"node's address in mailha:nodes")
        new_owned[key] = (mine - deletes) | adds | (adopt if take_over else set())
        if final != c or (cur and final and cur.ttl != ttl):
            changes.append(Change(name, rdtype, cur, RRset(name, rdtype, ttl, frozenset(final)) if final else None))
    # The share is of everything we own in the zone, also when ``only`` narrows the plan.
    owned_count = max(owned_count, sum(len(v & set(current[k].rdatas)) for k, v in owned.items()
                                       if k in current and k[1] in MANAGED_TYPES))
    if deleted and owned_count and deleted / owned_count > d.max_delete_share and not force:
        refusals.append(f"the plan deletes {deleted} of the {owned_count} record(s) salt-mailha owns in "
                        f"{zone} ({deleted / owned_count:.0%}), more than pillar mailha:dns:max_delete_share "
                        f"{d.max_delete_share:.0%}: check the pillar, or pass force=True")
    if refusals:
        raise Refused(f"refusing to change zone {zone}:\n  - " + "\n  - ".join(refusals))
    changes += _registry_changes(site.name, zone, domain, current, owned, new_owned, withdrawn,
                                 d.ttl_default, only is not None)
    return Plan(zone, site.name, tuple(changes), frozenset(withdrawn), owned_count, tuple(notes))


def _registry_changes(site_name, zone, domain, current, owned, new_owned, withdrawn, ttl_default,
                      partial):
    """Registry TXT RRsets to change so they list exactly ``new_owned`` and ``withdrawn``."""
    by_name = {}
    for (name, rdtype), rdatas in new_owned.items():
        by_name.setdefault(name, {})[rdtype] = rdatas
    if not partial:
        # Registry entries of keys no longer considered at all (e.g. a type we stopped managing).
        for (name, rdtype) in owned:
            by_name.setdefault(name, {}).setdefault(rdtype, set())
    by_name.setdefault(domain, {})
    out = []
    for name in sorted(by_name):
        reg = owner_name(name, zone)
        cur = current.get((reg, "TXT"))
        cur_rdatas = set(cur.rdatas) if cur else set()
        keep = set()
        for rdata in cur_rdatas:
            parsed = parse_owner_txt(rdata)
            if parsed is None or parsed[0] != site_name:
                keep.add(rdata)
            elif parsed[1] == "rr" and parsed[2][0] not in by_name[name]:
                keep.add(rdata)       # a type this (partial) plan did not look at
            elif parsed[1] == "withdrawn" and name != domain:
                keep.add(rdata)
        new = set(keep)
        for rdtype, rdatas in by_name[name].items():
            new |= {_owner_string(site_name, f"rr={rdtype} {r}") for r in rdatas}
        if name == domain:
            new |= {_owner_string(site_name, f"withdrawn={n}") for n in withdrawn}
        if new != cur_rdatas:
            ttl = cur.ttl if cur else ttl_default
            out.append(Change(reg, "TXT", cur, RRset(reg, "TXT", ttl, frozenset(new)) if new else None))
    return out



# ----------------------------------------------------------------------------------- server
# Role ``dns`` runs the site's authoritative BIND: one dynamic primary zone that only the TSIG key
# may update or transfer. The zone file is seeded once (named rewrites it from its journal).

BIND_KEY_FILE = "/etc/bind/mailha-tsig.key"
BIND_ZONE_DIR = "/var/lib/bind"  # Debian's bind-writable directory for dynamic zones


def _dns(site):
    if site.dns is None or site.dns.tsig is None:
        raise Refused("role dns needs pillar mailha:dns with its tsig key: add the dns section")
    return site.dns


def zone_file_path(site):
    """Where the primary zone's file lives (named writes its journal next to it)."""
    return f"{BIND_ZONE_DIR}/{absolute(_dns(site).zone, '.').rstrip('.')}.db"


def render_tsig_key(site, node):
    """``/etc/bind/mailha-tsig.key``: the update key (the only file holding the TSIG secret)."""
    t = _dns(site).tsig
    return f'key "{t.name}" {{\n    algorithm {t.algorithm};\n    secret "{t.secret.reveal()}";\n}};\n'


def render_named_conf_local(site, node):
    """``/etc/bind/named.conf.local``: the key and the dynamic primary zone (Debian's named.conf
    includes this file after its options)."""
    d = _dns(site)
    zone = absolute(d.zone, ".").rstrip(".")
    key = d.tsig.name
    return (
        "// Managed by salt-mailha: edits are overwritten.\n"
        f'include "{BIND_KEY_FILE}";\n\n'
        f'zone "{zone}" {{\n'
        "    type primary;\n"
        f'    file "{zone_file_path(site)}";\n'
        # Only the key may change the zone; it may change any name in it (records run decides).
        f"    update-policy {{ grant {key} zonesub ANY; }};\n"
        f"    allow-transfer {{ key {key}; }};\n"
        "};\n"
    )


def dns_servers(site):
    """The nodes with role dns, in pillar order, with their address on the mail VIP's network."""
    vip = site.vips.get("mail")
    net = vip.network if vip else "public"
    return [(n, n.address(net) or n.address("public")) for n in site.nodes if n.has("dns")]


def render_zone_seed(site):
    """The zone's first file: SOA (serial 1, the first dns node as primary), one NS and one A per
    dns node. Written only when absent: afterwards the zone is changed by UPDATE only."""
    d = _dns(site)
    zone = absolute(d.zone, ".")
    servers = dns_servers(site)
    if not servers:
        raise Refused("no node has role dns: add role dns to the node that runs BIND")
    primary = absolute(servers[0][0].fqdn, ".")
    lines = [
        f"$TTL {d.ttl_default}",
        f"{zone} IN SOA {primary} hostmaster.{zone} ( 1 3600 600 86400 {d.ttl_failover} )",
    ]
    lines += [f"{zone} IN NS {absolute(n.fqdn, '.')}" for n, _ in servers]
    for n, address in servers:
        if address and in_zone(absolute(n.fqdn, "."), zone):
            lines.append(f"{absolute(n.fqdn, '.')} IN A {address}")
    return "\n".join(lines) + "\n"
