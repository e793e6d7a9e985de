"""Rehearsals are offline (``salt_mailha.rehearsal``): under a scratch ``mailha_root`` every state
that would act on the live host or the network does nothing and says so, in both modes.

Each ``salt-call --local`` runs in a network namespace of its own (``unshare --net``: only a
``lo`` that is down), so a state that still opened a socket, asked a peer, or changed ``lo`` would
fail or report it. Without the rehearsal rule these states fail here (no MySQL socket, no slapd,
no named) or change the namespace's ``lo``. The DNS tier's own proof, with a packet counter and a
real named, is tests/integration/dns/test_dns_rehearsal_sends_nothing.py."""

import json
import pathlib
import subprocess
import sys

import pytest
import yaml

from tests.support.example import example_pillar

REPO = pathlib.Path(__file__).resolve().parents[2]
SALT_CALL = pathlib.Path(sys.executable).with_name("salt-call")


class Minion:
    def __init__(self, base, node, pillar, live=None):
        self.base, self.node, self.root = base, node, base / "root"
        (base / "pillar").mkdir(parents=True)
        self.root.mkdir()
        (base / "pillar" / "top.sls").write_text("base:\n  '*':\n    - mailha\n")
        (base / "pillar" / "mailha.sls").write_text(yaml.safe_dump(pillar))
        (base / "minion").write_text(yaml.safe_dump({
            "id": node, "file_client": "local", "root_dir": str(base / "salt"),
            "file_roots": {"base": [str(REPO / "states")]},
            "pillar_roots": {"base": [str(base / "pillar")]},
            "mailha_root": str(self.root), **({} if live is None else {"mailha_live": live}),
        }))

    def call(self, *args, env=None):
        proc = subprocess.run(
            ["unshare", "--net", "--", str(SALT_CALL), "--local", "-c", str(self.base), "--out", "json",
             "-l", "quiet", "--skip-grains", *args],
            capture_output=True, text=True, timeout=300, check=False, env=env)
        try:
            return proc.returncode, json.loads(proc.stdout)["local"]
        except (ValueError, KeyError):
            pytest.fail(f"salt-call {args} gave no JSON (rc={proc.returncode}):\n{proc.stdout}{proc.stderr}")

    def single(self, fun, test, **kwargs):
        args = ["state.single", fun, *[f"{k}={v}" for k, v in {"name": "rehearsal", **kwargs}.items()]]
        rc, ret = self.call(*args, *(["test=True"] if test else []))
        assert isinstance(ret, dict) and len(ret) == 1, ret
        return rc, next(iter(ret.values()))


@pytest.fixture(autouse=True)
def _mutable_vmail(tmp_path):
    """mail.sls makes the scratch vmail mountpoint immutable (chattr +i): undo it for cleanup."""
    yield
    vmail = tmp_path / "root" / "var" / "vmail"
    if vmail.exists():
        subprocess.run(["chattr", "-i", str(vmail)], check=False)


CN_CONFIG = "cn=config"  # this step's pillar has mailha:ldap:config_format cn=config

# (node, state function, extra argv) -> a live step each would take outside a rehearsal
LIVE_STEPS = [
    pytest.param("db1", "mailha_galera.synced", [], id="galera-synced"),
    pytest.param("db1", "mailha_galera.monitor_present", [], id="galera-monitor"),
    pytest.param("db1", "mailha_galera.sst_user_present", [], id="galera-sst-user"),
    pytest.param("filer1", "mailha_galera.arbitrator_running", [], id="garbd"),
    pytest.param("mail1", "mailha_ldap.base_entry_present", [], id="ldap-base-entry"),
    pytest.param("mail1", "mailha_ldap.mirrormode", [CN_CONFIG], id="ldap-cn-config"),
    pytest.param("mail1", "mailha_mail.iredmail_installed", [], id="iredmail-installer"),
    pytest.param("ns1", "mailha_dns.records", [], id="dns-records"),
    pytest.param("ns1", "mailha_dns.mx_withdrawn", ["name=mail1"], id="dns-mx-withdrawn"),
]


@pytest.mark.parametrize(("node", "fun", "extra"), LIVE_STEPS)
def test_live_step_does_nothing_in_a_rehearsal(tmp_path, node, fun, extra):
    pillar = example_pillar(iredmail=True)
    if CN_CONFIG in extra:
        pillar["mailha"]["ldap"]["config_format"] = "cn=config"
        extra = [a for a in extra if a != CN_CONFIG]
    minion = Minion(tmp_path, node, pillar)
    for test in (True, False):
        named = any(a.startswith("name=") for a in extra)
        args = ["state.single", fun, *(extra if named else ["name=rehearsal", *extra])]
        rc, ret = minion.call(*args, *(["test=True"] if test else []))
        ((_, ret),) = ret.items()
        assert rc == 0 and ret["result"] is True and ret["changes"] == {}, ret
        assert ret["comment"].startswith(("REHEARSAL, nothing done", "REHEARSAL, nothing sent")), ret
        assert f"mailha_root {minion.root}" in ret["comment"] and "mailha_live: True" in ret["comment"]
    assert [p for p in minion.root.rglob("*") if p.is_file()] == [], "a skipped live step wrote files"


