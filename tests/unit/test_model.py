"""The site model: the example pillar parses; every validation rule stops a bad pillar with a
message that names the pillar key and says what to do."""

import copy
import pathlib

import pytest

from salt_mailha import data as mailha_data
from salt_mailha.core.errors import ValidationError
from salt_mailha.core.model import NO_SECRETS, dn_under, load_site, parse_site
from salt_mailha.core.secret import Secret, redact

ROOT = pathlib.Path(__file__).resolve().parents[2]
EXAMPLE = mailha_data.example_pillar()["mailha"]


def example():
    return copy.deepcopy(EXAMPLE)


def test_example_pillar_is_valid_and_complete():
    site = parse_site(example())
    assert [n.id for n in site.nodes] == ["ns1", "filer1", "lb1", "lb2", "db1", "db2", "mail1", "mail2"]
    assert site.vips["mail"].address != site.vips["db"].address
    assert [n.id for n in site.real_servers("db")] == ["db1", "db2"]
    assert [n.id for n in site.real_servers("mail")] == ["mail1", "mail2"]
    assert [n.id for n in site.galera_members()] == ["filer1", "db1", "db2"]
    assert {s.name for s in site.services} >= {"mysql", "http", "https", "imaps", "pop3s", "submission", "smtps"}
    assert site.vips["db"].fqdn == "db.example.net"


def test_load_site_without_mailha_key_names_it():
    with pytest.raises(ValidationError) as exc:
        load_site({"other": 1})
    assert exc.value.problems[0][0] == "mailha"


def _set(path, value):
    def mutate(d):
        *parents, last = path.split(":")
        for k in parents:
            d = d[k]
        if value is DELETE:
            del d[last]
        else:
            d[last] = value
    return mutate


DELETE = object()


def _both(*mutations):
    def mutate(d):
        for m in mutations:
            m(d)
    return mutate


def _same_vip(d):
    d["vips"]["db"]["address"] = d["vips"]["mail"]["address"]


def _db_and_mail_on_one_node(d):
    d["nodes"]["mail1"]["roles"] = ["mail", "db"]


def _only_two_galera(d):
    d["nodes"]["filer1"]["roles"] = ["filer"]


def _four_db_no_arbitrator(d):
    d["nodes"]["db3"] = {"roles": ["db"], "addresses": {"public": "192.0.2.19", "private": "10.1.1.19"}}


def _one_lb(d):
    d["nodes"]["lb2"]["roles"] = ["filer"]


