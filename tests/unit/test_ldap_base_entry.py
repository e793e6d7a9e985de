"""core.ldap: the suffix entry of the native mail path (what it is, who creates it, what each
node does), and why it is the only container the native Postfix/Dovecot lookups need."""
import copy

import pytest

from salt_mailha import data as mailha_data
from salt_mailha.core import ldap, mail
from salt_mailha.core.errors import ValidationError
from salt_mailha.core.model import parse_site

EXAMPLE = mailha_data.example_pillar()


def site_from(mutate=None):
    data = copy.deepcopy(EXAMPLE["mailha"])
    if mutate:
        mutate(data)
    return parse_site(data)


@pytest.mark.parametrize("suffix,dn,classes,attrs", [
    ("dc=example,dc=net", "dc=example,dc=net", ("top", "dcObject", "organization"),
     (("dc", "example"), ("o", "example.net"))),
    ("DC=Example, DC=Net", "dc=Example,dc=Net", ("top", "dcObject", "organization"),
     (("dc", "Example"), ("o", "Example.Net"))),
    ("dc=mail,o=Corp,c=US", "dc=mail,o=Corp,c=US", ("top", "dcObject", "organization"),
     (("dc", "mail"), ("o", "mail"))),
    ("dc=net", "dc=net", ("top", "dcObject", "organization"), (("dc", "net"), ("o", "net"))),
    ("o=Example Corp,c=US", "o=Example Corp,c=US", ("top", "organization"), (("o", "Example Corp"),)),
    ("ou=Mail,dc=example,dc=net", "ou=Mail,dc=example,dc=net", ("top", "organizationalUnit"),
     (("ou", "Mail"),)),
], ids=["dc-domain", "dc-case-spaces", "dc-under-o", "dc-single", "o", "ou"])
def test_entry_from_the_first_rdn(suffix, dn, classes, attrs):
    e = ldap.base_entry(suffix)
    assert (e.dn, e.object_classes, e.attributes) == (dn, classes, attrs)
    # what ldap3 gets: the RDN value among the attributes, one value each
    assert e.as_ldap3()[attrs[0][0]] == [attrs[0][1]]
    assert e.describe()["objectClass"] == list(classes)


@pytest.mark.parametrize("suffix,message", [
    ("cn=mail,dc=example,dc=net", "starts with cn=, for which salt-mailha cannot create the suffix entry"),
    ("l=Paris,c=FR", "starts with l=,"),
    ("dc=a+o=b,dc=net", "starts with a multi-valued RDN"),
    ("dc=ex_ample,dc=net", "the value 'ex_ample' of its first RDN is not supported; use letters, digits and '-'"),
    ("o=A\\,B,c=US", "is not supported; use letters, digits and space . _ -"),
    ("example.net", "is not a DN, e.g. dc=example,dc=net"),
], ids=["cn", "l", "multi-valued", "dc-underscore", "escaped", "not-a-dn"])
def test_unsupported_suffix_names_the_key_and_what_is_supported(suffix, message):
    with pytest.raises(ValidationError) as err:
        ldap.base_entry(suffix)
    (key, text), = err.value.problems
    assert key == "mailha:ldap:suffix"
    assert message in text
    if "starts with" in message and "multi" not in message:
        assert "use a suffix starting with dc=<label>" in text and "ou=<name> (organizationalUnit)" in text


def test_creator_is_the_first_mail_node_in_site_order():
    assert ldap.base_entry_creator(site_from()).node == "mail1"

    def mail2_first(d):
        d["nodes"] = {k: d["nodes"][k] for k in sorted(d["nodes"], key=lambda k: k != "mail2")}
    assert ldap.base_entry_creator(site_from(mail2_first)).node == "mail2"


def test_creator_follows_site_order_not_server_ids():
    def mutate(d):
        d["ldap"]["servers"] = {"mail1": {"server_id": 9, "url": "ldap://10.1.1.17:389/"},
                                "mail2": {"server_id": 3, "url": "ldap://10.1.1.18:389/"}}
    assert ldap.base_entry_creator(site_from(mutate)).node == "mail1"


@pytest.mark.parametrize("node,views,force,action,reason", [
    ("mail1", {"mail1": True, "mail2": False}, False, "none", "exists on mail1"),
    ("mail2", {"mail1": None, "mail2": True}, False, "none", "exists on mail2"),
    ("mail1", {"mail1": False, "mail2": False}, False, "create",
     "missing on mail1, which creates it (first LDAP server); syncrepl carries it to mail2"),
    ("mail1", {"mail1": False}, False, "create", "missing on mail1, which creates it (first LDAP server)"),
    ("mail2", {"mail1": False, "mail2": False}, False, "wait",
     "missing on mail2; mail1 creates it (first LDAP server) and syncrepl carries it here"),
    ("mail2", {"mail1": True, "mail2": False}, False, "wait", "missing on mail2 but mail1 hold(s) it"),
    ("mail2", {"mail1": None, "mail2": False}, True, "wait", "mail1 creates it (first LDAP server) but cannot be read"),
    # a rebuilt creator next to a peer that holds the directory takes the peer's entry
    ("mail1", {"mail1": False, "mail2": True}, True, "wait", "missing on mail1 but mail2 hold(s) it"),
    ("mail1", {"mail1": False, "mail2": None}, False, "wait", "mail2 cannot be read: one of them may hold"),
    ("mail1", {"mail1": False, "mail2": None}, True, "create", "missing on mail1, which creates it"),
    ("mail1", {"mail1": None, "mail2": False}, True, "wait", "cannot read mail1's own slapd"),
], ids=["exists", "exists-peer-down", "creator-empty", "creator-alone", "other-empty", "replicating",
        "creator-down-force-ignored", "rebuilt-creator", "peer-unreadable", "peer-unreadable-forced", "own-down"])
def test_decision_table(node, views, force, action, reason):
    d = ldap.decide_base_entry(node, "mail1", views, force=force)
    assert d.action == action
    assert reason in d.reason
    assert bool(d.hint) == (action == "wait"), d  # every wait says what to do if it never ends


@pytest.mark.parametrize("render", [mail.render_postfix_virtual_mailbox_maps, mail.render_dovecot_ldap_conf],
                         ids=["postfix", "dovecot"])
def test_native_lookups_search_the_suffix_itself(render):
    """The suffix entry is the only container to create: the lookups search from the suffix.
    Should a template search a container below it, the base entry state must create that too."""
    site = site_from()
    text = render(site, site.node("mail1"))
    bases = [line.split("=", 1)[1].strip().strip('"') for line in text.splitlines()
             if line.split("=", 1)[0].strip() in ("search_base", "base")]
    assert bases == [site.ldap.suffix]
