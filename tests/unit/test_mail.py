"""Unit tests of salt_mailha.core.mail and the mail section of the model: renderers, the
iRedMail environment, fstab planning, the mount table and lsattr parsers (fed with output
captured on this machine: tests/unit/data/mail/), the share guard and the health page."""
import copy
import pathlib
import re

import pytest

from salt_mailha.core import mail
from salt_mailha.core.errors import MailhaError, ParseError, ValidationError
from salt_mailha.core.model import parse_site
from tests.support.example import example_pillar

REPO = pathlib.Path(__file__).resolve().parents[2]
DATA = pathlib.Path(__file__).parent / "data" / "mail"
EXAMPLE = example_pillar(iredmail=True)["mailha"]
SECRETS = ("CHANGE-ME-iredmail-admin", "CHANGE-ME-postmaster", "CHANGE-ME-ldap-root")


def site(**mail_overrides):
    data = copy.deepcopy(EXAMPLE)
    data["mail"].update(mail_overrides)
    return parse_site(data)


@pytest.fixture(scope="module")
def example():
    return parse_site(copy.deepcopy(EXAMPLE))


# ----------------------------------------------------------------------------------- model


@pytest.mark.parametrize("overrides, key, text", [
    ({"vmail": {"path": "var/vmail", "nfs_server": "filer1", "export": "/srv/var/vmail"}},
     "mailha:mail:vmail:path", "must be an absolute path"),
    ({"vmail": {"nfs_server": "filer1", "export": "/srv/../etc"}}, "mailha:mail:vmail:export", "absolute path"),
    ({"vmail": {"nfs_server": "filer1", "export": "/srv/v", "options": []}}, "mailha:mail:vmail:options",
     "at least one NFS mount option"),
    ({"vmail": {"nfs_server": "filer1", "export": "/srv/v", "uid": 33}}, "mailha:mail:vmail:uid", "out of range"),
    ({"vmail": {"nfs_server": "filer1", "export": "/srv/v", "network": "nowhere"}}, "mailha:mail:vmail:network",
     "not declared"),
    ({"vmail": {"nfs_server": "filer1", "export": "/srv/v", "network": "public"}, "instances": {}},
     None, None),
    ({"tls": {"cert": "cert.pem"}}, "mailha:mail:tls:cert", "absolute path"),
    ({"lookup": {"bind_dn": "cn=vmail,dc=example,dc=net"}}, "mailha:mail:lookup:bind_password", "is required: mail1, mail2"),
    ({"lookup": {"bind_dn": "cn=vmail,dc=other,dc=org", "bind_password": "x"}}, "mailha:mail:lookup:bind_dn",
     "not under the suffix"),
    ({"lookup": {"object_class": "mail User"}}, "mailha:mail:lookup:object_class", "objectClass"),
    ({"instances": {"db1": {"smtp_port": 2525}}}, "mailha:mail:instances:db1", "not a mail node"),
    ({"instances": {"mail1": {"smtp_port": 0}}}, "mailha:mail:instances:mail1:smtp_port", "out of range"),
    ({"instances": {"mail1": {"ldap_uri": "ldap://x"}}}, "mailha:mail:instances:mail1:ldap_uri", "not valid"),
    ({"instances": {"mail1": {"bind_address": "localhost"}}}, "mailha:mail:instances:mail1:bind_address",
     "IPv4"),
    ({"instances": {"mail1": {"sockets": "/x"}}}, "mailha:mail:instances:mail1:sockets", "unknown key"),
    ({"web_root": "www"}, "mailha:mail:web_root", "absolute path"),
], ids=["relative-path", "dotdot-export", "no-options", "system-uid", "unknown-network", "public-network-ok",
        "relative-cert", "dn-without-password", "dn-off-suffix", "bad-objectclass", "instance-not-mail",
        "port-zero", "bad-ldap-uri", "bind-name", "unknown-instance-key", "relative-web-root"])
def test_mail_pillar_validation(overrides, key, text):
    if key is None:
        site(**overrides)
        return
    with pytest.raises(ValidationError) as exc:
        site(**overrides)
    assert any(k == key and text in msg for k, msg in exc.value.problems), exc.value.render()


