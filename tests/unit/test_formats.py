"""core.formats: each value a format cannot carry is refused by the model, naming the key and the
file, never the secret; what a format can carry is encoded (the real parsers check the encodings
in tests/integration/formats)."""

import copy

import pytest

from salt_mailha.core import formats
from salt_mailha.core.errors import ValidationError
from salt_mailha.core.model import parse_site
from tests.support.example import example_pillar

EXAMPLE = example_pillar(iredmail=True)["mailha"]


def _set(path, value):
    def mutate(p):
        *parents, last = path.split(":")
        for k in parents:
            p = p.setdefault(k, {})
        p[last] = copy.deepcopy(value)
    return mutate


def _both(*mutations):
    def mutate(p):
        for m in mutations:
            m(p)
    return mutate


VRRP2 = _set("keepalived:vrrp_version", 2)
LOOKUP = _set("mail:lookup", {"bind_dn": "cn=vmail,dc=example,dc=net", "bind_password": "lookup-pw"})

REFUSED = [
    ("galera-newline", _both(_set("galera:sst_method", "mariabackup"), _set("galera:sst_password", "pa\nss")),
     "mailha:galera:sst_password", "contains a line break, which a MariaDB option file (galera.cnf) cannot carry"),
    ("keepalived-quote", _both(VRRP2, _set("keepalived:auth_pass", 'ab"c')), "mailha:keepalived:auth_pass",
     "contains a double quote, which keepalived.conf cannot carry"),
    ("keepalived-bytes", _both(VRRP2, _set("keepalived:auth_pass", "ééééé")), "mailha:keepalived:auth_pass",
     "is 10 bytes in UTF-8; keepalived silently uses only the first 8 bytes"),
    ("ldirectord-hash", _set("galera:monitor:password", "pass#word"), "mailha:galera:monitor:password",
     "contains a '#', which ldirectord.cf"),
    ("receive-regex", _set("ldirectord:health_content", "ok(1"), "mailha:ldirectord:health_content",
     "contains '(', which ldirectord.cf's receive= (a Perl regular expression) cannot carry"),
    ("slapd-backslash", _set("ldap:rootpw", "pass\\word"), "mailha:ldap:rootpw",
     "contains a backslash, which slapd.conf or cn=config"),
    ("slapd-separate-credentials", _both(_set("ldap:replication", {"binddn": "cn=repl,dc=example,dc=net",
                                                                  "credentials": 'repl"pw'})),
     "mailha:ldap:replication:credentials", "contains a double quote, which slapd.conf"),
    ("postfix-blank", _both(LOOKUP, _set("mail:lookup:bind_password", "padded ")), "mailha:mail:lookup:bind_password",
     "starts or ends with a blank (Postfix strips it), which a Postfix lookup table"),
    ("dn-plus", _both(LOOKUP, _set("mail:lookup:bind_dn", "cn=a+uid=b,dc=example,dc=net")),
     "mailha:mail:lookup:bind_dn", "contains '+' in a value, which a DN holds only escaped (RFC 4514)"),
    ("dn-no-attribute", _set("ldap:replication:searchbase", "example.net"), "mailha:ldap:replication:searchbase",
     "which is not attribute=value"),
    ("shell-nul", _set("mail:iredmail:postmaster_password", "pw\0x"), "mailha:mail:iredmail:postmaster_password",
     "contains a NUL character, which iRedMail's installer config (a bash file) cannot carry"),
    ("named-key", _set("dns:tsig:name", "mailha..update"), "mailha:dns:tsig:name",
     "is not a domain name"),
    ("health-page-outside", _set("ldirectord:health_page", "../x.txt"), "mailha:ldirectord:health_page",
     "leaves mail:web_root"),
    ("suffix-entry", _both(_set("mail:iredmail", None), _set("ldap:suffix", "cn=mail,dc=example,dc=net"),
                           _set("ldap:rootdn", "cn=Manager,cn=mail,dc=example,dc=net"),
                           _set("ldap:replication", {"binddn": "cn=Manager,cn=mail,dc=example,dc=net",
                                                     "searchbase": "cn=mail,dc=example,dc=net"})),
     "mailha:ldap:suffix", "for which salt-mailha cannot create the suffix entry"),
    ("line-separator", _set("galera:monitor:password", "pass\u2028word"), "mailha:galera:monitor:password",
     "contains a Unicode line separator (U+2028)"),
]


