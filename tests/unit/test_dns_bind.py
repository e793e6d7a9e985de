"""Role dns: the BIND files rendered from the model (TSIG key, named.conf.local, zone seed) and
their registry entries. A real named runs them in tests/integration/dns/test_bind_server.py."""
import copy

import pytest

from salt_mailha.core import dns as core
from salt_mailha.core import render
from salt_mailha.core.errors import ValidationError
from salt_mailha.core.model import parse_site
from tests.support.example import example_pillar

SECRET = example_pillar()["mailha"]["dns"]["tsig"]["secret"]


def site(edit=None):
    pillar = example_pillar()
    if edit:
        edit(pillar["mailha"])
    return parse_site(copy.deepcopy(pillar["mailha"]))


def test_tsig_key_file_holds_the_key_in_bind_syntax():
    s = site()
    assert core.render_tsig_key(s, s.node("ns1")) == (
        'key "mailha-update" {\n    algorithm hmac-sha256;\n    secret "' + SECRET + '";\n};\n')


def test_named_conf_local_includes_the_key_and_lets_only_it_update_and_transfer():
    s = site()
    text = core.render_named_conf_local(s, s.node("ns1"))
    assert 'include "/etc/bind/mailha-tsig.key";' in text
    assert 'zone "example.net" {' in text
    assert "type primary;" in text
    assert 'file "/var/lib/bind/example.net.db";' in text
    assert "update-policy { grant mailha-update zonesub ANY; };" in text
    assert "allow-transfer { key mailha-update; };" in text
    assert text.index("include") < text.index("zone ")  # the key is defined before its use


def test_zone_seed_has_soa_ns_and_an_a_per_dns_node():
    s = site()
    assert core.render_zone_seed(s) == (
        "$TTL 3600\n"
        "example.net. IN SOA ns1.example.net. hostmaster.example.net. ( 1 3600 600 86400 60 )\n"
        "example.net. IN NS ns1.example.net.\n"
        "ns1.example.net. IN A 192.0.2.10\n")
    assert core.zone_file_path(s) == "/var/lib/bind/example.net.db"


def test_zone_seed_with_two_dns_nodes_names_both():
    def add_ns2(m):
        m["nodes"]["ns2"] = {"roles": ["dns"], "addresses": {"public": "192.0.2.9"}}
    text = core.render_zone_seed(site(add_ns2))
    assert "IN SOA ns1.example.net." in text  # the first dns node in pillar order is the primary
    assert "example.net. IN NS ns1.example.net.\nexample.net. IN NS ns2.example.net.\n" in text
    assert "ns2.example.net. IN A 192.0.2.9\n" in text


def test_the_secret_is_only_in_the_key_file():
    s = site()
    ns1 = s.node("ns1")
    assert SECRET in core.render_tsig_key(s, ns1)
    assert SECRET not in core.render_named_conf_local(s, ns1)
    assert SECRET not in core.render_zone_seed(s)


def test_registry_gives_the_bind_files_to_role_dns_only():
    s = site()
    ids = {a.id: a for a in render.artifacts_for(s, s.node("ns1"))}
    assert set(ids) == {"bind-tsig", "bind-local"}
    key = ids["bind-tsig"]
    assert (key.path, key.mode, key.group, key.secret, key.sls) == (
        "/etc/bind/mailha-tsig.key", "0640", "bind", True, "dns")
    assert ids["bind-local"].render(s, s.node("ns1")) == core.render_named_conf_local(s, s.node("ns1"))
    for other in ("lb1", "db1", "mail1", "filer1"):
        assert not {a.id for a in render.artifacts_for(s, s.node(other))} & set(ids)
    assert render.packages_for("dns") == ("bind9", "bind9-utils")


def test_role_dns_without_a_dns_section_is_refused():
    with pytest.raises(ValidationError) as err:  # by the model, before anything renders
        site(lambda m: m.pop("dns"))
    assert [k for k, _ in err.value.problems] == ["mailha:dns"]
