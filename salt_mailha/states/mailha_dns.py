"""Keep a salt-mailha site's DNS records converged (RFC 2136, one signed UPDATE per run).

Apply on the pillar's ``mailha:dns:updater`` node. The plan is computed from the zone as the
server has it; ``test=True`` shows that real plan (per-RRset adds and deletes) and sends nothing.
Records not owned by salt-mailha are never changed (see ``salt_mailha.core.dns``).

.. code-block:: yaml

    mailha-dns-records:
      mailha_dns.records: []

    # after a node loss, from an orchestration on the updater:
    mailha-dns-mx-mail1:
      mailha_dns.mx_withdrawn:
        - name: mail1
"""

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
