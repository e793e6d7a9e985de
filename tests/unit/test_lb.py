"""Load-balancer tier renderers and the direct-routing plan. keepalived's own config test
(``keepalived -t``) and the notify hook (run by /bin/sh) are exercised for real."""
import copy
import shutil
import subprocess
from pathlib import Path

import pytest

from salt_mailha import data as mailha_data
from salt_mailha.core import lb
from salt_mailha.core.errors import MailhaError, ValidationError
from salt_mailha.core.model import load_site

ROOT = Path(__file__).resolve().parents[2]
DATA = Path(__file__).parent / "data" / "lb"


@pytest.fixture(scope="module")
def pillar():
    return mailha_data.example_pillar()


def site_with(pillar, **keepalived):
    p = copy.deepcopy(pillar)
    p["mailha"]["keepalived"].update(keepalived)
    return load_site(p)


@pytest.fixture(scope="module")
def site(pillar):
    return load_site(pillar)


needs_keepalived = pytest.mark.skipif(not shutil.which("keepalived"),
                                      reason="keepalived missing: run scripts/setup-host.sh")


def keepalived_test(tmp_path, text, notify_script):
    conf = tmp_path / "keepalived.conf"
    conf.write_text(text)
    return subprocess.run(["keepalived", "-t", "-f", str(conf)], capture_output=True, text=True)


@pytest.mark.parametrize("node,prio", [("lb1", 150), ("lb2", 100)])
def test_keepalived_priorities_follow_lb_order(site, node, prio):
    text = lb.render_keepalived_conf(site, site.node(node))
    assert text.count(f"priority {prio}\n") == 2
    assert "virtual_router_id 51" in text and "virtual_router_id 52" in text
    assert "192.0.2.21/24 dev eth0" in text and "192.0.2.22/24 dev eth0" in text
    assert text == lb.render_keepalived_conf(site, site.node(node))  # deterministic


@needs_keepalived
@pytest.mark.parametrize(
    "opts", [{}, {"vrrp_version": 2, "advert_int": 2, "auth_pass": "CHANGEME"}, {"unicast": True, "preempt": False,
                                                         "advert_int": 0.1}],
    ids=["example-v3", "v2-auth", "unicast-nopreempt"])
def test_keepalived_config_test_passes(pillar, tmp_path, opts):
    site = site_with(pillar, **opts)
    notify = tmp_path / "notify.sh"
    notify.write_text(lb.render_keepalived_notify(site, site.node("lb1")))
    notify.chmod(0o755)
    ready = tmp_path / "ipvs-ready"
    ready.write_text(lb.render_keepalived_ipvs_ready(site, site.node("lb1")))
    ready.chmod(0o755)
    for node in ("lb1", "lb2"):
        text = lb.render_keepalived_conf(site, site.node(node), notify_script=str(notify),
                                         ready_script=str(ready))
        res = keepalived_test(tmp_path, text, notify)
        assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.parametrize("lbs,step", [(2, 50), (3, 20), (4, 80)])
def test_an_unready_balancer_ranks_below_every_ready_one(pillar, lbs, step):
    """keepalived's mailha_ipvs_ready weight: the first balancer, unready, falls below the last
    one, ready; the order among unready balancers stays the pillar's."""
    p = copy.deepcopy(pillar)
    first = p["mailha"]["nodes"]["lb1"]
    for i in range(3, lbs + 1):
        extra = copy.deepcopy(first)
        extra["addresses"] = {net: addr.rsplit(".", 1)[0] + f".{200 + i}"
                              for net, addr in first["addresses"].items()}
        p["mailha"]["nodes"][f"lb{i}"] = extra
    p["mailha"]["keepalived"].update(priority_step=step, priority_top=254)
    site = load_site(p)
    prios = [lb.priority(site, n) for n in site.nodes_with("lb")]
    w = lb.ready_weight(site)
    assert max(p - w for p in prios) < min(prios)
    text = lb.render_keepalived_conf(site, site.node("lb1"))
    assert f"    weight -{w}\n" in text and text.count("        mailha_ipvs_ready\n") == 2
    assert "sync_group_tracking_weight" in text  # else a failing script puts the group in FAULT