@pytest.mark.parametrize("iredmail, key, text", [
    ({"source": "ftp://x/y.tgz"}, "mailha:mail:iredmail:source", "salt://"),
    ({"source_hash": "md5=abc"}, "mailha:mail:iredmail:source_hash", "sha256="),
    ({"components": ["roundcube", "webmin"]}, "mailha:mail:iredmail:components:1", "not one of"),
    ({"admin_user": "root; drop"}, "mailha:mail:iredmail:admin_user", "MySQL user name"),
], ids=["ftp-source", "md5-hash", "unknown-component", "bad-admin-user"])
def test_iredmail_pillar_validation(iredmail, key, text):
    data = copy.deepcopy(EXAMPLE)
    data["mail"]["iredmail"].update(iredmail)
    with pytest.raises(ValidationError) as exc:
        parse_site(data)
    assert any(k == key and text in msg for k, msg in exc.value.problems), exc.value.render()


def test_instance_defaults_are_debian_paths(example):
    inst = example.mail.instance("mail1")
    assert (inst.postfix_dir, inst.dovecot_dir, inst.smtp_port, inst.imaps_port) == ("/etc/postfix", "/etc/dovecot",
                                                                                     25, 993)


# ----------------------------------------------------------------------------------- iRedMail


def test_iredmail_config_same_on_every_node_with_pillar_secrets(example):
    c1 = mail.render_iredmail_config(example, example.node("mail1"))
    c2 = mail.render_iredmail_config(example, example.node("mail2"))
    assert c1 == c2
    assert "export MYSQL_ROOT_PASSWD='CHANGE-ME-iredmail-admin'" in c1
    assert "export DOMAIN_ADMIN_PASSWD_PLAIN='CHANGE-ME-postmaster'" in c1
    assert "export LDAP_ROOTPW='CHANGE-ME-ldap-root'" in c1
    assert "export LDAP_SUFFIX='dc=example,dc=net'" in c1 and "export BACKEND='OPENLDAP'" in c1
    assert "export STORAGE_BASE_DIR='/var/vmail'" in c1 and c1.rstrip().endswith("#EOF")
    # every generated password is set, 32 hex characters, and stable
    for name in mail.IREDMAIL_DERIVED:
        assert re.search(rf"^export {name}='[0-9a-f]{{32}}'$", c1, re.M), name


def test_iredmail_config_quotes_a_quote(example):
    data = copy.deepcopy(EXAMPLE)
    data["mail"]["iredmail"]["postmaster_password"] = "it's $(reboot)"
    s = parse_site(data)
    text = mail.render_iredmail_config(s, s.node("mail1"))
    assert "export DOMAIN_ADMIN_PASSWD_PLAIN='it'\"'\"'s $(reboot)'" in text


def test_iredmail_lookup_password_becomes_ldap_bindpw():
    s = site(lookup={"bind_dn": "cn=vmail,dc=example,dc=net", "bind_password": "vmail-bind-pw"})
    assert "export LDAP_BINDPW='vmail-bind-pw'" in mail.render_iredmail_config(s, s.node("mail1"))


@pytest.mark.parametrize("node, initialize", [("mail1", "YES"), ("mail2", "NO")])
def test_iredmail_environment(example, node, initialize):
    env = mail.iredmail_environment(example, example.node(node))
    assert env["MYSQL_SERVER"] == env["MYSQL_SERVER_ADDRESS"] == "db.example.net"
    assert env["MYSQL_ROOT_USER"] == "admin_iredmail" and env["MYSQL_GRANT_HOST"] == "%"
    assert env["INITIALIZE_SQL_DATA"] == initialize  # only the first node creates the SQL data
    assert env["AUTO_USE_EXISTING_CONFIG_FILE"] == "y" and env["AUTO_INSTALL_WITHOUT_CONFIRM"] == "y"
    assert env["AUTO_CLEANUP_REPLACE_FIREWALL_RULES"] == "n"
    joined = "\n".join(f"{k}={v}" for k, v in env.items())
    for secret in SECRETS + mail.iredmail_secrets(example, example.node(node)):
        assert secret not in joined


@pytest.mark.parametrize("source, expected", [
    ("salt://iredmail/iRedMail-1.6.8.tar.gz", "/root/iRedMail-1.6.8"),
    ("https://example.org/dl/iRedMail-1.7.0.tgz", "/root/iRedMail-1.7.0"),
], ids=["salt-tar-gz", "https-tgz"])
def test_iredmail_dir(example, source, expected):
    assert mail.iredmail_dir(example, source) == expected


