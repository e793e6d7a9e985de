"""Client-side probes for the drill, run inside the client namespace.

``python -m salt_mailha.lab.probe`` reads one JSON request on stdin (secrets travel there, never
in argv) and prints ``{"ok": bool, "detail": str}``. A probe passes when any listed host passes.
"""
import json
import socket
import sys
import uuid

TIMEOUT = 3.0


def _lines(sock):
    return sock.makefile("rb")


def smtp(host, port, **_):
    with socket.create_connection((host, port), timeout=TIMEOUT) as s:
        f = _lines(s)
        banner = f.readline().decode(errors="replace")
        if not banner.startswith("220"):
            return False, f"banner {banner.strip()!r}"
        s.sendall(b"EHLO drill.lab\r\n")
        line = f.readline().decode(errors="replace")
        s.sendall(b"QUIT\r\n")
        return line.startswith("250"), f"EHLO -> {line.strip()[:60]}"


def imap(host, port, **_):
    with socket.create_connection((host, port), timeout=TIMEOUT) as s:
        greeting = _lines(s).readline().decode(errors="replace")
        s.sendall(b"a1 LOGOUT\r\n")
        return greeting.startswith("* OK"), greeting.strip()[:60]


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


PROBES = {"smtp": smtp, "imap": imap, "tcp": tcp, "sql_write": sql_write,
          "ldap_write": ldap_write, "mx": mx}


def probe(req):
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