@needs_keepalived
def test_keepalived_config_test_catches_a_bad_file(site, tmp_path):
    text = lb.render_keepalived_conf(site, site.node("lb1")).replace(
        "virtual_router_id 51", "virtual_router_id 351")
    assert keepalived_test(tmp_path, text, None).returncode != 0


def test_auth_only_with_vrrp2(pillar):
    v3 = site_with(pillar, auth_pass="CHANGEME")  # held but unused: VRRPv3 has no auth
    assert "CHANGEME" not in lb.render_keepalived_conf(v3, v3.node("lb1"))
    assert "VRRPv3 (RFC 5798) has no authentication" in lb.render_keepalived_conf(v3, v3.node("lb1"))
    v2 = site_with(pillar, vrrp_version=2, auth_pass="CHANGEME")
    text = lb.render_keepalived_conf(v2, v2.node("lb1"))
    assert text.count('auth_pass "CHANGEME"\n') == 2 and "auth_type PASS" in text


def test_auth_pass_longer_than_8_is_refused_by_the_model(pillar):
    with pytest.raises(ValidationError, match="auth_pass"):
        site_with(pillar, auth_pass="123456789")


def test_unicast_peers_are_the_other_lbs(pillar):
    site = site_with(pillar, unicast=True)
    text = lb.render_keepalived_conf(site, site.node("lb2"))
    assert text.count("unicast_src_ip 192.0.2.14\n") == 2
    assert text.count("unicast_peer {\n        192.0.2.13\n    }") == 2
    assert "192.0.2.14" not in text.split("unicast_peer")[1].split("}")[0]


def test_nopreempt(pillar):
    assert "nopreempt" not in lb.render_keepalived_conf(site_with(pillar), site_with(pillar).node("lb1"))
    site = site_with(pillar, preempt=False)
    assert lb.render_keepalived_conf(site, site.node("lb1")).count("    nopreempt\n") == 2


def test_keepalived_refuses_non_lb_and_bad_paths(site):
    with pytest.raises(ValidationError, match="not a load balancer"):
        lb.render_keepalived_conf(site, site.node("db1"))
    with pytest.raises(ValidationError, match="notify_script"):
        lb.render_keepalived_conf(site, site.node("lb1"), notify_script="x; rm -rf /")
    with pytest.raises(ValidationError, match="salt_call"):
        lb.render_keepalived_notify(site, site.node("lb1"), salt_call="salt-call event.send")


@pytest.fixture
def notify(site, tmp_path):
    """The rendered hook, run by /bin/sh, with a recorder standing in for salt-call."""
    record = tmp_path / "argv"
    fake = tmp_path / "salt-call"
    fake.write_text(f'#!/bin/sh\nfor a in "$@"; do printf "%s\\n" "$a"; done > {record}\n')
    fake.chmod(0o755)
    hook = tmp_path / "notify.sh"
    hook.write_text(lb.render_keepalived_notify(site, site.node("lb1"), salt_call=str(fake)))
    hook.chmod(0o755)

    def run(*args):
        record.unlink(missing_ok=True)
        rc = subprocess.run([str(hook), *args], capture_output=True).returncode
        return rc, record.read_text().splitlines() if record.exists() else None
    return run


@pytest.mark.parametrize(
    "args,tag,prio",
    [(("INSTANCE", "MAILHA_MAIL", "MASTER", "150"), "mailha/keepalived/mail/master", "150"),
     (("INSTANCE", "MAILHA_DB", "BACKUP", "100"), "mailha/keepalived/db/backup", "100"),
     (("INSTANCE", "MAILHA_DB", "FAULT"), "mailha/keepalived/db/fault", "0"),
     (("INSTANCE", "MAILHA_MAIL", "STOP", "1; reboot"), "mailha/keepalived/mail/stop", "0")],
    ids=["master", "backup", "fault-no-prio", "junk-prio"])
def test_notify_fires_event(notify, args, tag, prio):
    rc, argv = notify(*args)
    assert rc == 0
    assert argv == ["--retcode-passthrough", "event.send", tag, "node=lb1", f"priority={prio}"]


