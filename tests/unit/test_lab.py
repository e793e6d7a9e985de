"""Pure parts of the lab: apt mirror discovery, lab pillar generation, tables and summaries."""
import ipaddress
import pathlib
import random

import pytest

from salt_mailha.core.errors import ParseError, ValidationError
from salt_mailha.core.model import load_site
from salt_mailha_lab import aptsources, drill
from salt_mailha_lab import pillar as labpillar
from salt_mailha_lab.report import summarize_state_return, table

DATA = pathlib.Path(__file__).parent / "data" / "lab"


# ------------------------------------------------------------------ apt sources (captured files)
def test_deb822_capture_picks_release_suite_not_security():
    entries = aptsources.parse_deb822((DATA / "debian.sources").read_text())
    assert len(entries) == 2
    assert aptsources.pick_mirror(entries, "bookworm") == "http://mirror.lab.invalid/debian"


def test_one_line_capture_from_debootstrap():
    entries = aptsources.parse_one_line((DATA / "debootstrap-sources.list").read_text())
    assert aptsources.pick_mirror(entries, "bookworm") == "http://mirror.lab.invalid/debian"


@pytest.mark.parametrize("text,want", [
    ("deb [arch=amd64 signed-by=/k.gpg] http://m.invalid/debian/ bookworm main contrib\n",
     "http://m.invalid/debian"),
    ("# comment\ndeb-src http://src.invalid/debian bookworm main\n"
     "deb http://m.invalid/d bookworm main # trailing\n", "http://m.invalid/d"),
], ids=["options-and-trailing-slash", "skips-deb-src"])
def test_one_line_variants(text, want):
    assert aptsources.pick_mirror(aptsources.parse_one_line(text), "bookworm") == want


def test_deb822_disabled_stanza_and_continuation():
    text = ("Types: deb\nURIs: http://off.invalid/debian\nSuites: bookworm\nComponents: main\n"
            "Enabled: no\n\nTypes: deb deb-src\nURIs: http://on.invalid/debian\nSuites: bookworm\n"
            "Components: main\n contrib\n")
    entries = aptsources.parse_deb822(text)
    assert [e["uris"] for e in entries] == [["http://on.invalid/debian"]]
    assert entries[0]["components"] == ["main", "contrib"]


def test_no_matching_suite_names_the_fix():
    entries = aptsources.parse_deb822((DATA / "debian.sources").read_text())
    with pytest.raises(ParseError, match="trixie.*debian.sources"):
        aptsources.pick_mirror(entries, "trixie")


def test_read_entries_from_a_root(tmp_path):
    (tmp_path / "etc/apt/sources.list.d").mkdir(parents=True)
    (tmp_path / "etc/apt/sources.list.d/debian.sources").write_text(
        (DATA / "debian.sources").read_text())
    (tmp_path / "etc/os-release").write_text('PRETTY_NAME="Debian"\nVERSION_CODENAME=bookworm\n')
    assert aptsources.host_mirror(tmp_path) == ("bookworm", "http://mirror.lab.invalid/debian")


# ------------------------------------------------------------------ lab pillar
@pytest.fixture(scope="module")
def example():
    return labpillar.load_example()


@pytest.fixture(scope="module")
def lab(example):
    return labpillar.lab_pillar(example, rng=random.Random(1))


def test_lab_pillar_keeps_topology_and_moves_every_address(example, lab):
    src, dst = example["mailha"], lab["mailha"]
    assert list(dst["nodes"]) == list(src["nodes"])  # same nodes, same order
    assert {k: v["roles"] for k, v in dst["nodes"].items()} == \
        {k: v["roles"] for k, v in src["nodes"].items()}
    lab_nets = [ipaddress.ip_network(c) for c in dst["networks"].values()]
    assert all(n.subnet_of(labpillar.LAB_SUPERNET) for n in lab_nets)
    for name, node in dst["nodes"].items():
        for net, addr in node["addresses"].items():
            assert ipaddress.ip_address(addr) in ipaddress.ip_network(dst["networks"][net])
            # same host offset as in the example
            old = ipaddress.ip_address(src["nodes"][name]["addresses"][net])
            assert int(ipaddress.ip_address(addr)) & 0xFF == int(old) & 0xFF
    assert dst["vips"]["mail"]["address"] != dst["vips"]["db"]["address"]
    assert "192.0.2." not in repr(dst) and "10.1.1." not in repr(dst)