# (id, mutation, pillar key the message must name, words the message must contain)
BAD = [
    ("vip-shared-by-db-and-mail", _same_vip, "mailha:vips:db:address", "its own address"),
    ("node-holds-vip-it-is-client-of", _db_and_mail_on_one_node, "mailha:nodes:mail1:roles", "client of it"),
    ("duplicate-node-address", _set("nodes:db2:addresses:public", "192.0.2.15"),
     "mailha:nodes:db2:addresses:public", "already the address of"),
    ("vip-in-no-network", _set("vips:mail:address", "198.51.100.5"), "mailha:vips:mail:address", "inside no declared network"),
    ("vip-equals-node-address", _set("vips:mail:address", "192.0.2.13"), "mailha:vips:mail:address", "address of node lb1"),
    ("node-address-outside-network", _set("nodes:db1:addresses:private", "10.9.9.9"),
     "mailha:nodes:db1:addresses:private", "not inside"),
    ("galera-fewer-than-3", _only_two_galera, "mailha:galera", "at least 3"),
    ("galera-even-without-arbitrator", _four_db_no_arbitrator, "mailha:galera", "even"),
    ("galera-unknown-sst", _set("galera:sst_method", "xtrabackup-v2"), "mailha:galera:sst_method", "rsync"),
    ("galera-garbd-without-node", _set("galera:arbitrator", "garbd"), "mailha:galera:arbitrator", "role garbd"),
    ("galera-bootstrap-not-member", _set("galera:bootstrap_node", "mail1"), "mailha:galera:bootstrap_node", "not a Galera member"),
    ("vrrp-auth-too-long", _set("keepalived:auth_pass", "mySuperSecretPassw0rd"), "mailha:keepalived:auth_pass", "at most 8"),
    ("vrrp-duplicate-router-id", _set("vips:db:virtual_router_id", 51), "mailha:vips:db:virtual_router_id", "own id"),
    ("vrrp-subsecond-needs-v3", _both(_set("keepalived:vrrp_version", 2), _set("keepalived:advert_int", 0.5)),
     "mailha:keepalived:advert_int", "vrrp_version: 3"),
    ("fewer-than-2-lbs", _one_lb, "mailha:nodes", "at least 2"),
    ("ldap-rootdn-outside-suffix", _set("ldap:rootdn", "cn=Manager,dc=bonilan,dc=net"), "mailha:ldap:rootdn", "not under the suffix"),
    ("ldap-binddn-outside-suffix", _set("ldap:replication:binddn", "cn=Manager,dc=bonilan,dc=net"),
     "mailha:ldap:replication:binddn", "not under the suffix"),
    ("ldap-searchbase-outside-suffix", _set("ldap:replication:searchbase", "dc=bonilan,dc=net"),
     "mailha:ldap:replication:searchbase", "not under the suffix"),
    ("ldap-serverid-url-mismatch", _set("ldap:servers", {"mail1": {"server_id": 1, "url": "ldap://mail1.example.net/"}}),
     "mailha:ldap:servers:mail1:url", "does not match the listener"),
    ("ldap-repl-credential-not-rootpw", _set("ldap:replication:credentials", "other"),
     "mailha:ldap:replication:credentials", "err=49"),
    ("dns-weak-tsig", _set("dns:tsig:algorithm", "hmac-md5"), "mailha:dns:tsig:algorithm", "hmac-sha256"),
    ("dns-mx-not-mail-node", _set("dns:mx", {"mail1": 10, "db1": 20}), "mailha:dns:mx:db1", "MX targets must be mail nodes"),
    ("mx-target-outside-zone", _set("nodes:mail2:fqdn", "mail2.example.org"), "mailha:nodes:mail2:fqdn",
     "outside the DNS zone 'example.net'"),
    *[(f"fqdn-{name}", _set("nodes:db1:fqdn", value), "mailha:nodes:db1:fqdn", "is not valid: a host name")
      for name, value in (("space", "db1 .example.net"), ("underscore", "db_1.example.net"),
                          ("leading-hyphen", "-db1.example.net"), ("trailing-hyphen", "db1-.example.net"),
                          ("empty-label", "db1..example.net"), ("final-dot", "db1.example.net."),
                          ("label-64", "d" * 64 + ".example.net"), ("too-long", ("a" * 60 + ".") * 5 + "net"),
                          ("newline", "db1.example.net\nrootpw x"), ("quote", 'db1".example.net'),
                          ("shell", "db1;reboot.example.net"), ("unicode", "dб1.example.net"),
                          ("trailing-newline", "db1.example.net\n"))],
    # "$" also matches before a final newline: every pattern must hold for the whole value
    ("node-id-trailing-newline", _set("nodes:db1\n", {"roles": ["db"]}), "mailha:nodes:db1\n", "hostnames"),
    ("cluster-name-trailing-newline", _set("galera:cluster_name", "mailha_db\n"), "mailha:galera:cluster_name",
     "is not valid"),
    ("domain-trailing-newline", _set("domain", "example.net\n"), "mailha:domain", "is not valid"),
    ("unknown-top-key", _set("vipz", {}), "mailha:vipz", "unknown key"),
    ("unknown-nested-key", _set("galera:sst_methd", "rsync"), "mailha:galera:sst_methd", "unknown key"),
    ("unknown-node-key", _set("nodes:db1:role", ["db"]), "mailha:nodes:db1:role", "unknown key"),
    ("unknown-role", _set("nodes:db1:roles", ["database"]), "mailha:nodes:db1:roles", "unknown role"),
    ("service-unknown-vip", _set("services:mysql:vip", "database"), "mailha:services:mysql:vip", "unknown VIP"),
    ("nfs-server-not-filer", _set("mail:vmail:nfs_server", "db1"), "mailha:mail:vmail:nfs_server", "role filer"),
    ("missing-required", _set("galera:cluster_name", DELETE), "mailha:galera:cluster_name", "required"),
    ("tls-ca-relative", _set("mail:tls", {"ca": "certs/ca.pem"}), "mailha:mail:tls:ca", "must be an absolute path"),
    ("tls-ca-dotdot", _set("mail:tls", {"ca": "/etc/ssl/../shadow"}), "mailha:mail:tls:ca", "absolute path"),
    ("tls-ca-not-a-string", _set("mail:tls", {"ca": ["/etc/ssl/a.pem"]}), "mailha:mail:tls:ca", "absolute path"),
    ("tls-ca-is-the-key", _set("mail:tls", {"key": "/etc/ssl/private/m.pem", "ca": "/etc/ssl/private/m.pem"}),
     "mailha:mail:tls:ca", "is the private key"),
    # roles that cannot be held together, and roles whose section is missing
    ("lb-is-also-a-mail-real-server", _set("nodes:lb1:roles", ["lb", "mail"]), "mailha:nodes:lb1:roles",
     "cannot forward to itself"),
    ("lb-is-also-a-db-real-server", _set("nodes:lb2:roles", ["db", "lb"]), "mailha:nodes:lb2:roles",
     "cannot forward to itself"),
    ("role-listed-twice", _set("nodes:mail1:roles", ["mail", "mail"]), "mailha:nodes:mail1:roles", "more than once"),
    ("dns-role-without-dns-section", _set("dns", DELETE), "mailha:dns", "role dns (ns1)"),
    ("lb-role-without-services", _set("services", DELETE), "mailha:services", "virtual services"),
    ("mail-role-without-ldap", _set("ldap", DELETE), "mailha:ldap", "role mail"),
    ("db-role-without-galera", _set("galera", DELETE), "mailha:galera", "role db or quorum"),
    # secrets: required where the configuration uses them, refused where nothing does
    ("vrrp2-without-auth-pass", _set("keepalived:vrrp_version", 2), "mailha:keepalived:auth_pass", "lb1, lb2"),
    ("mariabackup-without-sst-password", _set("galera:sst_method", "mariabackup"), "mailha:galera:sst_password",
     "db1, db2, filer1"),
    ("monitor-user-tab", _set("galera:monitor:user", "mon\titor"), "mailha:galera:monitor:user", "MariaDB user name"),
    ("zone-not-a-dns-name", _set("dns:zone", "example net"), "mailha:dns:zone", "DNS zone name"),
    ("priority-step-below-1", _both(_set("keepalived:priority_top", 100), _set("keepalived:priority_step", 100)),
     "mailha:keepalived:priority_step", "gives lb2 priority 0"),
    ("unused-galera-root-password", _set("galera:root_password", "x"), "mailha:galera:root_password", "not used"),
    ("repl-binddn-without-credentials", _set("ldap:replication:binddn", "cn=repl,dc=example,dc=net"),
     "mailha:ldap:replication:credentials", "mail1, mail2"),
]


