"""ldirectord's imaps and pops checks against real Dovecot: Debian 12's ldirectord, with the
ldirectord.cf and the check scripts our renderer makes, judges two real servers in network
namespaces, each a real Dovecot serving IMAPS and POP3S with a certificate from a site CA:

* mail1's certificate names ``imap.<domain>`` (what clients connect to), mail2's names only
  ``mail2.<domain>``; both are signed by the site CA and reached by address, as ldirectord does;
* ``mail:tls:ca`` = the site CA and ``mail:tls:name`` = ``imap.<domain>``: mail1 up, mail2 down
  (wrong name), on both services;
* ``ca`` without ``name``: the chain only, both up;
* no ``ca`` (the system store): both down ("certificate verify failed");
* Dovecot stopped on mail2: its imaps and pops are down whatever the certificate.

Debian's own checks (``service=imaps``) marked every real server down: Net::IMAP::Simple::SSL
lets IO::Socket::SSL verify the certificate's host name against the real server's address. Its
``service=pops`` (Mail::POP3Client) marked a real server up even with nothing listening.
"""
import copy
import os
import shutil
import subprocess

import pytest

from salt_mailha.core import lb
from salt_mailha.core.model import load_site
from tests.integration.lb.conftest import lab_pillar
from tests.integration.lb.test_ldirectord_ca import SYSTEMD_PATH, dropin_environment
from tests.integration.lb.test_ldirectord_checks import judged
from tests.integration.mail.conftest import _traversable_dir
from tests.support import netns
from tests.support.daemon import Daemon, wait_until

DOVECOT = shutil.which("dovecot") or "/usr/sbin/dovecot"
OPENSSL = shutil.which("openssl") or "/usr/bin/openssl"

pytestmark = pytest.mark.integration

NET = "10.99.83"
DOMAIN = "example.net"

DOVECOT_CONF = """\
base_dir = {d}/run
state_dir = {d}/state
protocols = imap pop3
listen = {address}
ssl = required
ssl_cert = <{d}/cert.pem
ssl_key = <{d}/key.pem
log_path = {d}/dovecot.log
passdb {{
  driver = static
  args = nopassword=y
}}
userdb {{
  driver = static
  args = uid=65534 gid=65534 home={d}/home/%u
}}
service imap-login {{
  inet_listener imap {{
    port = 0
  }}
  inet_listener imaps {{
    port = 993
  }}
}}
service pop3-login {{
  inet_listener pop3 {{
    port = 0
  }}
  inet_listener pop3s {{
    port = 995
  }}
}}
"""


def openssl(*args):
    subprocess.run([OPENSSL, *map(str, args)], check=True, capture_output=True, timeout=60)


def site_ca(d):
    """A site CA and a signer: ``sign(name, dir)`` writes ``dir/cert.pem`` + ``key.pem`` for DNS
    ``name``, signed by the CA."""
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=mailha test CA",
            "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign",
            "-keyout", d / "ca.key", "-out", d / "ca.pem")

    def sign(name, out):
        out.mkdir(parents=True, exist_ok=True)
        ext = out / "ext.cnf"
        ext.write_text(f"basicConstraints=CA:FALSE\nsubjectAltName=DNS:{name}\n")
        openssl("req", "-new", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
                "-keyout", out / "key.pem", "-out", out / "req.csr")
        openssl("x509", "-req", "-in", out / "req.csr", "-CA", d / "ca.pem", "-CAkey", d / "ca.key",
                "-CAcreateserial", "-days", "2", "-extfile", ext, "-out", out / "cert.pem")
        os.chmod(out / "key.pem", 0o600)

    return d / "ca.pem", sign


@pytest.fixture(scope="module")
def lan():
    # a failure, not a skip: scripts/setup-host.sh installs all of it, and CI skips nothing
    ok, reason = netns.available()
    missing = [p for p in ("ldirectord",) if not shutil.which(p)] + ([DOVECOT] if not os.path.exists(DOVECOT) else [])
    if not ok or missing:
        pytest.fail(reason if not ok else f"missing {', '.join(missing)}: run scripts/setup-host.sh")
    base = _traversable_dir("mailha-ld-tls-")
    pillar = lab_pillar(NET, ldirectord={"checkinterval": 1, "checktimeout": 3, "failurecount": 1})
    pillar["mailha"]["services"] = {k: v for k, v in pillar["mailha"]["services"].items()
                                    if v["check"] in ("imaps", "pops")}
    assert sorted(s["check"] for s in pillar["mailha"]["services"].values()) == ["imaps", "pops"]
    ca, sign = site_ca(base)
    site = load_site(pillar)
    net, dovecots = None, {}
    try:
        net = netns.Lan("tls", bridge_address=f"{NET}.254/24")
        for n in ("lb1", "mail1", "mail2"):
            net.add_host(n, f"{site.node(n).address('public')}/24")
        for n, name in (("mail1", f"imap.{DOMAIN}"), ("mail2", f"mail2.{DOMAIN}")):
            d = base / n
            sign(name, d)
            (d / "dovecot.conf").write_text(DOVECOT_CONF.format(d=d, address=site.node(n).address("public")))
            dovecots[n] = Daemon(f"dovecot-{n}", net.argv(n, [DOVECOT, "-c", str(d / "dovecot.conf"), "-F"]),
                                 d / "dovecot.out").start()
        for n in dovecots:
            address = site.node(n).address("public")
            wait_until(lambda a=address, n=n: all(
                net.run(n, ["bash", "-c", f"exec 3<>/dev/tcp/{a}/{p}"], check=False).returncode == 0
                for p in (993, 995)), 30, what=f"dovecot on {n} listening")
        yield net, pillar, base, ca, dovecots
    finally:
        for p in dovecots.values():
            p.stop()
        if net is not None:
            net.close()
        shutil.rmtree(base, ignore_errors=True)