def test_lab_pillar_replaces_placeholders_with_same_length_secrets(example, lab):
    src, dst = example["mailha"], lab["mailha"]
    assert "CHANGE" not in repr(dst).replace("sha256=CHANGE-ME", "")
    src_pw, dst_pw = src["galera"]["monitor"]["password"], dst["galera"]["monitor"]["password"]
    assert len(dst_pw) == len(src_pw) and dst_pw != src_pw
    # the base64 TSIG key too: the lab's nodes are real ones, and real nodes refuse placeholders
    import base64

    from salt_mailha.core.model import placeholder_problems

    key = dst["dns"]["tsig"]["secret"]
    assert key != src["dns"]["tsig"]["secret"]
    assert len(base64.b64decode(key, validate=True)) == len(base64.b64decode(src["dns"]["tsig"]["secret"]))
    assert placeholder_problems(dst) == []


def test_lab_pillar_is_a_valid_site(lab):
    site = load_site(lab)
    assert site.node("lb1").address("public") == "10.99.0.13"


def test_lab_pillar_serves_and_trusts_the_snakeoil_certificate(lab):
    tls = load_site(lab).mail.tls
    assert (tls.cert, tls.key) == ("/etc/ssl/certs/ssl-cert-snakeoil.pem", "/etc/ssl/private/ssl-cert-snakeoil.key")
    assert tls.ca == tls.cert  # self-signed: the balancers trust the certificate itself


def test_lab_pillar_is_deterministic_for_one_seed(example):
    a = labpillar.lab_pillar(example, rng=random.Random("seed"))
    b = labpillar.lab_pillar(example, rng=random.Random("seed"))
    assert a == b


@pytest.mark.parametrize("mutate,key,msg", [
    (lambda m: m["nodes"]["ns1"]["addresses"].update(public="198.51.100.7"),
     "mailha:nodes:ns1:addresses:public", "none of mailha:networks"),
    (lambda m: m["nodes"]["ns1"]["addresses"].update(public="192.0.2.1"),
     "mailha:nodes:ns1:addresses:public", "offset 1"),
    (lambda m: m["networks"].update(public="192.0.0.0/16"), "mailha:networks:public",
     "larger than a /24"),
], ids=["outside-networks", "gateway-offset", "too-large"])
def test_lab_pillar_rejects_what_it_cannot_map(example, mutate, key, msg):
    import copy

    bad = copy.deepcopy(example)
    mutate(bad["mailha"])
    with pytest.raises(ValidationError) as err:
        labpillar.lab_pillar(bad)
    assert any(k == key and msg in m for k, m in err.value.problems)


def test_write_pillar_roots_is_private(tmp_path, lab):
    from salt_mailha import data

    root = tmp_path / "pillar"
    path = labpillar.write_pillar_roots(lab, root)
    # the example's shape: its top file, the topology and each secret file, all private
    assert (root / "top.sls").read_text() == (labpillar.EXAMPLE / "top.sls").read_text()
    files = data.pillar_files(root)
    assert set(files) == set(data.pillar_files(labpillar.EXAMPLE)) and len(files) > 1
    for sls in [path, *root.glob("mailha_secrets/*.sls")]:
        assert (sls.stat().st_mode & 0o777) == 0o600, sls
    assert data.whole_pillar(root) == lab
    site = load_site(lab)
    topology = path.read_text()
    assert not [s for s in site.secrets() if s.reveal() in topology]