@pytest.mark.parametrize("mutate,key,words", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_pillar_is_refused_naming_the_key(mutate, key, words):
    data = example()
    mutate(data)
    with pytest.raises(ValidationError) as exc:
        parse_site(data)
    matching = [msg for k, msg in exc.value.problems if k == key]
    assert matching, f"no problem reported for {key}: {exc.value.problems}"
    assert any(words in m for m in matching), matching
    assert f"pillar {key}:" in str(exc.value)


def test_every_problem_is_reported_at_once():
    data = example()
    _same_vip(data)
    data["keepalived"]["auth_pass"] = "123456789"
    data["galera"]["sst_method"] = "nope"
    data["typo"] = 1
    with pytest.raises(ValidationError) as exc:
        parse_site(data)
    keys = {k for k, _ in exc.value.problems}
    assert {"mailha:vips:db:address", "mailha:keepalived:auth_pass", "mailha:galera:sst_method", "mailha:typo"} <= keys


def test_secrets_are_typed_and_never_printed():
    site = parse_site(example())
    values = [s.reveal() for s in site.secrets()]
    assert "CHANGE-ME-db-monitor" in values and "CHANGE-ME-ldap-root" in values
    text = repr(site) + str(site)
    for v in values:
        assert v not in text
    assert redact({"k": f"pw={values[1]}", "l": [values[2]]}, site.secrets()) == {"k": "pw=<redacted>", "l": ["<redacted>"]}


def test_a_secret_in_an_error_is_not_echoed():
    data = example()
    data["dns"]["tsig"]["secret"] = "not base64 !!"
    with pytest.raises(ValidationError) as exc:
        parse_site(data)
    assert "not base64 !!" not in str(exc.value)
    assert "mailha:dns:tsig:secret" in str(exc.value)


def test_secret_cannot_be_pickled():
    import pickle

    with pytest.raises(TypeError):
        pickle.dumps(Secret("x"))


@pytest.mark.parametrize("dn,suffix,under", [
    ("cn=Manager,dc=example,dc=net", "dc=example,dc=net", True),
    ("CN=Manager, DC=Example, DC=net", "dc=example,dc=net", True),
    ("dc=example,dc=net", "dc=example,dc=net", True),
    ("cn=Manager,dc=bonilan,dc=net", "dc=example,dc=net", False),
    ("dc=net", "dc=example,dc=net", False),
], ids=["below", "case-and-spaces", "equal", "other-suffix", "above"])
def test_dn_under(dn, suffix, under):
    assert dn_under(dn, suffix) is under


def test_core_never_imports_salt():
    import ast

    for path in (ROOT / "salt_mailha" / "core").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            assert not any(n == "salt" or n.startswith("salt.") for n in names), f"{path} imports salt"


def test_formula_includes_dns_on_the_updater_even_without_the_role():
    from salt_mailha.core.render import formula_for

    data = example()
    data["dns"]["updater"] = "lb1"
    site = parse_site(data)
    assert formula_for(site, site.node("lb1")) == ["lb", "dns"]
    assert formula_for(site, site.node("lb2")) == ["lb"]
    assert formula_for(site, site.node("ns1")) == ["dns"]


@pytest.mark.parametrize(
    "tls,ca",
    [(None, None), ({}, None), ({"cert": "/etc/ssl/certs/m.pem", "key": "/etc/ssl/private/m.key"}, None),
     ({"ca": None}, None), ({"ca": "/etc/ssl/certs/ssl-cert-snakeoil.pem"}, "/etc/ssl/certs/ssl-cert-snakeoil.pem"),
     ({"ca": "/usr/local/share/ca-certificates/site_CA+2.crt"}, "/usr/local/share/ca-certificates/site_CA+2.crt")],
    ids=["no-tls", "empty-tls", "cert-key-only", "ca-null", "snakeoil", "local-ca"])
def test_mail_tls_ca(tls, ca):
    data = example()
    if tls is not None:
        data["mail"]["tls"] = tls
    site = parse_site(data)
    assert site.mail.tls.ca == ca
    assert site.mail.tls.cert == (tls or {}).get("cert", "/etc/ssl/certs/iRedMail.crt")


def test_placeholder_problems_name_every_placeholder_by_key():
    import base64
    import copy

    from salt_mailha.core.model import placeholder_problems
    from tests.support.example import example_pillar

    data = example_pillar()["mailha"]
    keys = [k for k, _ in placeholder_problems(data)]
    for key in ("mailha:galera:monitor:password", "mailha:ldap:rootpw", "mailha:dns:tsig:secret"):
        assert key in keys, key
    assert all("set a real secret" in m for _, m in placeholder_problems(data))
    real = copy.deepcopy(data)

    def replace(obj):
        for k, v in list(obj.items()) if isinstance(obj, dict) else enumerate(obj):
            if isinstance(v, (dict, list)):
                replace(v)
            elif isinstance(v, str) and k in keys_leaf:
                obj[k] = base64.b64encode(b"a real, long secret").decode() if k == "secret" else "s3cr3t-x9"
    keys_leaf = {k.rsplit(":", 1)[1] for k in keys}
    replace(real)
    assert placeholder_problems(real) == []
    for placeholder in ("change-me", "ChangeMe", base64.b64encode(b"xx CHANGE-ME xx").decode()):
        assert [k for k, _ in placeholder_problems({"x": [{"y": placeholder}]})] == ["mailha:x:0:y"]
    for value in ("monitor", "dGVzdA==", "exchange-metrics", "QUJD"):  # not placeholders
        assert placeholder_problems({"x": value}) == [], value
    assert load_site_allows(data) is False


def load_site_allows(data):
    import copy

    from salt_mailha.core.model import parse_site

    flagged = copy.deepcopy(data)
    flagged["allow_placeholder_secrets"] = True
    assert parse_site(flagged).allow_placeholder_secrets is True
    return parse_site(data).allow_placeholder_secrets


def test_secrets_include_the_native_slapd_rootpw_hash_of_each_mail_node():
    """A derived credential is a secret too: the hash in a mail node's slapd.conf is redacted in
    diffs and output like the rootpw it comes from (it would let anyone test guesses offline)."""
    from salt_mailha.core import ldap
    from salt_mailha.core.model import load_site
    from salt_mailha.core.secret import redact
    from tests.support.example import example_pillar

    site = load_site(example_pillar())
    for node in site.nodes_with("mail"):
        text = ldap.render_native_slapd_conf(site, node)
        (line,) = [x for x in text.splitlines() if x.startswith("rootpw")]
        digest = line.split()[1]
        assert digest.startswith("{SSHA}") and digest in {s.reveal() for s in site.secrets()}
        assert "{SSHA}" not in redact(text, site.secrets()) and "rootpw" in redact(text, site.secrets())


# ------------------------------------------------------------------ secrets by role


def without(data, *paths):
    for path in paths:
        *parents, leaf = path.split(":")[1:]
        sec = data
        for k in parents:
            sec = sec[k]
        del sec[leaf]
    return data


@pytest.mark.parametrize("node,missing,ok", [
    ("lb1", ["mailha:ldap:rootpw", "mailha:dns:tsig:secret"], True),
    ("ns1", ["mailha:ldap:rootpw", "mailha:galera:monitor:password"], True),
    ("mail1", ["mailha:galera:monitor:password", "mailha:dns:tsig:secret"], True),
    ("mail1", ["mailha:ldap:rootpw"], False),
    ("lb2", ["mailha:galera:monitor:password"], False),
    ("filer1", ["mailha:galera:monitor:password"], False),
    ("ns1", ["mailha:dns:tsig:secret"], False),
])
def test_a_node_needs_the_secrets_of_its_roles_and_no_other(node, missing, ok):
    data = without(example(), *missing)
    if ok:
        assert parse_site(data, node=node).node(node).id == node
    else:
        with pytest.raises(ValidationError) as err:
            parse_site(data, node=node)
        assert [k for k, _ in err.value.problems] == missing
        assert f"is required on {node}" in str(err.value)
    with pytest.raises(ValidationError) as err:  # the whole site needs every one
        parse_site(copy.deepcopy(data))
    assert sorted(k for k, _ in err.value.problems) == sorted(missing)
    assert parse_site(copy.deepcopy(data), node=NO_SECRETS).secrets() is not None  # the topology alone


@pytest.mark.parametrize("section,change,key,users", [
    ("keepalived", {"vrrp_version": 2}, "mailha:keepalived:auth_pass", "lb1, lb2"),
    ("galera", {"sst_method": "mariabackup"}, "mailha:galera:sst_password", "db1, db2, filer1"),
    ("galera", {"sst_method": "mysqldump"}, "mailha:galera:sst_password", "db1, db2, filer1"),
])
def test_a_secret_is_required_only_where_the_configuration_uses_it(section, change, key, users):
    data = example()
    parse_site(copy.deepcopy(data))  # VRRPv3 and rsync: neither secret is used
    data[section].update(change)
    with pytest.raises(ValidationError) as err:
        parse_site(data)
    assert err.value.problems == [(key, f"is required: {users} use(s) it")]


def test_the_unused_galera_root_password_is_refused_by_name():
    data = example()
    data["galera"]["root_password"] = "s3cret-root"
    with pytest.raises(ValidationError) as err:
        parse_site(data)
    assert [k for k, _ in err.value.problems] == ["mailha:galera:root_password"]
    assert "remove it from the pillar" in str(err.value) and "s3cret-root" not in str(err.value)


def test_a_pillar_that_did_not_render_says_so_not_missing_key():
    msg = "Rendering SLS 'mailha_secrets.mail' failed. Please see master log for details."
    for pillar in ({"_errors": [msg]}, {"_errors": [msg], "mailha": example()}):
        with pytest.raises(ValidationError) as err:
            load_site(pillar)
        assert err.value.problems == [("mailha", f"the pillar did not render: {msg}")]


def test_a_lookup_bind_dn_needs_its_password_only_on_the_mail_nodes():
    data = example()
    data["mail"]["lookup"] = {"bind_dn": "cn=vmail,dc=example,dc=net"}
    assert parse_site(copy.deepcopy(data), node="lb1").mail.lookup.bind_password is None
    with pytest.raises(ValidationError) as err:
        parse_site(data, node="mail2")
    assert [k for k, _ in err.value.problems] == ["mailha:mail:lookup:bind_password"]
