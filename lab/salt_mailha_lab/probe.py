"""Client-side probes for the drill, run inside the client namespace.

``python -m salt_mailha_lab.probe`` reads one JSON request on stdin (secrets travel there, never
in argv) and prints ``{"ok": bool, "detail": str}``. A probe passes when any listed host passes.
"""
import imaplib
import json
import smtplib
import socket
import ssl
import sys
import time
import uuid

TIMEOUT = 3.0  # connect and simple reads
GREETING_TIMEOUT = 30.0  # RFC 5321 4.5.3.2 lets a client wait 5 min for the greeting; a server
#                          whose client lookups hit a dead resolver is slow, not down
DELIVERY_TIMEOUT = 15.0  # submitted on one mail node -> visible over IMAP on another


def _lines(sock):
    return sock.makefile("rb")


def smtp(host, port, **_):
    with socket.create_connection((host, port), timeout=TIMEOUT) as s:
        s.settimeout(GREETING_TIMEOUT)
        f = _lines(s)
        t0 = time.monotonic()
        banner = f.readline().decode(errors="replace")
        waited = time.monotonic() - t0
        if not banner.startswith("220"):
            return False, f"banner {banner.strip()!r}"
        s.sendall(b"EHLO drill.lab\r\n")
        line = f.readline().decode(errors="replace")
        s.sendall(b"QUIT\r\n")
        return line.startswith("250"), f"EHLO -> {line.strip()[:50]} (greeting after {waited:.1f}s)"


def imap(host, port, **_):
    with socket.create_connection((host, port), timeout=TIMEOUT) as s:
        greeting = _lines(s).readline().decode(errors="replace")
        s.sendall(b"a1 LOGOUT\r\n")
        return greeting.startswith("* OK"), greeting.strip()[:60]


def _tls(sock, host):
    # the lab's mail nodes present Debian's snakeoil certificate: encryption, not identity
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    return ctx.wrap_socket(sock, server_hostname=host)


def tls_greeting(host, port, expect, **_):
    """A TLS service's first line starts with ``expect`` (IMAPS ``* OK``, POP3S ``+OK``, SMTPS
    ``220``): the TLS handshake and the daemon behind it both answered."""
    with socket.create_connection((host, port), timeout=TIMEOUT) as raw:
        raw.settimeout(GREETING_TIMEOUT if expect == "220" else TIMEOUT * 2)
        with _tls(raw, host) as s:
            line = _lines(s).readline().decode(errors="replace").strip()
    return line.startswith(expect), line[:60]


