"""RFC 2136 DNS for a salt-mailha site, on dnspython (TCP, TSIG, prerequisites).

Reads the zone (AXFR signed with the site's TSIG key when the server allows it, else one query per
managed RRset), asks ``salt_mailha.core.dns`` for the minimal plan, and sends it as ONE UPDATE
whose prerequisites are the exact current contents of every RRset it changes: if anyone changed
one of them since the read, the server answers YXRRSET/NXRRSET and nothing is applied ("zone
changed concurrently, re-plan"). Servers from ``mailha:dns:servers`` are tried in order; only a
network failure (timeout, refused connection) moves on to the next one, and the update goes to
the server the zone was read from. The TSIG secret goes only into dnspython's keyring: never into
a return, a log line or an argv.

Without AXFR, records under names the pillar no longer lists cannot be found, so they are left in
place; allow the key to transfer the zone (``allow-transfer { key <name>; };``) to clean them up.

Rehearsals are offline (``salt_mailha.rehearsal``): with a scratch ``mailha_root`` nothing is
sent to any DNS server, neither a query, a transfer nor an UPDATE. :func:`records`,
:func:`withdraw_mx` and :func:`restore_mx` then plan against the rehearsal's own zone file
(``<mailha_root>/var/lib/bind/<zone>.db``, as ``mailha_dns.zone_seeded`` wrote it on a dns node)
or, without one, against the zone seed a new site's server starts from, and return that plan with
``rehearsal`` True and ``updates_sent`` 0; :func:`query` refuses. Minion config
``mailha_live: True`` sends anyway (a test's own named on loopback).
"""
import logging

from salt.exceptions import CommandExecutionError

from salt_mailha import glue, rehearsal
from salt_mailha.core import dns as core
from salt_mailha.core.errors import CommandFailed, MailhaError
from salt_mailha.core.secret import redact

try:
    import dns.exception
    import dns.message
    import dns.name
    import dns.query
    import dns.rcode
    import dns.rdataset
    import dns.rdatatype
    import dns.rrset
    import dns.tsig
    import dns.tsigkeyring
    import dns.update
    import dns.xfr
    import dns.zone

    HAS_DNSPYTHON = True
except ImportError:  # pragma: no cover - dnspython is a hard dependency of the package
    HAS_DNSPYTHON = False

log = logging.getLogger(__name__)

__virtualname__ = "mailha_dns"

DEFAULT_TIMEOUT = 5.0
_RETRY_NEXT = (dns.exception.Timeout, ConnectionError, EOFError, OSError) if HAS_DNSPYTHON else ()
_CONCURRENT = ("YXRRSET", "NXRRSET", "YXDOMAIN", "NXDOMAIN")


def __virtual__():
    if not HAS_DNSPYTHON:
        return (False, "mailha_dns needs dnspython >= 2.6: pip install 'dnspython>=2.6,<3' into "
                       "Salt's Python (it is a dependency of salt-mailha)")
    return __virtualname__


# ----------------------------------------------------------------------------------- helpers


def _site():
    site = glue.site_from_pillar(__pillar__, __opts__)  # noqa: F821 - injected by the loader
    if site.dns is None or site.dns.tsig is None or not site.dns.servers:
        raise CommandExecutionError("pillar mailha:dns with servers and tsig is required to manage "
                                    "DNS records: see pillar.example/mailha.sls")
    return site


