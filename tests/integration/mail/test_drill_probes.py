"""The lab drill's mail probes against real daemons: the drill's mailbox is created in real slapd
(mirror mode carries it), a message submitted to Postfix on mail1 is read over IMAPS from Dovecot
on mail2, and a wrong password or an unknown mailbox fails the check instead of passing it."""
import os

import pytest

from salt_mailha_lab import drill
from salt_mailha_lab.probe import probe
from tests.integration.ldap.fixtures import NODES

pytestmark = pytest.mark.integration

PASSWORD = "Drill-Box-Pw-4410"


def _mailbox_request(c, node, box):
    return {"kind": "ldap_mailbox", "hosts": [NODES[node]], "port": c.pair.port,
            "binddn": c.pair.rootdn, "password": c.pair.rootpw, "dn": box.dn,
            "attrs": {"cn": "labdrill", "sn": "labdrill", "uid": "labdrill", "mail": box.address,
                      "userPassword": box.password}}


def _flow(c, box, sender="mail1", reader="mail2"):
    return probe({"kind": "mailflow", "hosts": ["127.0.0.1"],
                  "smtp_port": c.site.mail.instance(sender).smtp_port,
                  "imaps_port": c.site.mail.instance(reader).imaps_port,
                  "user": box.address, "password": box.password})


def test_drill_mailbox_then_mail_flows_from_mail1_to_mail2(mail_cluster):
    c = mail_cluster
    box = drill.mailbox_for(c.site, PASSWORD)
    first = probe(_mailbox_request(c, "mail1", box))
    assert first == {"ok": True, "detail": f"{NODES['mail1']}: created"}
    again = probe(_mailbox_request(c, "mail1", box))  # a second drill re-sets its password
    assert again["ok"] and "exists; password set" in again["detail"]
    c.pair.wait_has("mail2", box.dn, timeout=20)

    res = _flow(c, box)
    assert res == {"ok": True, "detail": "sent via 127.0.0.1, read on 127.0.0.1"}, res
    new = os.path.join(c.site.mail.vmail.path, c.site.domain, "labdrill", "Maildir", "new")
    cur = os.path.join(os.path.dirname(new), "cur")
    # the probe removes what it read: a long drill does not grow the mailbox
    assert not [f for d in (new, cur) if os.path.isdir(d) for f in os.listdir(d)]


def test_mail_flow_fails_on_a_wrong_password_or_unknown_mailbox(mail_cluster):
    c = mail_cluster
    box = drill.mailbox_for(c.site, PASSWORD)
    probe(_mailbox_request(c, "mail1", box))
    c.pair.wait_has("mail2", box.dn, timeout=20)
    wrong = _flow(c, drill.Mailbox(box.dn, box.address, "not-the-password"))
    assert not wrong["ok"] and "AUTHENTICATIONFAILED" in wrong["detail"].upper().replace(" ", "")
    unknown = _flow(c, drill.Mailbox(box.dn, f"nobody@{c.site.domain}", PASSWORD))
    assert not unknown["ok"] and "SMTPRecipientsRefused" in unknown["detail"]