def run_ldirectord(net, base, pillar, tag, want):
    """Render ldirectord.cf, the check scripts and the CA drop-in for ``pillar``; run real
    ldirectord (systemd's environment plus the drop-in's) until its verdicts are ``want``."""
    site = load_site(pillar)
    run = base / f"run-{tag}"
    (run / "maint").mkdir(parents=True)
    node = site.node("lb1")
    paths = {}
    for check in ("imaps", "pops"):
        path = run / f"check-{check}"
        path.write_text(lb.render_ldirectord_tls_check(site, node, check, path=str(path)))
        path.chmod(0o755)
        paths[check] = str(path)
    cf = run / "ldirectord.cf"
    cf.write_text(lb.render_ldirectord_cf(site, node, maintenancedir=str(run / "maint"),
                                          logfile=str(run / "ldirectord.log"), check_paths=paths))
    cf.chmod(0o600)
    env = dropin_environment(lb.render_ldirectord_ca_dropin(site, node))
    return judged(net, cf, run / "ldirectord.out", {"PATH": SYSTEMD_PATH, **env}, want)


def expect(site, mail1, mail2):
    vip = site.vips["mail"].address
    out = {}
    for node, verdict in (("mail1", mail1), ("mail2", mail2)):
        for port in (993, 995):
            out[(f"{site.node(node).address('public')}:{port}", f"{vip}:{port}")] = verdict
    return out


@pytest.mark.parametrize("ca,name,mail1,mail2", [
    (True, True, "up", "down"),
    (True, False, "up", "up"),
    (False, True, "down", "down"),
], ids=["site-ca-and-name", "site-ca-chain-only", "system-store"])
def test_imaps_and_pops_checks_verify_like_a_client(lan, ca, name, mail1, mail2):
    net, pillar, base, ca_file, _ = lan
    pillar = copy.deepcopy(pillar)
    tls = pillar["mailha"]["mail"].setdefault("tls", {})
    if ca:
        tls["ca"] = str(ca_file)
    if name:
        tls["name"] = f"imap.{DOMAIN}"
    site = load_site(pillar)
    run_ldirectord(net, base, pillar, f"{ca}-{name}", expect(site, mail1, mail2))


def test_stopped_dovecot_is_down(lan):
    net, pillar, base, ca_file, dovecots = lan
    pillar = copy.deepcopy(pillar)
    pillar["mailha"]["mail"]["tls"] = {"ca": str(ca_file)}
    site = load_site(pillar)
    dovecots["mail2"].stop()
    try:
        run_ldirectord(net, base, pillar, "stopped", expect(site, "up", "down"))
    finally:
        dovecots["mail2"].start()


def test_mute_server_is_down_and_ldirectord_lives_on(lan):
    """mail2 accepts TCP on 993/995 and never speaks (a stalled host): the checks run inside
    ldirectord (external-perl), so their timeout must end the check, not ldirectord. mail2 goes
    down; mail1 keeps being judged up round after round (ldirectord is still alive and checking)."""
    net, pillar, base, ca_file, dovecots = lan
    pillar = copy.deepcopy(pillar)
    pillar["mailha"]["mail"]["tls"] = {"ca": str(ca_file)}
    site = load_site(pillar)
    address = site.node("mail2").address("public")
    dovecots["mail2"].stop()
    mute = Daemon("mute-tls", net.argv("mail2", [
        "perl", "-MIO::Socket::INET", "-e",
        "for $p (993, 995) { push @s, IO::Socket::INET->new(Listen => 16, LocalAddr => $ARGV[0], "
        "LocalPort => $p, ReuseAddr => 1) or die $! } while (1) { for (@s) { $_->blocking(0); "
        "push @c, $_->accept } sleep 1 }", address]), base / "mute-tls.log").start()
    try:
        log = run_ldirectord(net, base, pillar, "mute", expect(site, "up", "down"))
    finally:
        mute.stop()
        dovecots["mail2"].start()
    mail1 = site.node("mail1").address("public")
    vip = site.vips["mail"].address
    lines = [line for line in log.splitlines() if line.startswith("DEBUG2: ")]
    for port in (993, 995):
        # one check process per service for the whole run: none died of the stalled check
        assert sum(f"Spawned child tcp:{vip}:{port} " in line for line in lines) == 1, log[-3000:]
        down = next(i for i, line in enumerate(lines)
                    if "Disabled real server=" in line and f":tcp:{address}:{port}:" in line)
        # and that process went on judging mail1 after mail2's check timed out
        assert any("Enabled" in line and f":tcp:{mail1}:{port}:" in line for line in lines[down:]), log[-3000:]
