"""Role dns against a real named: the BIND files rendered from the example pillar (key,
named.conf.local, zone seed) are loaded by ``named`` as they are, then ``salt-call --local
state.apply mailha`` as ns1 (a rehearsal: files under a scratch root, no service) seeds the zone
only once, writes the same files, and converges the records over RFC 2136 against that named."""
import grp
import pathlib
import textwrap

import pytest

from salt_mailha.core import dns as core
from salt_mailha.core import render
from salt_mailha.core.model import parse_site
from tests.integration.dns.conftest import Minion
from tests.support.daemon import Daemon, wait_until
from tests.support.example import example_pillar
from tests.support.named import NAMED, free_port

pytestmark = pytest.mark.integration


def start_named(base, site, node, port):
    """named with the rendered files, their /etc/bind and /var/lib/bind paths mapped under ``base``."""
    def mapped(text):
        return text.replace("/etc/bind/", f"{base}/etc/bind/").replace("/var/lib/bind/", f"{base}/var/lib/bind/")

    for a in render.artifacts_for(site, node):
        p = pathlib.Path(f"{base}{a.path}")
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(mapped(a.render(site, node)))
        p.chmod(int(a.mode, 8))
    zone = pathlib.Path(f"{base}{core.zone_file_path(site)}")
    zone.parent.mkdir(parents=True, exist_ok=True)
    zone.write_text(core.render_zone_seed(site))
    conf = base / "named.conf"
    # Stands in for Debian's named.conf + named.conf.options: only the listener differs.
    conf.write_text(textwrap.dedent(f"""\
        options {{
            directory "{base}";
            pid-file "{base}/named.pid";
            session-keyfile "{base}/session.key";
            listen-on port {port} {{ 127.0.0.1; }};
            listen-on-v6 {{ none; }};
            recursion no;
            notify no;
            dnssec-validation no;
        }};
        controls {{ }};
        include "{base}/etc/bind/named.conf.local";
        """))
    return Daemon("named", [NAMED, "-g", "-4", "-c", conf], base / "named.log").start()


def query(port, name, rdtype):
    import dns.message
    import dns.query

    r = dns.query.tcp(dns.message.make_query(name, rdtype), "127.0.0.1", port=port, timeout=3)
    return sorted(rr.to_text() for rrset in r.answer for rr in rrset)


def test_rendered_bind_serves_the_zone_and_the_formula_converges_it(tmp_path):
    port = free_port()
    pillar = example_pillar()
    pillar["mailha"]["dns"]["servers"] = [{"address": "127.0.0.1", "port": port}]
    secret = pillar["mailha"]["dns"]["tsig"]["secret"]
    site = parse_site(pillar["mailha"])
    named_dir = tmp_path / "named"
    named_dir.mkdir()
    named = start_named(named_dir, site, site.node("ns1"), port)
    try:
        wait_until(lambda: query_or_none(port), 20, what="named answering the seeded SOA")
        assert query(port, "example.net.", "NS") == ["ns1.example.net."]
        assert query(port, "ns1.example.net.", "A") == ["192.0.2.10"]

        minion = Minion(tmp_path / "minion", pillar)
        root = minion.base / "root"  # the Minion fixture's rehearsal root (minion config mailha_root)
        rc, ret = minion.call("state.apply", "mailha", "test=True")
        by_id = {v["__id__"]: v for v in ret.values()}
        assert {by_id[i]["result"] for i in ("mailha-file-bind-tsig", "mailha-file-bind-local",
                                            "mailha-dns-zone", "mailha-dns-records")} == {None}
        assert "mailha-service-named" not in by_id  # a rehearsal starts no service
        assert not (root / "etc/bind").exists() and not (root / "var/lib/bind").exists()
        assert query(port, "example.net.", "MX") == []

        rc, ret = minion.call("state.apply", "mailha")
        assert rc == 0 and all(v["result"] is True for v in ret.values()), ret
        assert query(port, "example.net.", "MX") == ["10 mail1.example.net.", "10 mail2.example.net."]
        assert query(port, "mail.example.net.", "A") == ["192.0.2.21"]
        for a in render.artifacts_for(site, site.node("ns1")):
            written = root / a.path.lstrip("/")
            assert written.read_text() == a.render(site, site.node("ns1"))
            assert f"{written.stat().st_mode & 0o777:04o}" == a.mode
            assert grp.getgrgid(written.stat().st_gid).gr_name == "bind"
        seeded = root / core.zone_file_path(site).lstrip("/")
        assert seeded.read_text() == core.render_zone_seed(site)

        seeded.write_text(seeded.read_text() + "; named's own rewrite\n")  # the seed is never redone
        for test in (True, False):
            args = ["state.apply", "mailha"] + (["test=True"] if test else [])
            rc, ret = minion.call(*args)
            assert rc == 0 and all(v["result"] is True and not v["changes"] for v in ret.values()), ret
        assert seeded.read_text().endswith("; named's own rewrite\n")
        assert secret not in minion.everything_written()
    finally:
        named.stop()
    assert secret not in pathlib.Path(named_dir / "named.log").read_text()


def query_or_none(port):
    try:
        return query(port, "example.net.", "SOA")
    except (OSError, EOFError):
        return None
    except Exception as exc:  # dnspython's timeout before named listens
        if type(exc).__name__ == "Timeout":
            return None
        raise