def test_iredmail_needs_the_db_vip(example):
    data = copy.deepcopy(EXAMPLE)
    del data["vips"]["db"]
    data["services"] = {k: v for k, v in data["services"].items() if v["vip"] != "db"}
    with pytest.raises(ValidationError) as exc:
        parse_site(data)
    assert "mailha:mail:iredmail" in {k for k, _ in exc.value.problems}


# ----------------------------------------------------------------------------------- Postfix/Dovecot


def test_postfix_and_dovecot_files(example):
    files = {f.path: f for f in mail.mail_files(example, example.node("mail2"))}
    assert {p: f.mode for p, f in files.items()} == {
        "/etc/postfix/main.cf": "0644", "/etc/postfix/master.cf": "0644",
        "/etc/postfix/ldap/virtual_mailbox_maps.cf": "0640", "/etc/dovecot/dovecot.conf": "0644",
        "/etc/dovecot/dovecot-ldap.conf.ext": "0600"}
    main = files["/etc/postfix/main.cf"].content
    assert "virtual_mailbox_maps = proxy:ldap:/etc/postfix/ldap/virtual_mailbox_maps.cf" in main
    assert "virtual_mailbox_base = /var/vmail" in main and "virtual_uid_maps = static:2000" in main
    assert "myhostname = mail2.example.net" in main and "smtpd_sasl_path = /run/dovecot/auth-client" in main
    assert "smtpd_tls_cert_file = /etc/ssl/certs/iRedMail.crt" in main
    master = files["/etc/postfix/master.cf"].content
    assert re.search(r"^587 inet n - n - - smtpd$", master, re.M)
    assert "-o smtpd_tls_security_level=encrypt" in master and "-o smtpd_tls_wrappermode=yes" in master
    ldap_map = files["/etc/postfix/ldap/virtual_mailbox_maps.cf"]
    assert ldap_map.group == "postfix" and "server_host = ldap://127.0.0.1:389/" in ldap_map.content
    assert "query_filter = (&(objectClass=inetOrgPerson)(mail=%s))" in ldap_map.content
    dovecot = files["/etc/dovecot/dovecot.conf"].content
    assert "port = 993" in dovecot and "port = 995" in dovecot and "ssl = required" in dovecot
    assert "mail_nfs_storage = yes" in dovecot
    dldap = files["/etc/dovecot/dovecot-ldap.conf.ext"].content
    assert "auth_bind = yes" in dldap and "=home=/var/vmail/%d/%n" in dldap
    # only the two LDAP files hold the bind password
    holders = {p for p, f in files.items() if "CHANGE-ME-ldap-root" in f.content}
    assert holders == {"/etc/postfix/ldap/virtual_mailbox_maps.cf", "/etc/dovecot/dovecot-ldap.conf.ext"}


def test_instance_overrides_and_lookup_dn():
    s = site(instances={"mail1": {"postfix_dir": "/srv/pf", "bind_address": "127.0.0.1", "smtp_port": 2525,
                                  "ldap_uri": "ldap://127.0.1.17:3891/"}},
             lookup={"bind_dn": "cn=vmail,dc=example,dc=net", "bind_password": "vmail-pw",
                     "object_class": "mailUser"})
    files = {f.path: f for f in mail.mail_files(s, s.node("mail1"))}
    assert re.search(r"^127\.0\.0\.1:2525 inet n - n - - smtpd$", files["/srv/pf/master.cf"].content, re.M)
    m = files["/srv/pf/ldap/virtual_mailbox_maps.cf"].content
    assert "server_host = ldap://127.0.1.17:3891/" in m and "bind_dn = cn=vmail,dc=example,dc=net" in m
    assert "(objectClass=mailUser)" in m and "bind_pw = vmail-pw" in m


def test_renderers_are_deterministic(example):
    n = example.node("mail1")
    assert [f.content for f in mail.mail_files(example, n)] == [f.content for f in mail.mail_files(example, n)]


def test_not_a_mail_node(example):
    with pytest.raises(MailhaError, match="no role mail"):
        mail.mail_files(example, example.node("db1"))


# ----------------------------------------------------------------------------------- share


def test_fstab_entry_is_the_guides_line_with_the_filers_private_address(example):
    e = mail.vmail_fstab_entry(example, example.node("mail1"))
    assert e.line() == "10.1.1.11:/srv/var/vmail /var/vmail nfs vers=3,noatime,nodiratime,noexec,_netdev,nofail 0 0"


