"""Figures of the mail tier on this machine (printed, never asserted): bring-up of the test
cluster (two mirror-mode slapd; Postfix + Dovecot on mail1 and Dovecot on mail2, configured and
started by the mailha_mail states through salt-call), mailbox replication slapd 1 -> slapd 2
(polled every millisecond on an open connection), and submission on mail1 (STARTTLS + AUTH)
until the message is readable over IMAPS on mail2. Then the native path's web server: the states
through salt-call until nginx serves the health page, and one balancer-style check (new
connection, GET of the health page) over http and https.

Run as root from the repository: ``.venv/bin/python bench/mail.py [rounds] [web]`` (``web``: only
the web server figures).
"""
import imaplib
import pathlib
import shutil
import smtplib
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

from ldap3.core.exceptions import LDAPNoSuchObjectResult

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from tests.integration.mail.conftest import USER_PASSWORD, _traversable_dir, running_cluster  # noqa: E402
from tests.integration.mail.test_mail_web import WebNode, accepts, client_tls, get  # noqa: E402


def _tls():
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _ms(values):
    values = sorted(values)
    return (f"median {statistics.median(values) * 1000:.1f} ms, p90 {values[int(len(values) * 0.9) - 1] * 1000:.1f} "
            f"ms, max {values[-1] * 1000:.1f} ms (n={len(values)})")


def main(rounds=20):
    with tempfile.TemporaryDirectory(prefix="mailha-bench-") as tmp:
        t0 = time.perf_counter()
        with running_cluster(pathlib.Path(tmp)) as c:
            print(f"cluster up (2 slapd + postfix + 2 dovecot, seeded): {time.perf_counter() - t0:.2f} s")
            uid = "bench" + uuid.uuid4().hex[:6]
            user = f"{uid}@example.net"
            dn = f"uid={uid},ou=people,{c.pair.suffix}"
            with c.pair.connect("mail1") as w, c.pair.connect("mail2") as r:
                t = time.perf_counter()
                w.add(dn, ["inetOrgPerson"], {"cn": uid, "sn": uid, "uid": uid, "mail": user,
                                              "userPassword": USER_PASSWORD})
                while True:
                    try:
                        if r.search(dn, "(objectClass=*)", search_scope="BASE") and r.entries:
                            break
                    except LDAPNoSuchObjectResult:
                        pass
                    if time.perf_counter() - t > 20:
                        raise TimeoutError("mailbox not replicated within 20 s")
                    time.sleep(0.001)
                print(f"mailbox added on slapd 1 -> visible on slapd 2: {(time.perf_counter() - t) * 1000:.1f} ms")

            mail1, mail2 = c.site.mail.instance("mail1"), c.site.mail.instance("mail2")
            imap = imaplib.IMAP4_SSL("127.0.0.1", mail2.imaps_port, ssl_context=_tls(), timeout=10)
            imap.login(user, USER_PASSWORD)
            smtp = smtplib.SMTP("127.0.0.1", mail1.submission_port, timeout=15)
            smtp.starttls(context=_tls())
            smtp.login(user, USER_PASSWORD)
            submit, visible = [], []
            for i in range(rounds):
                subject = f"bench {i} {uuid.uuid4().hex}"
                t = time.perf_counter()
                smtp.sendmail(user, [user], f"Subject: {subject}\r\n\r\nbench\r\n")
                submit.append(time.perf_counter() - t)
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline:
                    imap.select("INBOX", readonly=True)
                    _, data = imap.search(None, "SUBJECT", f'"{subject}"')
                    if data[0].split():
                        break
                    time.sleep(0.005)
                else:
                    raise TimeoutError(f"message {i} not visible on mail2 within 30 s")
                visible.append(time.perf_counter() - t)
            smtp.quit()
            imap.logout()
            print(f"SMTP submission (DATA accepted) on mail1: {_ms(submit)}")
            print(f"submission on mail1 -> readable over IMAPS on mail2: {_ms(visible)}")
            t = time.perf_counter()
        print(f"teardown: {time.perf_counter() - t:.2f} s")


def web(rounds=20):
    node = WebNode(_traversable_dir("mailha-bench-web-"))
    try:
        node.prepare()
        t = time.perf_counter()
        ret = node.apply()
        while not (accepts(node.http_port) and accepts(node.https_port)):
            if time.perf_counter() - t > 30:
                raise TimeoutError("nginx not listening within 30 s")
            time.sleep(0.005)
        print(f"salt-call state.apply (site, page, default site, nginx start) -> listening: "
              f"{time.perf_counter() - t:.2f} s ({sum(bool(v['changes']) for v in ret.values())} states changed)")
        path = "/" + node.site.ldirectord.health_page
        ctx = client_tls()  # built once: loading the CA store costs more than the check
        for tls, port in ((False, node.http_port), (True, node.https_port)):
            times = []
            for _ in range(rounds):
                t = time.perf_counter()
                status, _, body = get(port, path, tls, ctx)
                times.append(time.perf_counter() - t)
                assert (status, body) == (200, node.content), (status, body)
            print(f"health page check over {'https' if tls else 'http'} (new connection + GET): {_ms(times)}")
        t = time.perf_counter()
        node.apply()
        print(f"salt-call state.apply with nothing to do: {time.perf_counter() - t:.2f} s")
    finally:
        node.stop()
        if getattr(node, "vmail", None) is not None:
            subprocess.run(["umount", str(node.vmail)], check=False, capture_output=True)
        shutil.rmtree(node.base, ignore_errors=True)


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 and sys.argv[1].isdigit() else 20
    if "web" not in sys.argv[1:]:
        main(n)
    web(n)