@pytest.mark.parametrize("mutate,key,message", [r[1:] for r in REFUSED], ids=[r[0] for r in REFUSED])
def test_refused_with_key_file_and_fix(mutate, key, message):
    p = copy.deepcopy(EXAMPLE)
    mutate(p)
    with pytest.raises(ValidationError) as exc:
        parse_site(p)
    found = [m for k, m in exc.value.problems if k == key and message in m]
    assert found, exc.value.problems
    fixes = ("without it", "choose a password of", "set a password of", "give a file name", "use a suffix")
    assert any(f in found[0] for f in fixes), found[0]  # says what to change


@pytest.mark.parametrize("mutate,key,message", [r[1:] for r in REFUSED], ids=[r[0] for r in REFUSED])
def test_refusals_never_show_the_value(mutate, key, message):
    p = copy.deepcopy(EXAMPLE)
    mutate(p)
    with pytest.raises(ValidationError) as exc:
        parse_site(p)
    node = p
    for k in key.split(":")[1:]:
        node = node[k]
    if any(w in key for w in ("pass", "rootpw", "credentials", "secret")):
        assert node not in str(exc.value)


CARRIED = [
    ("mariadb-specials", _both(_set("galera:sst_method", "mariabackup"),
                               _set("galera:sst_password", ' "q" \\ #h ;$x{} é '))),
    ("keepalived-blanks", _both(VRRP2, _set("keepalived:auth_pass", " a b#!c "))),
    ("ldirectord-quote", _set("galera:monitor:password", 'a"b c;\\$')),
    ("dovecot-postfix-specials", _both(LOOKUP, _set("mail:lookup:bind_password", 'a "b" \\c #d $e %f'))),
    ("dn-spaces-non-ascii", _both(LOOKUP, _set("mail:lookup:bind_dn", "cn=Zoë Müller, dc=example, dc=net"))),
    ("shell-quote", _set("mail:iredmail:admin_password", "it's $(x) `y` \"z\"")),
]


@pytest.mark.parametrize("mutate", [r[1] for r in CARRIED], ids=[r[0] for r in CARRIED])
def test_carried_values_pass(mutate):
    p = copy.deepcopy(EXAMPLE)
    mutate(p)
    parse_site(p)


def test_every_route_names_known_formats():
    site = parse_site(copy.deepcopy(EXAMPLE))
    routes = formats.routes(site)
    assert {r.key for r in routes} >= {"mailha:ldap:rootpw", "mailha:ldap:suffix", "mailha:galera:monitor:password",
                                       "mailha:mail:iredmail:admin_password", "mailha:dns:zone"}
    for r in routes:
        assert r.formats and all(f in formats.FORMATS for f in r.formats), r


def test_rootpw_reaches_slapd_only_when_replication_binds_as_rootdn():
    p = copy.deepcopy(EXAMPLE)
    by_key = {r.key: r for r in formats.routes(parse_site(p))}
    assert "slapd" in by_key["mailha:ldap:rootpw"].formats
    p["ldap"]["replication"] = {"binddn": "cn=repl,dc=example,dc=net", "credentials": "repl-pw"}
    LOOKUP(p)
    by_key = {r.key: r for r in formats.routes(parse_site(p))}
    assert by_key["mailha:ldap:rootpw"].formats == ("shell",)  # iRedMail's config only
    assert by_key["mailha:ldap:replication:credentials"].formats == ("slapd",)


@pytest.mark.parametrize("quote,value,expected", [
    (formats.mariadb_quote, 'a"b\\c', '"a\\"b\\\\c"'),
    (formats.dovecot_quote, 'a"b\\c', '"a\\"b\\\\c"'),
    (formats.shell_quote, "it's", "'it'\"'\"'s'"),
    (formats.keepalived_quote, "a b", '"a b"'),
    (formats.slapd_quote, "a b", '"a b"'),
], ids=["mariadb", "dovecot", "shell", "keepalived", "slapd"])
def test_encoders(quote, value, expected):
    assert quote(value) == expected