class _Conn:
    """The site's servers and TSIG key; remembers which server answered."""

    def __init__(self, site, timeout):
        d = site.dns
        self.site = site
        self.zone = dns.name.from_text(d.zone)
        self.key_name = d.tsig.name
        # The secret lives in this keyring only.
        self.keyring = dns.tsigkeyring.from_text(
            {d.tsig.name: (d.tsig.algorithm, d.tsig.secret.reveal())})
        self.algorithm = dns.name.from_text(d.tsig.algorithm)
        self.servers = list(d.servers)
        self.timeout = float(timeout)
        self.server = None
        self.updates_sent = 0

    def where(self, srv=None):
        srv = srv or self.server
        return f"{srv.address}:{srv.port}"

    def _tsig_error(self, exc, srv, what):
        kinds = {
            dns.tsig.PeerBadSignature: "bad signature (the secret differs from the server's)",
            dns.tsig.PeerBadKey: "unknown key",
            dns.tsig.PeerBadTime: "bad time (clocks differ by more than the fudge)",
            dns.tsig.PeerBadTruncation: "bad truncation",
        }
        kind = next((v for k, v in kinds.items() if isinstance(exc, k)), type(exc).__name__)
        return CommandFailed(
            f"DNS server {self.where(srv)} rejected the TSIG key {self.key_name!r} for {what} of zone "
            f"{self.zone}: {kind}; make pillar mailha:dns:tsig (name, algorithm, secret) match the "
            f"key in the server's configuration")

    def each_server(self, what, call):
        """Run ``call(srv)`` on the first server that answers; network failures move on."""
        errors = []
        order = [self.server] if self.server else self.servers
        for srv in order:
            try:
                result = call(srv)
            except dns.tsig.PeerError as exc:
                raise self._tsig_error(exc, srv, what) from None
            except _RETRY_NEXT as exc:
                errors.append(f"{self.where(srv)}: {exc or type(exc).__name__}")
                log.warning("mailha_dns: %s via %s failed (%s), trying the next server", what,
                            self.where(srv), type(exc).__name__)
                continue
            self.server = srv
            return result
        raise CommandFailed(f"no DNS server answered the {what} of zone {self.zone} "
                            f"(timeout {self.timeout:g}s): {'; '.join(errors)}; check "
                            f"pillar mailha:dns:servers and that the server is running")

    # -- read ---------------------------------------------------------------------------------
    def axfr_text(self, srv):
        """Master-file text of the zone over AXFR, or None when the server refuses the transfer."""
        lines = []
        try:
            for msg in dns.query.xfr(srv.address, self.zone, port=srv.port, timeout=self.timeout,
                                     lifetime=self.timeout * 4, keyring=self.keyring,
                                     keyname=self.key_name, keyalgorithm=self.algorithm,
                                     relativize=False):
                lines += [rrset.to_text() for rrset in msg.answer]
        except dns.xfr.TransferError as exc:
            if dns.rcode.to_text(exc.rcode) in ("REFUSED", "NOTAUTH", "NOTIMP"):
                return None
            raise CommandFailed(f"zone transfer of {self.zone} from {self.where(srv)} failed: "
                                f"{dns.rcode.to_text(exc.rcode)}") from None
        return "\n".join(lines)

    def query_text(self, srv, keys):
        lines = []
        for name, rdtype in sorted(keys):
            q = dns.message.make_query(name, rdtype)
            q.use_tsig(self.keyring, keyname=self.key_name, algorithm=self.algorithm)
            r = dns.query.tcp(q, srv.address, port=srv.port, timeout=self.timeout)
            rcode = dns.rcode.to_text(r.rcode())
            if rcode not in ("NOERROR", "NXDOMAIN"):
                raise CommandFailed(f"DNS server {self.where(srv)} answered {rcode} to {name} "
                                    f"{rdtype}: is it authoritative for zone {self.zone}?")
            lines += [rrset.to_text() for rrset in r.answer
                      if dns.rdatatype.to_text(rrset.rdtype) == rdtype]
        return "\n".join(lines)

    def read(self, site):
        """``({(name, type): RRset}, method)`` of the zone as the server has it now."""
        zone = core.absolute(site.dns.zone, ".")

        def read_one(srv):
            text = self.axfr_text(srv)
            if text is not None:
                return text, "axfr"
            owned_hint = core.desired_records(site)
            keys = {(zone, "SOA"), (core.absolute(site.domain, "."), "MX")} | set(owned_hint)
            names = {k[0] for k in keys}
            keys |= {(core.owner_name(n, zone), "TXT") for n in names}
            return self.query_text(srv, keys), "query"

        text, method = self.each_server("read", read_one)
        return core.parse_rrsets(text), method

    # -- write --------------------------------------------------------------------------------
    def send(self, plan):
        """Send ``plan`` as one UPDATE with exact-content prerequisites; raise on any failure."""
        u = dns.update.UpdateMessage(self.zone, keyring=self.keyring, keyname=self.key_name,
                                     keyalgorithm=self.algorithm)
        for c in plan.changes:
            name = dns.name.from_text(c.name)
            if c.old:
                # RFC 2136 3.2.1: prerequisite RRs carry TTL 0.
                u.present(name, dns.rdataset.from_text("IN", c.rdtype, 0, *sorted(c.old.rdatas)))
            else:
                u.absent(name, c.rdtype)
        for c in plan.changes:
            name = dns.name.from_text(c.name)
            if c.new and c.ttl_changed:
                # One TTL per RRset: replace it whole (the prerequisite pins what was there).
                u.replace(name, dns.rdataset.from_text("IN", c.rdtype, c.new.ttl, *sorted(c.new.rdatas)))
                continue
            for r in c.deletes:
                u.delete(name, c.rdtype, r)
            if c.adds:
                u.add(name, dns.rdataset.from_text("IN", c.rdtype, c.new.ttl, *c.adds))
        srv = self.server
        try:
            response = dns.query.tcp(u, srv.address, port=srv.port, timeout=self.timeout)
        except dns.tsig.PeerError as exc:
            raise self._tsig_error(exc, srv, "the update") from None
        except _RETRY_NEXT as exc:
            # Never resend elsewhere: we cannot know whether this one applied it.
            raise CommandFailed(f"the update of zone {self.zone} sent to {self.where(srv)} got no "
                                f"answer ({type(exc).__name__}); it may or may not have applied: "
                                f"run again to re-plan from the zone as it is") from None
        finally:
            self.updates_sent += 1
        rcode = dns.rcode.to_text(response.rcode())
        if rcode == "NOERROR":
            return
        if rcode in _CONCURRENT:
            raise core.ZoneChanged(f"zone {self.zone} changed concurrently ({rcode}: an RRset this "
                                   f"plan changes no longer holds what was read), nothing was "
                                   f"applied: re-plan (run again)")
        if rcode == "REFUSED":
            raise CommandFailed(f"DNS server {self.where(srv)} REFUSED the update of zone {self.zone}:"
                                f" its update-policy must grant key {self.key_name!r} the names and "
                                f"types we manage (grant {self.key_name} zonesub ANY;), and every MX "
                                f"target needs an address record; see the server's log")
        if rcode == "NOTAUTH":
            raise CommandFailed(f"DNS server {self.where(srv)} is not authoritative for zone "
                                f"{self.zone} (NOTAUTH): point pillar mailha:dns:servers at the "
                                f"zone's primary and check mailha:dns:zone")
        raise CommandFailed(f"DNS server {self.where(srv)} answered {rcode} to the update of zone "
                            f"{self.zone}; nothing was applied")


