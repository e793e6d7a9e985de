"""End to end with real daemons: a mailbox created in LDAP on one node receives mail through
Postfix on mail1 (lookups in slapd 1) and is read over IMAPS/POP3S from Dovecot on mail2
(lookups in slapd 2), both on the one Maildir tree that stands in for the NFS share."""
import email
import imaplib
import os
import pathlib
import poplib
import shutil
import smtplib
import socket
import ssl
import subprocess
import uuid

import ldap3
import pytest

from salt_mailha.core import health
from salt_mailha.core.mail import mail_checks
from salt_mailha.core.model import parse_site
from tests.integration.ldap.fixtures import NODES, example_pillar
from tests.integration.mail import conftest
from tests.integration.mail.conftest import LOOKUP_PASSWORD, USER_PASSWORD
from tests.support.daemon import wait_until
from tests.support.slapd import free_port

pytestmark = pytest.mark.integration


def _tls():
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # the test's self-signed certificate
    return ctx


def _add_mailbox(cluster, node, uid):
    dn = f"uid={uid},ou=people,{cluster.pair.suffix}"
    with cluster.pair.connect(node) as c:
        c.add(dn, ["inetOrgPerson"], {"cn": uid, "sn": uid, "uid": uid, "mail": f"{uid}@example.net",
                                      "userPassword": USER_PASSWORD})
    return dn


def _maildir_new(cluster, uid):
    d = os.path.join(cluster.site.mail.vmail.path, "example.net", uid, "Maildir", "new")
    try:
        return os.listdir(d)
    except FileNotFoundError:
        return []


def _imap_subjects(cluster, node, user):
    inst = cluster.site.mail.instance(node)
    m = imaplib.IMAP4_SSL("127.0.0.1", inst.imaps_port, ssl_context=_tls(), timeout=10)
    try:
        m.login(user, USER_PASSWORD)
        m.select("INBOX", readonly=True)
        _, data = m.search(None, "ALL")
        subjects = []
        for num in data[0].split():
            _, parts = m.fetch(num, "(RFC822)")
            subjects.append(email.message_from_bytes(parts[0][1])["Subject"])
        return subjects
    finally:
        m.logout()


def test_mailbox_created_on_ldap1_gets_mail_via_mail1_and_is_read_on_mail2(mail_cluster):
    c = mail_cluster
    uid = "alice" + uuid.uuid4().hex[:6]
    user = f"{uid}@example.net"
    dn = _add_mailbox(c, "mail1", uid)
    c.pair.wait_has("mail2", dn, timeout=20)  # mirror mode carried it to slapd 2
    mail1 = c.site.mail.instance("mail1")

    subject = f"submitted {uuid.uuid4().hex}"
    with smtplib.SMTP("127.0.0.1", mail1.submission_port, timeout=15) as s:
        s.starttls(context=_tls())
        s.login(user, USER_PASSWORD)  # SMTP AUTH: Postfix asks mail1's Dovecot, which binds to slapd 1
        s.sendmail(user, [user], f"Subject: {subject}\r\nFrom: {user}\r\nTo: {user}\r\n\r\nhello\r\n")
    plain = f"port 25 {uuid.uuid4().hex}"
    with smtplib.SMTP("127.0.0.1", mail1.smtp_port, timeout=15) as s:
        s.sendmail("someone@example.org", [user], f"Subject: {plain}\r\n\r\nfrom outside\r\n")

    wait_until(lambda: len(_maildir_new(c, uid)) >= 2, 30, what=f"two messages in {uid}'s Maildir")
    assert sorted(_imap_subjects(c, "mail2", user)) == sorted([subject, plain])
    # Dovecot on mail2 checked the password against slapd 2 (it binds as the user there)
    assert f'BIND dn="{dn}"'.lower() in c.pair.slapd["mail2"].log().lower()

    pop = poplib.POP3_SSL("127.0.0.1", c.site.mail.instance("mail2").pop3s_port, context=_tls(), timeout=10)
    try:
        pop.user(user)
        pop.pass_(USER_PASSWORD)
        assert pop.stat()[0] == 2
    finally:
        pop.quit()