@pytest.mark.parametrize(
    "args,rc",
    [(("INSTANCE", "MAILHA_X", "MASTER"), 2), (("INSTANCE", "MAILHA_MAIL", "$(reboot)"), 2),
     (("INSTANCE", "MAILHA_MAIL;x", "MASTER"), 2), (("GROUP", "MAILHA", "MASTER"), 0)],
    ids=["unknown-instance", "bad-state", "injection", "group-ignored"])
def test_notify_refuses_unknown_arguments(notify, args, rc):
    assert notify(*args) == (rc, None)


def test_ldirectord_every_service_with_gate_reals(site):
    text = lb.render_ldirectord_cf(site, site.node("lb1"))
    blocks = {b.split("\n", 1)[0]: b for b in text.split("virtual=")[1:]}
    assert set(blocks) == {"192.0.2.22:3306", "192.0.2.21:80", "192.0.2.21:443", "192.0.2.21:993",
                           "192.0.2.21:995", "192.0.2.21:587", "192.0.2.21:465"}
    assert "real=192.0.2.15:3306 gate 1" in blocks["192.0.2.22:3306"]
    assert "real=192.0.2.17" not in blocks["192.0.2.22:3306"]  # db VIP -> db nodes only
    assert "real=192.0.2.18:993 gate 1" in blocks["192.0.2.21:993"]
    mysql = blocks["192.0.2.22:3306"]
    ld = site.ldirectord
    t = ld.checktimeout
    for line in ('service=mysql', 'login="monitor"', 'passwd="CHANGE-ME-db-monitor"',
                 # the DSN timeouts: checktimeout bounds DBI's connect and reads
                 f'database="monitoring;mysql_connect_timeout={t};mysql_read_timeout={t};'
                 f'mysql_write_timeout={t}"', 'scheduler=wrr', 'checktype=negotiate'):
        assert f"\t{line}\n" in mysql
    assert '\trequest="ldirectord.txt"\n\treceive="ldirectord"\n' in blocks["192.0.2.21:443"]
    # imaps and pops: our TLS checks, never ldirectord's (see test_ldirectord_tls_checks)
    for port, check in (("993", "imaps"), ("995", "pops")):
        assert f"\tchecktype=external-perl\n\tcheckcommand=\"/etc/ha.d/mailha-check-{check}\"\n" in blocks[f"192.0.2.21:{port}"]
        assert "service=" not in blocks[f"192.0.2.21:{port}"]
    assert "\tchecktype=connect\n" in blocks["192.0.2.21:465"]
    # sh with quiescent servers falls back to another server when the hashed one has weight 0
    for port in ("80", "443"):
        assert "\tscheduler=sh\n\tschedflags=sh-fallback\n" in blocks[f"192.0.2.21:{port}"]
    assert "schedflags" not in blocks["192.0.2.21:993"] and "schedflags" not in blocks["192.0.2.22:3306"]
    for line in (f"checktimeout={t}", f"checkinterval={ld.checkinterval}", f"failurecount={ld.failurecount}",
                 "quiescent=yes", "fork=yes", "readdquiescent=yes", "maintenancedir=/etc/ldirectord.maintenance"):
        assert f"\n{line}\n" in text


def test_check_round_is_the_worst_case_of_one_pass(pillar):
    """fork: each service's process checks its real servers in turn; without: one process, all."""
    p = copy.deepcopy(pillar)
    p["mailha"]["ldirectord"].update(checkinterval=2, checktimeout=3, fork=True)
    s = load_site(p)
    per_service = [len(s.real_servers(s.vips[v.vip].name)) for v in s.services]
    assert per_service == [2] * 7  # the example: two db and two mail real servers
    assert lb.check_round(s) == 2 + 3 * 2
    p["mailha"]["ldirectord"]["fork"] = False
    assert lb.check_round(load_site(p)) == 2 + 3 * 14


@pytest.mark.parametrize("value,line", [(True, "fork=yes"), (False, "fork=no")])
def test_ldirectord_fork_from_the_pillar(pillar, value, line):
    p = copy.deepcopy(pillar)
    p["mailha"]["ldirectord"]["fork"] = value
    s = load_site(p)
    assert f"\n{line}\n" in lb.render_ldirectord_cf(s, s.node("lb1"))


def test_ldirectord_fork_must_be_a_boolean(pillar):
    p = copy.deepcopy(pillar)
    p["mailha"]["ldirectord"]["fork"] = "sometimes"
    with pytest.raises(ValidationError) as err:
        load_site(p)
    assert "mailha:ldirectord:fork" in str(err.value)