def _rehearsal_zone(site):
    """``({(name, type): RRset}, basis)`` of the zone a rehearsal plans against, read from no
    server: the zone file under the scratch root when the rehearsal wrote one, else the seed."""
    path = glue.under_root(core.zone_file_path(site), __opts__, __pillar__)  # noqa: F821
    text = glue.read_text(path)
    basis = f"the rehearsal's zone file {path}"
    if text is None:
        text, basis = core.render_zone_seed(site), "the zone seed (as a new site's server starts)"
    try:
        zone = dns.zone.from_text(text, origin=core.absolute(site.dns.zone, "."), relativize=False)
    except dns.exception.DNSException as exc:
        raise CommandFailed(f"{basis} is not a zone file of {site.dns.zone}: {exc}") from None
    lines = [dns.rrset.from_rdata_list(name, rds.ttl, list(rds)).to_text()
             for name, rds in zone.iterate_rdatasets()]
    return core.parse_rrsets("\n".join(lines)), basis


def _report(site, the_plan, current, test, **extra):
    """What a run returns: the plan against the zone as read (``current``), nothing sent yet."""
    adds, deletes = the_plan.counts()
    return {"result": True, "changes": the_plan.changes_dict(), "plan": the_plan.text(), "adds": adds,
            "deletes": deletes, "withdrawn": sorted(the_plan.withdrawn),
            "serial": core.soa_serial(current, site.dns.zone), "updates_sent": 0, "test": bool(test), **extra}