def test_mailbox_created_on_ldap2_is_known_to_mail1(mail_cluster):
    """The other direction of mirror mode: an account added on slapd 2 is a recipient on mail1."""
    c = mail_cluster
    uid = "bob" + uuid.uuid4().hex[:6]
    dn = _add_mailbox(c, "mail2", uid)
    c.pair.wait_has("mail1", dn, timeout=20)
    with smtplib.SMTP("127.0.0.1", c.site.mail.instance("mail1").smtp_port, timeout=15) as s:
        s.sendmail("someone@example.org", [f"{uid}@example.net"], "Subject: to bob\r\n\r\nhi\r\n")
    wait_until(lambda: _maildir_new(c, uid), 30, what=f"a message in {uid}'s Maildir")
    # only mail1's Postfix looked the recipient up, and it asked slapd 1, bound as the lookup DN
    lookup = f"(mail={uid}@example.net)".lower()
    assert lookup in c.pair.slapd["mail1"].log().lower()
    assert lookup not in c.pair.slapd["mail2"].log().lower()


def _bad_auth(c):
    uid = "carol" + uuid.uuid4().hex[:6]
    _add_mailbox(c, "mail1", uid)
    with smtplib.SMTP("127.0.0.1", c.site.mail.instance("mail1").submission_port, timeout=15) as s:
        s.starttls(context=_tls())
        s.ehlo()
        s.user, s.password = f"{uid}@example.net", "wrong-password"
        with pytest.raises(smtplib.SMTPAuthenticationError) as exc:
            s.auth("PLAIN", s.auth_plain)  # one mechanism only: each failure costs Dovecot's 2 s delay
    assert exc.value.smtp_code == 535


def test_unknown_recipient_and_bad_password_are_refused(mail_cluster):
    c = mail_cluster
    inst = c.site.mail.instance("mail1")
    with smtplib.SMTP("127.0.0.1", inst.smtp_port, timeout=15) as s:
        s.ehlo()
        s.mail("someone@example.org")
        code, msg = s.rcpt("nobody-here@example.net")
    assert code == 550 and b"User unknown in virtual mailbox table" in msg
    _bad_auth(c)
    with smtplib.SMTP("127.0.0.1", inst.submission_port, timeout=15) as s:
        s.ehlo()
        assert not s.has_extn("auth"), "AUTH must only be offered after STARTTLS"


def test_balancer_checks_pass_on_each_node(mail_cluster):
    """The balancers' checks of each node's mail services (mail_checks: service, check type, port)
    pass with the health tier's own prober."""
    c = mail_cluster
    running = {"mail1": {"submission", "smtps", "imaps", "pop3s"}, "mail2": {"imaps", "pop3s"}}
    results = {}
    for node, services in running.items():
        for name, check, _vip_port, port in mail_checks(c.site, c.site.node(node)):
            if name in services:
                results[(node, name)] = health.probe("127.0.0.1", port, check, timeout=5)
    assert set(results) == {(n, s) for n, ss in running.items() for s in ss}
    assert all(r.ok for r in results.values()), {k: r.detail for k, r in results.items()}
    # http/https (the health page) are served by nginx: test_mail_web.py


def test_no_password_in_any_log(mail_cluster):
    c = mail_cluster
    _bad_auth(c)  # a failed AUTH is the likeliest place for a password to be logged
    secrets = [USER_PASSWORD, LOOKUP_PASSWORD, c.pair.rootpw, "wrong-password"]
    logs = "\n".join(n.logs() for n in c.nodes.values())
    logs += "\n".join(s.log() for s in c.pair.slapd.values())
    assert "Login: user=<" in logs and "postfix/virtual" in logs  # the logs are real and verbose
    for s in secrets:
        assert s not in logs


def test_lookups_bind_as_the_lookup_dn_and_anonymous_is_refused(mail_cluster):
    """Postfix and Dovecot bind as the read-only lookup DN (mail:lookup, cn=vmail) before they
    search; anonymous binds are refused (iRedMail's ACL), so the bind is needed."""
    c = mail_cluster
    lookup_dn = c.site.mail.lookup.bind_dn
    for node in ("mail1", "mail2"):
        log = c.pair.slapd[node].log().lower()
        searches = [line for line in log.splitlines() if "srch base=" in line and "(mail=" in line]
        assert searches, f"no mailbox lookup reached slapd on {node}"
        conn = searches[0].split(" op=")[0].split()[-1]  # "conn=1005"
        assert f'{conn} op=0 bind dn="{lookup_dn}"'.lower() in log
    slapd = c.pair.slapd["mail1"]
    with pytest.raises(ldap3.core.exceptions.LDAPBindError):
        ldap3.Connection(ldap3.Server(slapd.address, port=slapd.port), auto_bind=True)