def test_dr_state_writes_files_only(tmp_path):
    """No live argument (as a hand-written SLS would call it): lo and /proc/sys untouched."""
    minion = Minion(tmp_path, "db1", example_pillar())
    rc, ret = minion.single("mailha_dr.configured", test=True)
    assert rc == 0 and ret["result"] is None, ret
    assert set(ret["changes"]) == {"/etc/network/interfaces.d/mailha-lo0", "/etc/sysctl.d/90-mailha-dr.conf"}
    assert "lo and /proc/sys were not read or changed" in ret["comment"]
    rc, ret = minion.single("mailha_dr.configured", test=False)
    assert rc == 0 and ret["result"] is True, ret
    assert set(ret["changes"]) == {"/etc/network/interfaces.d/mailha-lo0", "/etc/sysctl.d/90-mailha-dr.conf"}
    assert (minion.root / "etc/sysctl.d/90-mailha-dr.conf").is_file()
    rc, ret = minion.single("mailha_dr.configured", test=False)
    assert rc == 0 and ret["result"] is True and ret["changes"] == {}, ret
    assert "lo and /proc/sys were not read or changed" in ret["comment"]


@pytest.mark.parametrize("node", ["ns1", "db1", "mail1", "filer1", "lb1"])
def test_whole_formula_without_a_network(tmp_path, node):
    """state.apply mailha of each role, test mode then real, in a namespace without a network:
    every state succeeds, and the dns updater's records state only plans."""
    minion = Minion(tmp_path, node, example_pillar())
    for test in (True, False):
        rc, ret = minion.call("state.apply", "mailha", *(["test=True"] if test else []))
        assert rc == 0 and isinstance(ret, dict), ret
        bad = {k: v["comment"] for k, v in ret.items() if v["result"] is not (None if test else True)
               and not (v["result"] is True and not v["changes"])}
        assert not bad, bad
        if node == "ns1":
            records = next(v for v in ret.values() if v["__id__"] == "mailha-dns-records")
            assert records["changes"] == {} and records["comment"].startswith("REHEARSAL, nothing sent")


@pytest.mark.parametrize("live", [False, True], ids=["rehearsal", "mailha_live"])
def test_drain_in_a_rehearsal_leaves_the_ipvs_table_alone(tmp_path, live):
    """mailha_ipvs.drain/undrain on lb1 (the host kernel has no IPVS: the remediation tests'
    stand-in ipvsadm keeps a table and logs every call): a rehearsal only reads the table and
    writes the maintenance file under its root; mailha_live: True changes the weights."""
    from salt_mailha.core.model import parse_site
    from tests.integration.remediation.cluster import MAINTENANCE, prepare_balancer

    pillar = example_pillar()
    minion = Minion(tmp_path / "m", "lb1", pillar, live=live)
    env = prepare_balancer(tmp_path / "m", "root", parse_site(pillar["mailha"]))  # under the root
    calls = pathlib.Path(env["MAILHA_FAKE_IPVS"] + ".log")

    def writes():
        return [c for c in calls.read_text().splitlines() if c.startswith('["-e"')]

    rc, out = minion.call("mailha_ipvs.drain", "mail1", env=env)
    assert rc == 0, out
    assert pathlib.Path(out["maintenance_file"]).parent == minion.root / MAINTENANCE
    if live:
        assert out["drained"] and writes() and "not_changed" not in out, out
    else:
        assert out["drained"] == [] and writes() == [], out
        assert out["not_changed"] and all(w.endswith("-> 0") for w in out["not_changed"]), out
        assert f"mailha_root {minion.root}" in out["rehearsal"]

    pathlib.Path(out["maintenance_file"]).unlink()
    (minion.root / MAINTENANCE).rmdir()  # no ldirectord: undrain sets the weights itself
    rc, out = minion.call("mailha_ipvs.undrain", "mail1", env=env)
    assert rc == 0 and out["via"] == "ipvsadm", out
    if live:
        assert out["restored"] and "not_changed" not in out, out
    else:
        assert out["restored"] == [] and out["not_changed"] == [], out  # the weights were never 0
        assert writes() == []


@pytest.mark.parametrize(("node", "fun", "args"), [
    pytest.param("db1", "mailha_galera.status", [], id="galera-status"),
    pytest.param("db1", "mailha_galera.bootstrap", [], id="galera-bootstrap"),
    pytest.param("db1", "mailha_galera.peers", [], id="galera-peers"),
    pytest.param("filer1", "mailha_galera.garbd_start", [], id="garbd-start"),
    pytest.param("mail1", "mailha_ldap.replication_status", [], id="ldap-replication"),
    pytest.param("mail1", "mailha_ldap.create_base_entry", [], id="ldap-create"),
    pytest.param("ns1", "mailha_dns.query", ["@", "MX"], id="dns-query"),
])
def test_live_execution_functions_are_refused_in_a_rehearsal(tmp_path, node, fun, args):
    """Called by hand (or by the runner) on a rehearsing minion: refused before anything, by name."""
    minion = Minion(tmp_path, node, example_pillar())
    proc = subprocess.run(
        ["unshare", "--net", "--", str(SALT_CALL), "--local", "-c", str(minion.base), "-l", "quiet",
         "--skip-grains", fun, *args], capture_output=True, text=True, timeout=300, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    assert f"{fun}" in out and f"refused: a rehearsal (mailha_root {minion.root})" in out, out