def _rehearse(site, test, **plan_kwargs):
    """The plan of a rehearsal: computed from :func:`_rehearsal_zone`, never sent."""
    try:
        current, basis = _rehearsal_zone(site)
        the_plan = core.plan(site, current, **plan_kwargs)
    except MailhaError as exc:
        __context__["retcode"] = 1  # noqa: F821
        return redact({"result": False, "comment": str(exc), "updates_sent": 0, "rehearsal": True,
                       "error": type(exc).__name__}, site.secrets())
    servers = ", ".join(f"{s.address}:{s.port}" for s in site.dns.servers)
    out = _report(site, the_plan, current, test, server=None, read=basis, rehearsal=True,
                  not_sent=f"nothing sent to {servers}: {rehearsal.why(__opts__, __pillar__)}")  # noqa: F821
    log.info("mailha_dns: rehearsal, nothing sent; planned against %s:\n%s", basis, the_plan.text())
    return redact(out, site.secrets())


def _run(site, timeout, test, **plan_kwargs):
    """Read, plan, and (unless ``test``) send. Returns plain data; errors as CommandExecutionError.
    In a rehearsal (not :func:`salt_mailha.rehearsal.live`) nothing goes over the network."""
    if not rehearsal.live(__opts__, __pillar__):  # noqa: F821
        return _rehearse(site, test, **plan_kwargs)
    conn = _Conn(site, timeout)
    try:
        current, method = conn.read(site)
        the_plan = core.plan(site, current, **plan_kwargs)
        out = _report(site, the_plan, current, test, server=conn.where(), read=method, rehearsal=False)
        if the_plan and not test:
            conn.send(the_plan)
            out["updates_sent"] = conn.updates_sent
            log.info("mailha_dns: sent one update to %s:\n%s", conn.where(), the_plan.text())
    except (MailhaError, dns.exception.DNSException) as exc:
        comment = str(exc) if isinstance(exc, MailhaError) else (
            f"DNS error talking to {conn.where(conn.server or conn.servers[0])} about zone "
            f"{conn.zone}: {type(exc).__name__}: {exc}")
        out = {"result": False, "comment": comment, "updates_sent": conn.updates_sent,
               "error": type(exc).__name__}
        __context__["retcode"] = 1  # noqa: F821 - salt-call exits non-zero, the reason is returned
    return redact(out, site.secrets())


# ----------------------------------------------------------------------------------- public


def records(take_over=False, force=False, test=False, timeout=DEFAULT_TIMEOUT):
    """Converge the site's zone to the records the pillar wants, in one UPDATE.

    Keeps nodes withdrawn by :func:`withdraw_mx` withdrawn. Returns the plan text, the per-RRset
    ``changes`` and ``updates_sent`` (0 or 1); ``result`` False with a ``comment`` when a safety
    rule, an ownership conflict or the server refused. In a rehearsal (scratch ``mailha_root``)
    nothing is read from or sent to a server: ``rehearsal`` is True, ``updates_sent`` 0, ``read``
    names the zone the plan was made against and ``not_sent`` says why (see the module doc).

    take_over
        Adopt records that already exist under managed names but are not ours (and delete those
        the pillar does not want).
    force
        Allow a plan that deletes more than ``mailha:dns:max_delete_share`` of our records.
    test
        Plan only; send nothing.

    CLI Example:

    .. code-block:: bash

        salt ns1 mailha_dns.records test=True
    """
    return _run(_site(), timeout, test, take_over=bool(take_over), force=bool(force))