def test_fstab_escapes_spaces():
    e = mail.FstabEntry("10.0.0.1:/srv/v mail", "/var/v mail", "nfs", ("vers=3",))
    assert e.line() == "10.0.0.1:/srv/v\\040mail /var/v\\040mail nfs vers=3 0 0"
    (_, parsed), = mail.parse_fstab(e.line())
    assert parsed == e


FSTAB = """# /etc/fstab: static file system information.
#
# <file system> <mount point>   <type>  <options>       <dump>  <pass>
UUID=0a1b2c3d-1111-2222-3333-444455556666 /               ext4    errors=remount-ro 0       1
UUID=0a1b2c3d-7777-8888-9999-000011112222 none            swap    sw              0       0
"""
GOOD = "10.1.1.11:/srv/var/vmail /var/vmail nfs vers=3,noatime,nodiratime,noexec,_netdev,nofail 0 0"


@pytest.mark.parametrize("text, action, result", [
    (FSTAB, "add", FSTAB + GOOD + "\n"),
    (FSTAB + GOOD + "\n", "present", FSTAB + GOOD + "\n"),
    (FSTAB + "filer1.local:/srv/var/vmail /var/vmail nfs vers=3 0 0\n", "replace", FSTAB + GOOD + "\n"),
    (FSTAB + "a:/x /var/vmail/ nfs vers=4 0 0\n" + GOOD + "\n", "replace", FSTAB + GOOD + "\n"),
    ("", "add", GOOD + "\n"),
], ids=["add", "present", "replace-guide-line", "dedupe-two-lines", "empty"])
def test_plan_fstab(example, text, action, result):
    entry = mail.vmail_fstab_entry(example, example.node("mail1"))
    new, got, _ = mail.plan_fstab(text, entry)
    assert (got, new) == (action, result)
    assert mail.plan_fstab(new, entry)[1] == "present"


def test_fstab_garbage_line():
    with pytest.raises(ParseError, match="fields"):
        mail.parse_fstab("/dev/sda1 /\n")


def test_parse_real_mount_table_with_escapes():
    mounts = mail.parse_mounts((DATA / "proc-mounts.txt").read_text())
    assert len(mounts) > 10
    m = mail.mount_at(mounts, "/tmp/capm/v mail")
    assert (m.spec, m.vfstype) == ("mailha-capture", "tmpfs") and "size=1024k" in m.options
    assert mail.mount_at(mounts, "/tmp/capm/vmail").vfstype == "ext4"  # a bind mount counts
    assert mail.mount_at(mounts, "/var/vmail") is None


def test_mount_at_takes_the_top_mount():
    text = "a /m ext4 rw 0 0\nb /m tmpfs rw 0 0\nc /other nfs rw 0 0\n"
    assert mail.mount_at(mail.parse_mounts(text), "/m/").spec == "b"


@pytest.mark.parametrize("text, allowed, words", [
    ("10.1.1.11:/srv/var/vmail /var/vmail nfs rw,vers=3 0 0\n", True, "is mounted (10.1.1.11:/srv/var/vmail, nfs)"),
    ("/dev/vda / ext4 rw 0 0\n", False, "is not mounted: refusing to start postfix, dovecot"),
    ("x /var/vmail/sub nfs rw 0 0\n", False, "is not mounted"),
], ids=["mounted", "unmounted", "only-a-subdir"])
def test_share_guard(text, allowed, words):
    d = mail.share_guard(mail.parse_mounts(text), "/var/vmail")
    assert d.allowed is allowed and words in d.reason


@pytest.mark.parametrize("fname, attrs", [("lsattr-immutable.txt", {"i", "e"}), ("lsattr-plain.txt", {"e"})])
def test_parse_real_lsattr(fname, attrs):
    assert mail.parse_lsattr((DATA / fname).read_text(), "/tmp/capm/vmail") == attrs


def test_lsattr_without_the_path():
    with pytest.raises(ParseError, match="no line for /var/vmail"):
        mail.parse_lsattr((DATA / "lsattr-plain.txt").read_text(), "/var/vmail")


# ----------------------------------------------------------------------------------- health


def test_health_page(example):
    assert mail.health_page(example) == ("/var/www/html/ldirectord.txt", "ldirectord\n")


def test_health_page_outside_web_root_refused():
    data = copy.deepcopy(EXAMPLE)
    data["ldirectord"]["health_page"] = "../../etc/passwd"
    with pytest.raises(ValidationError) as exc:  # by the model, before the page is written
        parse_site(data)
    assert [k for k, _ in exc.value.problems] == ["mailha:ldirectord:health_page"]