def test_ldirectord_refuses_unquotable_password(pillar):
    """ldirectord cuts a line at '#': the model refuses it before anything renders; a double
    quote is carried (ldirectord reads up to the last one on the line)."""
    p = copy.deepcopy(pillar)
    p["mailha"]["galera"]["monitor"]["password"] = "ab#cd"
    with pytest.raises(ValidationError) as err:
        load_site(p)
    assert [k for k, _ in err.value.problems] == ["mailha:galera:monitor:password"]
    assert "ab#cd" not in str(err.value) and "ldirectord" in str(err.value)
    p["mailha"]["galera"]["monitor"]["password"] = 'ab"cd'
    site = load_site(p)
    assert '\tpasswd="ab"cd"\n' in lb.render_ldirectord_cf(site, site.node("lb1"))


def test_desired_table(site):
    table = {vs.key: vs for vs in lb.desired_table(site)}
    assert [r.key for r in table["tcp:192.0.2.22:3306"].real_servers] == ["192.0.2.15:3306",
                                                                        "192.0.2.16:3306"]
    assert table["tcp:192.0.2.21:80"].scheduler == "sh"
    assert table["tcp:192.0.2.21:80"].schedflags == ("sh-fallback",)  # what ldirectord.cf asks for
    assert table["tcp:192.0.2.22:3306"].schedflags == ()


@pytest.mark.parametrize("node,vips", [("db1", ["192.0.2.22"]), ("mail2", ["192.0.2.21"]),
                                       ("lb1", []), ("filer1", [])])
def test_dr_files(site, node, vips):
    n = site.node(node)
    assert [v.address for _, v in lb.dr_wanted(site, n)] == vips
    text = lb.render_dr_loopback(site, n)
    for vip in vips:
        assert f"auto lo:0\niface lo:0 inet static\n    address {vip}\n    netmask 255.255.255.255\n" in text
    assert "192.0.2.2" not in text if not vips else True
    sysctl = lb.render_dr_sysctl(site, n)
    assert "net.ipv4.conf.all.arp_ignore = 1\n" in sysctl
    assert "net.ipv4.conf.all.arp_announce = 2\n" in sysctl


def read(name):
    return (DATA / name).read_text()


def test_parse_ip_addr_json_real_output():
    # ip-j-addr-lo-vips.json: `ip -j addr show dev lo` in a scratch netns holding the example's
    # VIPs (re-captured when the example moved to 192.0.2.0/24; only the addresses changed).
    assert lb.parse_ip_addr_json(read("ip-j-addr-lo-vips.json")) == [
        {"address": "127.0.0.1", "prefixlen": 8, "label": "lo"},
        {"address": "192.0.2.21", "prefixlen": 32, "label": "lo:0"},
        {"address": "192.0.2.22", "prefixlen": 24, "label": "lo:1"},
    ]
    assert lb.parse_ip_addr_json(read("ip-j-addr-lo-down.json")) == []
    assert lb.link_is_up(read("ip-j-addr-lo-plain.json"))
    assert not lb.link_is_up(read("ip-j-addr-lo-down.json"))


GOOD = {k: v for k, v in lb.DR_SYSCTLS}


@pytest.mark.parametrize(
    "node,fixture,sysctls,lo_up,expect",
    [
        ("db1", "ip-j-addr-lo-plain.json", GOOD, True,
         [("add", "192.0.2.22", "lo:0")]),
        ("db1", "ip-j-addr-lo-down.json", GOOD, False,
         [("up", None, None), ("add", "192.0.2.22", "lo:0")]),
        # mail VIP on a db node goes; the db VIP with a /24 is replaced by a /32
        ("db1", "ip-j-addr-lo-vips.json", GOOD, True,
         [("del", "192.0.2.21", None), ("del", "192.0.2.22", None), ("add", "192.0.2.22", "lo:0")]),
        ("mail1", "ip-j-addr-lo-vips.json", GOOD, True, [("del", "192.0.2.22", None)]),
        ("mail1", "ip-j-addr-lo-vips.json", {**GOOD, "net.ipv4.conf.all.arp_ignore": "0"}, True,
         [("del", "192.0.2.22", None), ("sysctl", "net.ipv4.conf.all.arp_ignore", "1")]),
        ("lb1", "ip-j-addr-lo-down.json", GOOD, False, []),
    ],
    ids=["add", "lo-down", "wrong-tier-and-prefix", "remove-other-vip", "sysctl", "lb-nothing"],
)
def test_dr_plan(site, node, fixture, sysctls, lo_up, expect):
    plan = lb.dr_plan(site, site.node(node), lb.parse_ip_addr_json(read(fixture)), sysctls, lo_up)
    got = [(s["action"], s.get("address") or s.get("key"), s.get("label") or s.get("new"))
           for s in plan]
    assert got == expect