def plan(take_over=False, force=False, timeout=DEFAULT_TIMEOUT):
    """Show what :func:`records` would send, without sending it.

    CLI Example:

    .. code-block:: bash

        salt ns1 mailha_dns.plan
    """
    return records(take_over=take_over, force=force, test=True, timeout=timeout)


def withdraw_mx(node, test=False, timeout=DEFAULT_TIMEOUT):
    """Remove ``node``'s MX record (and remember it is withdrawn), in one UPDATE.

    Touches only the domain's MX RRset and its ownership entry. Refused (``result`` False, with
    the reason) if it would leave the domain without any MX.

    CLI Example:

    .. code-block:: bash

        salt ns1 mailha_dns.withdraw_mx mail1
    """
    site = _site()
    return _run(site, timeout, test, withdraw=(str(node),),
                only=((core.absolute(site.domain, "."), "MX"),))


def restore_mx(node, test=False, timeout=DEFAULT_TIMEOUT):
    """Put ``node``'s MX record back (the reverse of :func:`withdraw_mx`), in one UPDATE.

    CLI Example:

    .. code-block:: bash

        salt ns1 mailha_dns.restore_mx mail1
    """
    site = _site()
    return _run(site, timeout, test, restore=(str(node),),
                only=((core.absolute(site.domain, "."), "MX"),))


def is_updater(node=None):
    """True if this minion (or ``node``) is the pillar's ``mailha:dns:updater``.

    The formula applies ``mailha_dns.records`` only there, so one node sends the updates.

    CLI Example:

    .. code-block:: bash

        salt '*' mailha_dns.is_updater
    """
    site = glue.site_from_pillar(__pillar__, __opts__)  # noqa: F821
    return bool(site.dns and site.dns.updater == glue.node_id(__opts__, node))  # noqa: F821


def query(name, rdtype="A", timeout=DEFAULT_TIMEOUT):
    """The records of ``name``/``rdtype`` as the site's DNS servers answer them (TCP, signed).

    ``name`` is relative to the zone unless it ends with a dot. Returns a sorted list of rdata.
    Refused in a rehearsal (scratch ``mailha_root``): it would ask the real server.

    CLI Example:

    .. code-block:: bash

        salt ns1 mailha_dns.query @ MX
    """
    site = _site()
    rdtype = str(rdtype).upper()
    if not core.RDTYPE.match(rdtype):
        raise CommandExecutionError(f"rdtype {rdtype!r} is not a record type (A, MX, TXT ...)")
    try:
        fqdn = core.absolute(str(name), site.dns.zone)
        dns.name.from_text(fqdn)
    except dns.exception.DNSException as exc:
        raise CommandExecutionError(f"name {name!r} is not a domain name: {exc}") from None
    if not rehearsal.live(__opts__, __pillar__):  # noqa: F821
        raise CommandExecutionError(f"mailha_dns.query {fqdn} {rdtype} would ask the site's DNS "
                                    f"server; refused: {rehearsal.why(__opts__, __pillar__)}")  # noqa: F821
    conn = _Conn(site, timeout)
    try:
        text = conn.each_server("query", lambda srv: conn.query_text(srv, {(fqdn, rdtype)}))
    except MailhaError as exc:
        raise CommandExecutionError(redact(str(exc), site.secrets())) from None
    found = core.parse_rrsets(text).get((fqdn, rdtype))
    return sorted(found.rdatas) if found else []
