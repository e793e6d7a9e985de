"""The balancers trust the site CA (``mail:tls:ca``): Debian's ldirectord, run with the
environment of the ldirectord.service drop-in our renderer makes, checks the rendered nginx of two
real servers in network namespaces serving a snakeoil-style certificate (self-signed, CA:FALSE,
named "vm", reached by address), and the health beacon's probe round (``core.health.probe_all``,
from the same LAN) says the same:

* no ``ca`` (the drop-in sets nothing: the system store): ldirectord's https check is "down" with
  "certificate verify failed" (the colleague's test_mail_web case, here through the drop-in);
* ``ca`` = the certificate itself: https "up" on the node serving the health page, "down" on the
  other, and the beacon agrees on both;
* ``ca`` = another self-signed certificate: "down" on both, for ldirectord and the beacon.

ldirectord is started as systemd would start it: a clean environment (PATH) plus the drop-in's
``Environment=`` settings, never this test process's environment."""
import copy
import json
import os
import shlex
import shutil
import subprocess
import sys

import pytest

from salt_mailha.core import lb
from salt_mailha.core.model import load_site
from tests.integration.lb.conftest import lab_pillar
from tests.integration.lb.test_ldirectord_checks import judged
from tests.integration.mail.conftest import _traversable_dir
from tests.integration.mail.test_mail_web import NGINX, health_page_servers
from tests.support import netns, tls

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not shutil.which("ldirectord"), reason="ldirectord missing: run scripts/setup-host.sh"),
    pytest.mark.skipif(not os.path.exists(NGINX), reason="nginx missing: apt-get install nginx-light"),
    pytest.mark.skipif(subprocess.run(["perl", "-MLWP::Protocol::https", "-e1"], capture_output=True).returncode,
                       reason="ldirectord's https check needs liblwp-protocol-https-perl (ldirectord recommends it)"),
]

NET = "10.99.81"
SYSTEMD_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def dropin_environment(text):
    """The ``Environment=`` assignments of a systemd drop-in's [Service] section."""
    env, section = {}, None
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("[") and line.endswith("]"):
            section = line
        elif section == "[Service]" and line.startswith("Environment="):
            for assignment in shlex.split(line.split("=", 1)[1]):
                key, value = assignment.split("=", 1)
                env[key] = value
    return env


@pytest.fixture(scope="module")
def lan():
    ok, reason = netns.available()
    if not ok:
        pytest.skip(reason)
    base = _traversable_dir("mailha-ld-ca-")
    pillar = lab_pillar(NET, ldirectord={"checkinterval": 1, "checktimeout": 2, "failurecount": 1})
    pillar["mailha"]["services"] = {k: v for k, v in pillar["mailha"]["services"].items()
                                    if v["check"] in ("http", "https")}
    cert, key = tls.snakeoil(base / "tls")
    other, _ = tls.snakeoil(base / "tls", name="other-ca")
    pillar["mailha"]["mail"]["tls"] = {"cert": str(cert), "key": str(key)}
    site = load_site(pillar)
    net, procs = None, []
    try:
        net = netns.Lan("ca", bridge_address=f"{NET}.254/24")
        for n in ("lb1", "mail1", "mail2"):
            net.add_host(n, f"{site.node(n).address('public')}/24")
        procs += health_page_servers(net, pillar, base)
        yield net, pillar, base, cert, other
    finally:
        for p in reversed(procs):
            p.stop()
        if net is not None:
            net.close()
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.parametrize("ca,mail1_https", [(None, "down"), ("cert", "up"), ("other", "down")],
                         ids=["system-store", "site-ca", "wrong-ca"])
def test_ldirectord_and_beacon_agree_on_https(lan, ca, mail1_https):
    net, pillar, base, cert, other = lan
    pillar = copy.deepcopy(pillar)
    if ca is not None:
        pillar["mailha"]["mail"]["tls"]["ca"] = str({"cert": cert, "other": other}[ca])
    site = load_site(pillar)
    run = base / f"run-{ca}"
    (run / "maint").mkdir(parents=True)
    dropin = lb.render_ldirectord_ca_dropin(site, site.node("lb1"))
    env = dropin_environment(dropin)
    assert env == ({} if ca is None else {"PERL_LWP_SSL_CA_FILE": site.mail.tls.ca}), dropin
    cf = run / "ldirectord.cf"
    cf.write_text(lb.render_ldirectord_cf(site, site.node("lb1"), maintenancedir=str(run / "maint"),
                                          logfile=str(run / "ldirectord.log")))
    cf.chmod(0o600)

    reals = {n: site.node(n).address("public") for n in ("mail1", "mail2")}
    vip = site.vips["mail"].address
    want = {(f"{reals['mail1']}:80", f"{vip}:80"): "up", (f"{reals['mail2']}:80", f"{vip}:80"): "down",
            (f"{reals['mail1']}:443", f"{vip}:443"): mail1_https, (f"{reals['mail2']}:443", f"{vip}:443"): "down"}
    log = judged(net, cf, run / "ldirectord.out", {"PATH": SYSTEMD_PATH, **env}, want)
    if mail1_https == "down":
        assert f"Can't connect to {reals['mail1']}:443 (certificate verify failed)" in log

    # the beacon's probe round, from the same LAN, with the same site
    targets = [[f"{n} {s.name}", reals[n], s.port, s.check] for n in reals for s in site.services]
    got = beacon_round(net, pillar, targets)
    beacon = {k: "up" if ok else "down" for k, (ok, _) in got.items()}
    assert beacon["mail1 http"] == "up" and beacon["mail2 http"] == "down" and beacon["mail2 https"] == "down"
    if ca is None:
        # without a CA the beacon does not verify (CERT_NONE, as before): a public CA needs no ca,
        # a private one needs mail:tls:ca, and only then does the beacon follow ldirectord's check
        assert beacon["mail1 https"] == "up", got
    else:
        assert beacon["mail1 https"] == mail1_https, got
        if mail1_https == "down":
            assert "certificate verify failed" in got["mail1 https"][1]


BEACON_ROUND = """\
import json, sys
from salt_mailha.core import health
from salt_mailha.core.model import load_site
pillar, targets = json.load(sys.stdin)
got = health.probe_all(load_site(pillar), [health.Target(*t) for t in targets], timeout=5)
print(json.dumps({k: [r.ok, r.detail] for k, r in got.items()}))
"""


def beacon_round(net, pillar, targets):
    """``core.health.probe_all`` (what the beacon and mailha_health.probe run) inside the LAN's
    switch namespace, which holds the bridge address: ``{target: [ok, detail]}``. The pillar goes
    through stdin, never argv."""
    proc = subprocess.run(net.argv("sw", [sys.executable, "-c", BEACON_ROUND]), capture_output=True, text=True,
                          input=json.dumps([pillar, targets]), timeout=60)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)