def test_ip_argv_validates(site):
    assert lb.ip_argv({"action": "add", "address": "192.0.2.21", "prefixlen": 32,
                       "label": "lo:0"}) == ["ip", "addr", "add", "192.0.2.21/32", "dev", "lo",
                                             "label", "lo:0"]
    with pytest.raises(ValidationError):
        lb.ip_argv({"action": "add", "address": "192.0.2.21", "prefixlen": 32, "label": "eth0"})
    with pytest.raises(ValueError):
        lb.ip_argv({"action": "del", "address": "192.0.2.21 dev eth0", "prefixlen": 32})
    assert lb.sysctl_proc_path("net.ipv4.conf.all.arp_ignore") == \
        "/proc/sys/net/ipv4/conf/all/arp_ignore"
    with pytest.raises(ValidationError):
        lb.sysctl_proc_path("../../etc/passwd")


# --------------------------------------------------------------------------------------------
# the site CA of ldirectord's https checks (mail:tls:ca)


def site_with_ca(pillar, ca):
    p = copy.deepcopy(pillar)
    if ca is not None:
        p["mailha"]["mail"]["tls"] = {"ca": ca}
    return load_site(p)


@pytest.mark.parametrize("ca", [None, "/etc/ssl/certs/ssl-cert-snakeoil.pem"], ids=["system-store", "site-ca"])
def test_ldirectord_ca_dropin(pillar, ca):
    s = site_with_ca(pillar, ca)
    text = lb.render_ldirectord_ca_dropin(s, s.node("lb2"))
    assert text.startswith("# Managed by salt-mailha (site example, node lb2)")
    settings = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert settings == ["[Service]"] + ([f"Environment=PERL_LWP_SSL_CA_FILE={ca}"] if ca else [])
    assert text == lb.render_ldirectord_ca_dropin(s, s.node("lb2"))
    with pytest.raises(ValidationError, match="not a load balancer"):
        lb.render_ldirectord_ca_dropin(s, s.node("mail1"))


def test_ldirectord_ca_dropin_is_registered_for_balancers_only(pillar):
    from salt_mailha.core import render

    s = site_with_ca(pillar, None)
    for n in s.nodes:
        ids = {a.id for a in render.artifacts_for(s, n)}
        assert ("ldirectord-ca" in ids) is n.has("lb"), n.id
    art = render.artifact("ldirectord-ca")
    assert (art.path, art.mode, art.sls, art.secret) == (lb.LDIRECTORD_CA_DROPIN, "0644", "lb", False)


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze missing: apt-get install systemd")
@pytest.mark.skipif(not Path("/lib/systemd/system/ldirectord.service").exists(),
                    reason="ldirectord missing: run scripts/setup-host.sh")
@pytest.mark.parametrize("ca", [None, "/usr/local/share/ca-certificates/site_CA+2.crt"], ids=["system-store", "site-ca"])
def test_ldirectord_ca_dropin_parses_in_systemd(pillar, tmp_path, ca):
    """systemd's own parser (systemd-analyze verify) reads Debian's unit plus the rendered drop-in
    and names no problem in the drop-in (it does name an unknown key there: checked first)."""
    s = site_with_ca(pillar, ca)
    units = tmp_path / "units"
    (units / "ldirectord.service.d").mkdir(parents=True)
    shutil.copy("/lib/systemd/system/ldirectord.service", units)
    dropin = units / "ldirectord.service.d" / "mailha-ca.conf"

    def verify(text):
        dropin.write_text(text)
        proc = subprocess.run(["systemd-analyze", "verify", "ldirectord.service"], capture_output=True, text=True,
                              env={"SYSTEMD_UNIT_PATH": f"{units}:", "PATH": "/usr/bin:/bin"}, timeout=60)
        return [line for line in (proc.stdout + proc.stderr).splitlines() if "mailha-ca.conf" in line]

    assert verify("[Service]\nEnvironmen=X=1\n"), "systemd-analyze should name a bad drop-in"
    assert verify(lb.render_ldirectord_ca_dropin(s, s.node("lb1"))) == []