def http(host, port, tls=False, path="/", **_):
    """An HTTP(S) GET answered with any HTTP status line (a web server, not just a socket)."""
    with socket.create_connection((host, port), timeout=TIMEOUT) as raw:
        raw.settimeout(TIMEOUT * 2)
        s = _tls(raw, host) if tls else raw
        try:
            s.sendall(f"GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
            line = _lines(s).readline().decode(errors="replace").strip()
        finally:
            if tls:
                s.close()
    return line.startswith("HTTP/"), line[:60]


def tcp(host, port, **_):
    with socket.create_connection((host, port), timeout=TIMEOUT):
        return True, "connected"


def sql_write(host, port, user, password, database, **_):
    import pymysql

    conn = pymysql.connect(host=host, port=port, user=user, password=password,
                           database=database, connect_timeout=TIMEOUT, read_timeout=10,
                           write_timeout=10, autocommit=True)
    try:
        with conn.cursor() as cur:
            cur.execute("CREATE TABLE IF NOT EXISTS lab_drill (id VARCHAR(40) PRIMARY KEY, "
                        "at TIMESTAMP DEFAULT CURRENT_TIMESTAMP)")
            cur.execute("INSERT INTO lab_drill (id) VALUES (%s)", (uuid.uuid4().hex,))
        return True, "row written"
    finally:
        conn.close()


def _imaps(host, port):
    # the lab's mail nodes present Debian's snakeoil certificate: encryption, not identity
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    return imaplib.IMAP4_SSL(host, port, ssl_context=ctx, timeout=TIMEOUT * 3)


def mailflow(hosts, smtp_port, imaps_port, user, password, **_):
    """A message submitted over SMTP to the first host is read over IMAPS on the last (another
    mail node when two are up: the shared Maildir store is part of what is checked)."""
    sender, reader = hosts[0], hosts[-1]
    token = f"mailha-drill-{uuid.uuid4().hex}"
    with smtplib.SMTP(sender, smtp_port, timeout=GREETING_TIMEOUT) as s:
        s.sendmail("drill@client.invalid", [user], f"Subject: {token}\r\n\r\ndrill\r\n")
    deadline = time.monotonic() + DELIVERY_TIMEOUT
    imap = _imaps(reader, imaps_port)
    try:
        imap.login(user, password)
        while True:
            imap.select("INBOX")
            typ, data = imap.search(None, "HEADER", "Subject", token)
            found = data[0].split() if typ == "OK" and data and data[0] else []
            if found:
                for num in found:
                    imap.store(num, "+FLAGS", "\\Deleted")
                imap.expunge()
                return True, f"sent via {sender}, read on {reader}"
            if time.monotonic() >= deadline:
                return False, f"sent via {sender}, not in INBOX on {reader} after {DELIVERY_TIMEOUT:.0f}s"
            time.sleep(0.5)
    finally:
        try:
            imap.logout()
        except (OSError, imaplib.IMAP4.error):
            pass


def ldap_mailbox(host, port, binddn, password, dn, attrs, **_):
    """Create (or re-password) the drill's mailbox entry; the mail nodes look users up by it."""
    import ldap3

    server = ldap3.Server(host, port=port, connect_timeout=TIMEOUT)
    conn = ldap3.Connection(server, binddn, password, receive_timeout=10, raise_exceptions=False)
    if not conn.bind():
        return False, f"bind: {conn.result.get('description')}"
    try:
        if conn.add(dn, ["inetOrgPerson"], attrs):
            return True, "created"
        if conn.result.get("description") != "entryAlreadyExists":
            return False, f"add: {conn.result.get('description')} {conn.result.get('message', '')}"[:200]
        ok = conn.modify(dn, {"userPassword": [(ldap3.MODIFY_REPLACE, [attrs["userPassword"]])]})
        return ok, f"exists; password {'set' if ok else conn.result.get('description')}"
    finally:
        conn.unbind()


def ldap_write(host, port, binddn, password, suffix, **_):
    import ldap3

    server = ldap3.Server(host, port=port, connect_timeout=TIMEOUT)
    conn = ldap3.Connection(server, binddn, password, receive_timeout=10, raise_exceptions=False)
    if not conn.bind():
        return False, f"bind: {conn.result.get('description')}"
    dn = f"cn=drill-{uuid.uuid4().hex[:8]},{suffix}"
    try:
        ok = conn.add(dn, ["device"], {"description": "mailha-lab drill"})
        detail = conn.result.get("description")
        if ok:
            conn.delete(dn)
        return ok, f"add: {detail}"
    finally:
        conn.unbind()


def mx(server, port, zone, **_):
    import dns.message
    import dns.query
    import dns.rdatatype

    q = dns.message.make_query(zone, dns.rdatatype.MX)
    r = dns.query.udp(q, server, port=port, timeout=TIMEOUT)
    hosts = sorted(str(rr.exchange).rstrip(".") for rrset in r.answer for rr in rrset
                   if rrset.rdtype == dns.rdatatype.MX)
    return True, json.dumps(hosts)


PROBES = {"smtp": smtp, "imap": imap, "tcp": tcp, "tls_greeting": tls_greeting, "http": http,
          "sql_write": sql_write,
          "ldap_write": ldap_write, "ldap_mailbox": ldap_mailbox, "mx": mx}
WHOLE = {"mailflow": mailflow}  # probes that use every host at once


def probe(req):
    if req["kind"] in WHOLE:
        try:
            ok, detail = WHOLE[req["kind"]](**{k: v for k, v in req.items() if k != "kind"})
        except Exception as exc:  # noqa: BLE001 - a failed probe is a result, not a crash
            ok, detail = False, f"{type(exc).__name__}: {exc}"
        return {"ok": ok, "detail": detail[:300]}
    fn = PROBES[req["kind"]]
    hosts = req.get("hosts") or [None]
    details = []
    for host in hosts:
        try:
            ok, detail = fn(host=host, **{k: v for k, v in req.items() if k not in ("kind", "hosts")})
        except Exception as exc:  # noqa: BLE001 - a failed probe is a result, not a crash
            ok, detail = False, f"{type(exc).__name__}: {exc}"
        details.append(f"{host}: {detail}" if host else detail)
        if ok:
            return {"ok": True, "detail": details[-1]}
    return {"ok": False, "detail": "; ".join(details)[:300]}


if __name__ == "__main__":
    print(json.dumps(probe(json.load(sys.stdin))))