def test_mail_checks(example):
    got = mail.mail_checks(example, example.node("mail1"))
    assert got == (("http", "http", 80, 80), ("https", "https", 443, 443),
                   ("imaps", "imaps", 993, 993), ("pop3s", "pops", 995, 995),
                   ("submission", "smtp", 587, 587), ("smtps", "connect", 465, 465))


# ----------------------------------------------------------------------------------- filer


def test_exports_line_lists_each_mail_node(example):
    assert mail.vmail_exports_line(example, example.node("filer1")) == (
        "/srv/var/vmail 10.1.1.17(rw,sync,no_subtree_check) 10.1.1.18(rw,sync,no_subtree_check)")
    with pytest.raises(MailhaError, match="not mail:vmail:nfs_server"):
        mail.vmail_exports_line(example, example.node("mail1"))


@pytest.mark.parametrize("text, action", [
    ("", "add"),
    ("# comment\n/srv/other 10.0.0.0/8(ro)\n", "add"),
    ("/srv/var/vmail 10.1.1.17(rw,sync,no_subtree_check) 10.1.1.18(rw,sync,no_subtree_check)\n", "present"),
    ("/srv/var/vmail *(rw,no_root_squash)\n", "replace"),
], ids=["empty", "other-exports", "present", "too-open"])
def test_plan_exports(example, text, action):
    line = mail.vmail_exports_line(example, example.node("filer1"))
    new, got, _ = mail.plan_exports(text, line)
    assert got == action and line in new.splitlines()
    assert mail.plan_exports(new, line)[1] == "present"
    if "/srv/other" in text:
        assert "/srv/other 10.0.0.0/8(ro)" in new


def test_export_options_validated():
    data = copy.deepcopy(EXAMPLE)
    data["mail"]["vmail"]["export_options"] = ["rw", "anonuid=2000 bad"]
    with pytest.raises(ValidationError) as exc:
        parse_site(data)
    assert "mailha:mail:vmail:export_options:1" in {k for k, _ in exc.value.problems}


def test_iredmail_functions_need_the_iredmail_section():
    data = copy.deepcopy(EXAMPLE)
    del data["mail"]["iredmail"]
    s = parse_site(data)
    for fn in (mail.render_iredmail_config, mail.iredmail_environment):
        with pytest.raises(MailhaError, match="mailha:mail:iredmail is missing"):
            fn(s, s.node("mail1"))
    assert mail.mail_files(s, s.node("mail1"))  # the native path needs no iRedMail section


@pytest.mark.parametrize("password", ["two\nlines", " padded", "tab\r"], ids=["newline", "leading-blank", "cr"])
def test_lookup_password_that_config_lines_cannot_hold(password):
    # refused by the model, before any file renders
    with pytest.raises(ValidationError, match="mailha:mail:lookup:bind_password") as exc:
        site(lookup={"bind_dn": "cn=vmail,dc=example,dc=net", "bind_password": password})
    assert password not in str(exc.value)


def test_vmail_fstab_line_never_holds_the_boot(example):
    site = example
    entry = mail.vmail_fstab_entry(site, site.node("mail1"))
    assert entry.options[:4] == ("vers=3", "noatime", "nodiratime", "noexec")  # the pillar's, in order
    assert "nofail" in entry.options and "_netdev" in entry.options


def test_vmail_bind_share_for_a_directory_every_node_already_shares():
    data = copy.deepcopy(EXAMPLE)
    data["mail"]["vmail"]["fstype"] = "bind"
    site = parse_site(data)
    entry = mail.vmail_fstab_entry(site, site.node("mail1"))
    assert entry.line() == "/srv/var/vmail /var/vmail none bind,nofail 0 0"
    data["mail"]["vmail"]["fstype"] = "cifs"
    with pytest.raises(ValidationError, match="mailha:mail:vmail:fstype"):
        parse_site(data)


def test_only_the_nfs_server_exports_and_only_an_nfs_share(example):
    assert mail.serves_vmail(example, example.node("filer1"))
    assert not mail.serves_vmail(example, example.node("mail1"))
    data = copy.deepcopy(EXAMPLE)
    data["mail"]["vmail"]["fstype"] = "bind"
    site = parse_site(data)
    assert not mail.serves_vmail(site, site.node("filer1"))