# ------------------------------------------------------------------ summaries and tables
@pytest.mark.parametrize("ret,verdict,detail", [
    (None, "no return", "did not answer"),
    (["Rendering SLS 'base:mailha' failed: Jinja error"], "failed", "Rendering SLS"),
    ({"file_|-a_|-/x_|-managed": {"result": True, "changes": {"diff": "x"}, "__run_num__": 0},
      "cmd_|-b_|-c_|-run": {"result": True, "changes": {}, "__run_num__": 1}},
     "ok", "2 states, 1 changed, 0 failed"),
    ({"s1": {"result": False, "comment": "second\nmore", "__id__": "late", "__run_num__": 5},
      "s2": {"result": False, "comment": "first", "__id__": "early", "__run_num__": 2}},
     "failed", "first: early: first"),
    ({"s": {"result": None, "changes": {}, "__run_num__": 0}}, "ok", "1 states"),
    ({"s": {"result": False, "__id__": "x", "__run_num__": 0, "comment":
            "An exception occurred in this state: Traceback (most recent call last):\n  File x\n"
            "salt.exceptions.CommandExecutionError: No such file or directory: 'exportfs'\n"}},
     "failed", "x: salt.exceptions.CommandExecutionError: No such file or directory: 'exportfs'"),
    ({"s": {"result": False, "__id__": "y", "__run_num__": 0, "comment":
            "invalid mailha pillar (1 problem(s)):\n  - pillar mailha:ldap:port: bad"}},
     "failed", "y: invalid mailha pillar (1 problem(s)): pillar mailha:ldap:port: bad"),
    ({"s": {"result": False, "__id__": "p", "__run_num__": 0, "comment":
            "Problem encountered installing package(s). Additional info follows:\n\nerrors:\n"
            "    - Running scope as unit: run-r1.scope\n      E: Failed to fetch pv.deb\n"}},
     "failed", "p: Problem encountered installing package(s). Additional info follows: E: Failed to fetch pv.deb"),
], ids=["no-return", "render-error", "ok", "first-failure-by-run-order", "test-mode-none",
        "traceback-last-line", "heading-joined", "pkg-error-skips-noise"])
def test_summarize_state_return(ret, verdict, detail):
    got_verdict, got_detail = summarize_state_return(ret)
    assert got_verdict == verdict
    assert detail in got_detail


def test_table_pads_columns_and_rules_header():
    text = table(["node", "check"], [["lb1", "vip"], ["mail2", None]])
    lines = text.splitlines()
    assert lines[0] == "node   check"
    assert lines[1] == "-----  -----"
    assert lines[2] == "lb1    vip"
    assert lines[3] == "mail2"


# ------------------------------------------------------------------ drill plan
def test_drill_checks_cover_tiers_and_skip_ipvs_up_front(lab):
    site = load_site(lab)
    checks = drill.build_checks(site, "drill-pw")
    names = [c.name for c in checks]
    assert "smtp:25 on a mail node" in names and "sql write on a db member" in names
    vip_checks = [c for c in checks if c.name.startswith("vip ")]
    assert len(vip_checks) == len(site.services) and all(c.skip for c in vip_checks)
    sql = next(c for c in checks if c.name == "sql write on a db member")
    assert sql.needs == ("db1", "db2")


def test_drill_vip_checks_run_when_the_balancers_have_ipvs(lab):
    site = load_site(lab)
    vip_checks = [c for c in drill.build_checks(site, ipvs=True) if c.name.startswith("vip ")]
    assert vip_checks and not any(c.skip for c in vip_checks)
    assert {c.request["hosts"][0] for c in vip_checks} == {v.address for v in site.vips.values()}


def test_drill_mail_flow_needs_the_drill_mailbox(lab):
    site = load_site(lab)
    flow = next(c for c in drill.build_checks(site) if c.request["kind"] == "mailflow")
    assert flow.skip.startswith("no drill mailbox")
    box = drill.mailbox_for(site, "box-pw")
    assert box.dn == f"uid=labdrill,{site.ldap.suffix}" and box.address == "labdrill@example.net"
    flow = next(c for c in drill.build_checks(site, mailbox=box) if c.request["kind"] == "mailflow")
    assert not flow.skip and flow.needs == ("mail1", "mail2")
    assert flow.request["user"] == box.address and flow.request["password"] == "box-pw"
    assert (flow.request["smtp_port"], flow.request["imaps_port"]) == (25, 993)