def test_check_ca_bundle(tmp_path):
    from tests.support import tls

    cert, key = tls.snakeoil(tmp_path)
    other, _ = tls.snakeoil(tmp_path, name="other")
    files = {
        "bundle.pem": cert.read_text() + other.read_text(),
        "empty.pem": "",
        "junk.pem": "hello\n",
        "combined.pem": cert.read_text() + key.read_text(),  # make-ssl-cert's manual mode writes both
    }
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    (tmp_path / "der.crt").write_bytes(__import__("ssl").PEM_cert_to_DER_cert(cert.read_text()))
    assert lb.check_ca_bundle(str(cert)) == 1
    assert lb.check_ca_bundle(str(tmp_path / "bundle.pem")) == 2
    for name, words in (("missing.pem", "No such file or directory; put the PEM CA certificate"),
                        (".", "Is a directory"),
                        ("empty.pem", "holds no certificate OpenSSL can load"),
                        ("junk.pem", "holds no certificate OpenSSL can load"),
                        ("der.crt", "it must be PEM"),
                        ("combined.pem", "holds a private key; point ca at the CA certificate only"),
                        (key.name, "holds a private key")):
        path = str(tmp_path / name)
        with pytest.raises(MailhaError) as exc:
            lb.check_ca_bundle(path)
        assert f"CA bundle {path} (pillar mailha:mail:tls:ca)" in str(exc.value) and words in str(exc.value)


@pytest.mark.parametrize("ca", ["/etc/ssl/a b.pem", "/etc/ssl/%n.pem", "etc/ssl/ca.pem", '/etc/"ca".pem'],
                         ids=["space", "specifier", "relative", "quote"])
def test_ldirectord_ca_dropin_revalidates_the_path(pillar, ca):
    """The model refuses these already; the renderer checks again because the value lands
    unquoted in a unit file (a site built without parse_site must not get one through)."""
    import dataclasses

    s = site_with_ca(pillar, None)
    tls = dataclasses.replace(s.mail.tls, ca=ca)
    s = dataclasses.replace(s, mail=dataclasses.replace(s.mail, tls=tls))
    with pytest.raises(ValidationError, match="mailha:mail:tls:ca"):
        lb.render_ldirectord_ca_dropin(s, s.node("lb1"))


def test_sh_without_quiescent_needs_no_fallback(pillar):
    """quiescent=no removes a failed server from the table: sh rehashes, no flag needed."""
    p = copy.deepcopy(pillar)
    p["mailha"]["ldirectord"]["quiescent"] = False
    s = load_site(p)
    assert "schedflags" not in lb.render_ldirectord_cf(s, s.node("lb1"))


# --------------------------------------------------------------------------------------------
# the imaps/pops checks (checktype=external-perl): TLS as a client does it


def site_with_tls(pillar, **tls):
    p = copy.deepcopy(pillar)
    p["mailha"]["mail"]["tls"] = tls
    return load_site(p)