def test_guard_keeps_real_dovecot_stopped_until_the_share_is_mounted(tmp_path):
    """``share not mounted -> services not started`` with the real daemon: the same states as the
    cluster's, on a node whose vmail path is a plain directory; then a tmpfs (standing for NFS) is
    mounted there and the next apply starts Dovecot."""
    missing = conftest._missing()
    if missing:
        pytest.skip(f"mail tier needs {', '.join(missing)}: run scripts/setup-host.sh as root")
    base = conftest._traversable_dir("mailha-guard-")
    ports = {n: {"smtp_port": free_port(), "submission_port": free_port(), "smtps_port": free_port(),
                 "imaps_port": free_port(), "pop3s_port": free_port()} for n in NODES}
    pillar = conftest.mail_pillar(example_pillar(free_port(), "slapd.conf"), base, ports)
    site = parse_site(pillar["mailha"])
    vmail = pathlib.Path(site.mail.vmail.path)
    vmail.mkdir(mode=0o755)
    subprocess.run(["chattr", "+i", str(vmail)], check=True)  # as vmail_share leaves an unmounted mountpoint
    (base / "tls").mkdir()
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=t",
                    "-keyout", str(base / "tls" / "key.pem"), "-out", str(base / "tls" / "cert.pem")],
                   check=True, capture_output=True, timeout=60)
    conftest.package_dirs(site, "mail2")
    node = conftest.MailNode(site, "mail2", pillar, base, ("dovecot",))
    imaps = site.mail.instance("mail2").imaps_port
    try:
        ret = node.apply(test=True)
        assert ret["vmail-guard"]["result"] is None and ret["mail-files"]["result"] is None
        ret = node.apply()
        assert ret["mail-files"]["result"] is True  # config may be written without the share
        assert ret["vmail-guard"]["result"] is False and "is not mounted" in ret["vmail-guard"]["comment"]
        assert ret["dovecot"]["result"] is False and not node.running("dovecot")
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", imaps), timeout=2).close()
        with pytest.raises(PermissionError):  # and nothing can write mail on the local disk
            (vmail / "example.net").mkdir()

        conftest.mount_tmpfs(vmail, site.mail.vmail.uid, site.mail.vmail.gid)  # mounts over the +i dir
        (vmail / "example.net").mkdir()
        (vmail / "example.net").rmdir()
        ret = node.apply()
        assert ret["vmail-guard"]["result"] is True and ret["dovecot"]["result"] is True, ret
        assert node.running("dovecot")
        wait_until(lambda: socket.create_connection(("127.0.0.1", imaps), timeout=2), 20, what="imaps port")
    finally:
        node.stop()
        conftest.umount(vmail)
        subprocess.run(["chattr", "-i", str(vmail)], check=False)
        shutil.rmtree(base, ignore_errors=True)
    assert "CHANGE-ME-ldap-root" not in node.logs()


def test_tls_services_present_the_sites_certificate(mail_cluster):
    """IMAPS and POP3S (mail2), SMTPS (mail1) and STARTTLS on submission all serve mail:tls:cert."""
    c = mail_cluster
    want = ssl.PEM_cert_to_DER_cert(pathlib.Path(c.site.mail.tls.cert).read_text())
    m1, m2 = c.site.mail.instance("mail1"), c.site.mail.instance("mail2")
    for port in (m2.imaps_port, m2.pop3s_port, m1.smtps_port):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            with _tls().wrap_socket(raw) as tls:
                assert tls.getpeercert(binary_form=True) == want, port
    with smtplib.SMTP("127.0.0.1", m1.submission_port, timeout=15) as s:
        s.starttls(context=_tls())
        assert s.sock.getpeercert(binary_form=True) == want
