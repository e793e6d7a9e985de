"""Keep a salt-mailha site's DNS records converged (RFC 2136, one signed UPDATE per run).

Apply on the pillar's ``mailha:dns:updater`` node. The plan is computed from the zone as the
server has it; ``test=True`` shows that real plan (per-RRset adds and deletes) and sends nothing.
Records not owned by salt-mailha are never changed (see ``salt_mailha.core.dns``).

Rehearsals are offline: with a scratch ``mailha_root`` the record states send nothing, not even a
query (see ``salt_mailha.rehearsal``). They return ``result`` True, no ``changes`` (the zone was
not changed) and a comment that starts ``REHEARSAL, nothing sent`` followed by the plan, made
against the rehearsal's own zone file (``zone_seeded`` writes it on a dns node) or else the zone
seed. Minion config ``mailha_live: True`` makes a rehearsal send its updates (tests against their
own named).

.. code-block:: yaml

    mailha-dns-records:
      mailha_dns.records: []

    # on a node with role dns: the zone's first file, written only when absent
    mailha-dns-zone:
      mailha_dns.zone_seeded:
        - name: /var/lib/bind/example.net.db

    # after a node loss, from an orchestration on the updater:
    mailha-dns-mx-mail1:
      mailha_dns.mx_withdrawn:
        - name: mail1
"""

import os
import pwd

from salt_mailha import glue
from salt_mailha.core import dns as core_dns
from salt_mailha.core.errors import MailhaError

__virtualname__ = "mailha_dns"


def __virtual__():
    if "mailha_dns.records" in __salt__:  # noqa: F821 - injected by the loader
        return __virtualname__
    return (False, "the mailha_dns execution module is not available (it needs dnspython)")


def _ret(name, out, test, done, would, nothing):
    ret = {"name": name, "result": True, "changes": {}, "comment": nothing}
    if not out.get("result"):
        ret.update(result=False, comment=out.get("comment", "mailha_dns failed"))
        return ret
    if out.get("rehearsal"):
        # nothing was or will be sent: no changes in either mode; the plan is the comment
        what = would if out["changes"] else nothing
        ret["comment"] = (f"REHEARSAL, nothing sent ({out['not_sent']}). {what}, planned against "
                          f"{out['read']}:\n{out['plan']}")
        return ret
    if not out["changes"]:
        return ret
    ret["changes"] = out["changes"]
    if test:
        ret.update(result=None, comment=f"{would}:\n{out['plan']}")
    else:
        ret["comment"] = f"{done} ({out['updates_sent']} update sent to {out['server']}):\n{out['plan']}"
    return ret


def records(name, take_over=False, force=False, timeout=5):
    """Converge the zone to the pillar's MX and A records (the node-withdrawn MX stay withdrawn).

    take_over
        Adopt records that already exist under managed names but were not created by salt-mailha.
    force
        Allow deleting more than ``mailha:dns:max_delete_share`` of the managed records, or the last
        A of a name removed from the pillar.
    """
    test = bool(__opts__.get("test"))  # noqa: F821
    out = __salt__["mailha_dns.records"](take_over=take_over, force=force, test=test,  # noqa: F821
                                         timeout=timeout)
    return _ret(name, out, test, "Updated the DNS records", "Would update the DNS records",
                "DNS records are already as specified")


def mx_withdrawn(name, timeout=5):
    """Node ``name``'s MX record is withdrawn (refused if it is the last MX)."""
    test = bool(__opts__.get("test"))  # noqa: F821
    out = __salt__["mailha_dns.withdraw_mx"](name, test=test, timeout=timeout)  # noqa: F821
    return _ret(name, out, test, f"Withdrew the MX of {name}", f"Would withdraw the MX of {name}",
                f"The MX of {name} is already withdrawn")


def mx_restored(name, timeout=5):
    """Node ``name``'s MX record is back."""
    test = bool(__opts__.get("test"))  # noqa: F821
    out = __salt__["mailha_dns.restore_mx"](name, test=test, timeout=timeout)  # noqa: F821
    return _ret(name, out, test, f"Restored the MX of {name}", f"Would restore the MX of {name}",
                f"The MX of {name} is already in place")


def zone_seeded(name):
    """The primary zone's file exists; when it does not, write the seed (SOA, NS and A of the dns
    nodes) owned by bind. An existing file is never touched: named rewrites it with the updates.

    name
        The zone file path, ``/var/lib/bind/<zone>.db`` (checked against the pillar's zone).
    """
    ret = glue.state_ret(name)
    try:
        site = glue.site_from_pillar(__pillar__, __opts__)  # noqa: F821
        if name != core_dns.zone_file_path(site):
            raise MailhaError(f"name {name!r} is not the zone file of mailha:dns:zone "
                              f"({core_dns.zone_file_path(site)})")
        content = core_dns.render_zone_seed(site)
    except (MailhaError, glue.CommandExecutionError) as exc:
        ret.update(result=False, comment=str(exc))
        return ret
    path = glue.under_root(name, __opts__, __pillar__)  # noqa: F821
    if os.path.exists(path):
        ret["comment"] = f"{path} exists: the zone is changed by UPDATE only"
        return ret
    ret["changes"] = {"new": {"lines": len(content.splitlines())},
                      "diff": glue.redacted_diff(None, content, name, site.secrets())}
    if __opts__["test"]:  # noqa: F821
        ret.update(result=None, comment=f"would seed {path}")
        return ret
    try:
        bind = pwd.getpwnam("bind")
    except KeyError:
        bind = None  # bind9 not installed (a rehearsal): root owns it
    try:
        glue.write_atomic(path, content, "0644", bind.pw_gid if bind else None)
        if bind:
            os.chown(path, bind.pw_uid, bind.pw_gid)  # named dumps the journal into this file
    except OSError as exc:
        ret.update(result=False, changes={}, comment=f"could not write {path}: {exc.strerror}")
        return ret
    ret["comment"] = f"seeded {path}"
    return ret