@pytest.mark.parametrize("tls,ca_line,name_lines", [
    ({}, None, ["    SSL_verifycn_scheme => 'none',"]),
    ({"ca": "/etc/ssl/certs/site-ca.pem"}, "    SSL_ca_file     => '/etc/ssl/certs/site-ca.pem',",
     ["    SSL_verifycn_scheme => 'none',"]),
    ({"ca": "/etc/ssl/certs/site-ca.pem", "name": "imap.example.net"},
     "    SSL_ca_file     => '/etc/ssl/certs/site-ca.pem',",
     ["    SSL_hostname        => 'imap.example.net',", "    SSL_verifycn_name   => 'imap.example.net',",
      "    SSL_verifycn_scheme => 'default',"]),
], ids=["system-store", "site-ca", "site-ca-and-name"])
@pytest.mark.parametrize("check,greeting", [("imaps", "/^\\* (OK|PREAUTH)/"), ("pops", "/^\\+OK/")])
def test_ldirectord_tls_checks(pillar, tmp_path, tls, ca_line, name_lines, check, greeting):
    s = site_with_tls(pillar, **tls)
    text = lb.render_ldirectord_tls_check(s, s.node("lb1"), check)
    assert text.startswith("#!/usr/bin/perl\n# Managed by salt-mailha (site example, node lb1)")
    lines = text.splitlines()
    assert ("    SSL_verify_mode => SSL_VERIFY_PEER," in lines)
    assert (ca_line in lines) if ca_line else not any("SSL_ca_file" in line for line in lines)
    assert [line for line in lines if "SSL_hostname" in line or "SSL_verifycn" in line] == name_lines
    assert greeting in text and f"my $timeout = {s.ldirectord.checktimeout};" in text
    assert text == getattr(lb, f"render_ldirectord_{check}_check")(s, s.node("lb1"))
    script = tmp_path / "check"
    script.write_text(text)
    if shutil.which("perl"):  # the script compiles (IO::Socket::SSL comes with ldirectord)
        proc = subprocess.run(["perl", "-c", str(script)], capture_output=True, text=True)
        if "Can't locate IO/Socket/SSL.pm" not in proc.stderr:
            assert proc.returncode == 0, proc.stderr
    with pytest.raises(ValidationError, match="not a load balancer"):
        lb.render_ldirectord_tls_check(s, s.node("mail1"), check)


def test_tls_name_is_validated_by_the_model(pillar):
    for bad in ("imap example.net", "imap.example.net'", "-imap.example.net", ""):
        with pytest.raises(ValidationError) as err:
            site_with_tls(pillar, name=bad)
        assert "mailha:mail:tls:name" in str(err.value)
    assert site_with_tls(pillar, name="imap.example.net").mail.tls.name == "imap.example.net"


def test_tls_checks_are_registered_for_balancers_only(pillar):
    from salt_mailha.core import render

    s = site_with_tls(pillar)
    for n in s.nodes:
        ids = {a.id for a in render.artifacts_for(s, n)}
        assert ({"ldirectord-check-imaps", "ldirectord-check-pops"} <= ids) is n.has("lb"), n.id
    for check in ("imaps", "pops"):
        art = render.artifact(f"ldirectord-check-{check}")
        assert (art.path, art.mode, art.sls, art.secret) == (lb.TLS_CHECKS[check][0], "0755", "lb", False)


def test_undrain_finds_the_ldirectord_daemons_to_reload(tmp_path):
    """mailha_ipvs.undrain reloads (SIGHUP) the ldirectord daemons it finds in /proc: the script
    run by perl or exec'd directly; not its fork=yes children (their parent is ldirectord) and
    not a pager or editor that merely names the file. Read from a /proc laid out as the kernel
    does (cmdline NUL-separated, stat's ppid after the ``)``)."""
    from salt_mailha.modules import mailha_ipvs

    procs = {
        10: (1, [b"/usr/bin/perl", b"-w", b"/usr/sbin/ldirectord", b"start"]),
        11: (10, [b"ldirectord tcp:10.0.0.1:80 checking 10.0.0.2"]),  # a fork=yes child
        12: (1, [b"less", b"/usr/sbin/ldirectord"]),
        13: (1, [b"/usr/sbin/ldirectord", b"-d", b"/etc/ha.d/ldirectord.cf", b"start"]),
        14: (1, [b"/usr/bin/perl", b"/usr/local/bin/other-daemon"]),
    }
    for pid, (ppid, argv) in procs.items():
        (tmp_path / str(pid)).mkdir()
        (tmp_path / str(pid) / "cmdline").write_bytes(b"\0".join(argv) + b"\0")
        (tmp_path / str(pid) / "stat").write_bytes(f"{pid} (a name) with) S {ppid} 1 1".encode())
    (tmp_path / "15").mkdir()  # a process that exited while /proc was read
    (tmp_path / "self").mkdir()
    assert mailha_ipvs._ldirectord_pids(str(tmp_path)) == [10, 13]