def test_drill_reports_na_when_the_only_node_a_check_needs_is_down(lab, monkeypatch):
    site = load_site(lab)
    mx = next(c for c in drill.build_checks(site) if c.request["kind"] == "mx")
    assert mx.needs == ("ns1",)
    monkeypatch.setattr(drill, "probe", lambda req: pytest.fail(f"probed {req}"))
    ok, detail = drill.evaluate(mx, site, "ns1")
    assert ok is None and "ns1 is the only dns node" in detail
    # a surviving member of the tier is probed, the downed one left out
    sql = next(c for c in drill.build_checks(site, "pw") if c.name == "sql write on a db member")
    seen = []
    monkeypatch.setattr(drill, "probe", lambda req: seen.append(req["hosts"]) or {"ok": True, "detail": ""})
    assert drill.evaluate(sql, site, "db1") == (True, "")
    assert seen == [[site.node("db2").address("private")]]


def test_expected_mx_drops_the_failed_mail_node(lab):
    site = load_site(lab)
    assert drill.expected_mx(site, "mail1") == ["mail2.example.net"]
    assert drill.expected_mx(site, "db1") == ["mail1.example.net", "mail2.example.net"]


def test_drill_sql_check_is_skipped_without_a_writer_account(lab):
    sql = next(c for c in drill.build_checks(load_site(lab)) if c.name == "sql write on a db member")
    assert sql.skip.startswith("db tier not working")


def test_master_example_points_reactor_at_the_checkout(tmp_path):
    from salt_mailha_lab.master import master_example

    (tmp_path / "examples/master.d").mkdir(parents=True)
    (tmp_path / "reactor").mkdir()
    (tmp_path / "reactor/health.sls").write_text("x: {}\n")
    (tmp_path / "examples/master.d/mailha.conf").write_text(
        "file_roots: {base: [/srv/salt]}\npresence_events: true\nmailha_probe_timeout: 1\n"
        "reactor:\n  - 'salt/beacon/*/mailha_health/*':\n    - /srv/salt-mailha/reactor/health.sls\n"
        "  - 'other':\n    - /srv/elsewhere/missing.sls\n")
    conf, source = master_example(tmp_path)
    assert source.endswith("mailha.conf")
    assert "file_roots" not in conf  # the lab serves its own roots
    assert conf["presence_events"] is True and conf["mailha_probe_timeout"] == 1
    assert conf["reactor"][0] == {"salt/beacon/*/mailha_health/*": [str(tmp_path / "reactor/health.sls")]}
    assert conf["reactor"][1] == {"other": ["/srv/elsewhere/missing.sls"]}  # left as written


def test_no_master_example_means_no_reactor(tmp_path):
    from salt_mailha_lab.master import master_example

    assert master_example(tmp_path) == ({}, None)


def test_node_identity_hosts_resolver_and_beacons_for_balancers_only(lab):
    from salt_mailha_lab.lab import Lab

    lb = Lab.identity(lab, "10.99.0.1", "lb1")
    db = Lab.identity(lab, "10.99.0.1", "db1")
    assert "10.99.0.15 db1.example.net db1" in lb["hosts"].splitlines()
    assert "10.99.0.22 db.example.net db" in lb["hosts"].splitlines()  # the db VIP's name
    assert lb["resolv"] == "search example.net\nnameserver 10.99.0.10\noptions timeout:1 attempts:1\n"
    assert lb["master"] == "10.99.0.1"
    assert db["minion_extra"] is None
    assert lb["minion_extra"] is None or "mailha_health" in lb["minion_extra"]


def test_base_tree_holds_every_package_the_formula_installs():
    from salt_mailha.core.render import PACKAGES
    from salt_mailha_lab.base import service_packages

    wanted = {p for pkgs in PACKAGES.values() for p in pkgs}
    assert wanted <= set(service_packages())
    assert "bind9" in service_packages()  # the lab's DNS node


def test_lab_pillar_shares_vmail_by_bind_mount(lab):
    """This host kernel has no NFS: the lab's mail nodes bind-mount one shared directory."""
    from salt_mailha.core import mail
    from salt_mailha.core.model import load_site

    site = load_site(lab)
    assert site.mail.vmail.fstype == "bind"
    assert mail.vmail_fstab_entry(site, site.node("mail1")).vfstype == "none"
