"""LdapSpec validation beyond tests/unit/test_model.py: serverID overrides and addresses."""
import copy

import pytest

from salt_mailha import data as mailha_data
from salt_mailha.core.errors import ValidationError
from salt_mailha.core.model import parse_site

EXAMPLE = mailha_data.example_pillar()


def _with(mutate):
    data = copy.deepcopy(EXAMPLE["mailha"])
    mutate(data["ldap"], data)
    return data


@pytest.mark.parametrize("mutate,key,text", [
    (lambda lds, d: lds.update(servers={"mail1": {"server_id": 3, "url": "ldap://10.1.1.17:389/"},
                                    "mail2": {"server_id": 3, "url": "ldap://10.1.1.18:389/"}}),
     "mailha:ldap:servers:mail2:server_id", "is also used by mail1"),
    (lambda lds, d: lds.update(servers={"db1": {"server_id": 3, "url": "ldap://10.1.1.15:389/"}}),
     "mailha:ldap:servers:db1", "not a mail node"),
    (lambda lds, d: lds.update(servers={"mail1": {"server_id": 1, "url": "ldap://10.1.1.17:389"}}),
     "mailha:ldap:servers:mail1:url", "does not match the listener 'ldap://10.1.1.17:389/'"),
    (lambda lds, d: lds.update(servers={"mail1": {"server_id": 4096, "url": "ldap://10.1.1.17:389/"}}),
     "mailha:ldap:servers:mail1:server_id", ""),
    (lambda lds, d: d["nodes"]["mail2"]["addresses"].pop("private"),
     "mailha:nodes:mail2:addresses", "needs an address on private"),
    (lambda lds, d: lds.update(suffix="dc=example,dc=org"), "mailha:ldap:rootdn", "not under the suffix"),
], ids=["dup-server-id", "not-mail", "url-no-slash", "server-id-range", "no-private-address", "suffix"])
def test_ldap_pillar_refused_naming_the_key(mutate, key, text):
    with pytest.raises(ValidationError) as exc:
        parse_site(_with(mutate))
    hits = [msg for k, msg in exc.value.problems if k == key]
    assert hits, exc.value.render()
    assert text in hits[0]


def test_dn_case_and_spaces_do_not_matter():
    site = parse_site(_with(lambda lds, d: lds.update(rootdn="CN=Manager, DC=Example, DC=Net")))
    assert site.ldap.rootdn == "CN=Manager, DC=Example, DC=Net"
