"""The SLS formula through real ``salt-call --local`` (Salt's loader finds our modules through the
package's entry point): for each role of the example site, test=True reports the files it would
write and writes nothing; a real apply into a scratch root writes them with the right modes; a
second apply changes nothing; a bad pillar stops the run with the validator's messages; no secret
appears in any return or log line."""

import json
import os
import pathlib
import re
import subprocess
import sys

import pytest
import yaml

from salt_mailha import data as mailha_data
from salt_mailha.core.model import parse_site

REPO = pathlib.Path(__file__).resolve().parents[2]
SALT_CALL = pathlib.Path(sys.executable).with_name("salt-call")
EXAMPLE = mailha_data.example_pillar()
SECRETS = [s.reveal() for s in parse_site(EXAMPLE["mailha"]).secrets()]

# node -> files its roles get from the render registry (mailha_site.rendered), with their modes;
# the tiers' own states (galera.cnf, the mail files, the vmail share ...) come on top.
EXPECTED = {
    "lb1": {"/etc/keepalived/keepalived.conf": "0640", "/etc/keepalived/mailha-ipvs-ready": "0755",
            "/etc/ha.d/ldirectord.cf": "0600",
            "/etc/systemd/system/ldirectord.service.d/mailha-ca.conf": "0644",
            "/etc/ha.d/mailha-check-imaps": "0755", "/etc/ha.d/mailha-check-pops": "0755"},
    "db1": {},
    "filer1": {},
    "mail1": {"/etc/ldap/slapd.conf": "0640", "/etc/default/slapd": "0644", "/etc/nginx/conf.d/mailha.conf": "0644"},
}
# files the tiers' states must write in the same rehearsal
DR_FILES = ["/etc/network/interfaces.d/mailha-lo0", "/etc/sysctl.d/90-mailha-dr.conf"]
ALSO_WRITTEN = {
    "lb1": ["/etc/keepalived/mailha-notify.sh"],
    "db1": ["/etc/mysql/mariadb.conf.d/60-mailha-galera.cnf", *DR_FILES],
    "filer1": ["/etc/mysql/mariadb.conf.d/60-mailha-galera.cnf", "/etc/exports"],
    "mail1": ["/etc/postfix/main.cf", "/etc/dovecot/dovecot.conf", "/etc/fstab", "/var/www/html/ldirectord.txt",
              *DR_FILES],
}


class Minion:
    def __init__(self, base, node, pillar_dir):
        self.base = base
        self.node = node
        self.root = base / "root"
        self.conf = base / "conf"
        self.log = base / "minion.log"
        self.conf.mkdir(parents=True, exist_ok=True)
        self.root.mkdir(exist_ok=True)
        (self.conf / "minion").write_text(yaml.safe_dump({
            "id": node,
            "file_client": "local",
            "file_roots": {"base": [str(REPO / "states")]},
            "pillar_roots": {"base": [str(pillar_dir)]},
            "root_dir": str(base / "salt"),
            "mailha_root": str(self.root),
        }))

    def run(self, *args):
        proc = subprocess.run(
            [str(SALT_CALL), "--local", "-c", str(self.conf), "--out", "json", "-l", "quiet",
             f"--log-file={self.log}", "--log-file-level=debug", *args],
            capture_output=True, text=True, timeout=300,
        )
        self.last_output = proc.stdout + proc.stderr
        return proc

    def apply(self, test=False):
        args = ["state.apply", "mailha"] + (["test=True"] if test else [])
        proc = self.run(*args)
        try:
            data = json.loads(proc.stdout)["local"]
        except (ValueError, KeyError):
            pytest.fail(f"salt-call gave no JSON state return (rc={proc.returncode}):\n{self.last_output}")
        return proc.returncode, data

    def files(self):
        return sorted("/" + str(p.relative_to(self.root)) for p in self.root.rglob("*") if p.is_file())


def assert_no_secret(*texts):
    for text in texts:
        for secret in SECRETS:
            assert secret not in text, "a pillar secret leaked into output or log"


@pytest.fixture
def example_pillar():
    return REPO / "pillar.example"


def rendered(ret):
    """The registry's files in a state return (mailha_site.rendered states), by path."""
    return {r["name"]: r for key, r in ret.items() if key.startswith("mailha_site_|-")}


@pytest.fixture
def rehearsal_minion(tmp_path, example_pillar, request):
    minion = Minion(tmp_path, request.param, example_pillar)
    yield minion
    # the vmail mountpoint is made immutable (chattr +i) so mail never lands on a local disk
    vmail = minion.root / "var" / "vmail"
    if vmail.exists():
        subprocess.run(["chattr", "-i", str(vmail)], check=False)


@pytest.mark.parametrize("rehearsal_minion", sorted(EXPECTED), indirect=True)
def test_apply_test_mode_then_real_then_idempotent(rehearsal_minion):
    minion, node = rehearsal_minion, rehearsal_minion.node

    rc, ret = minion.apply(test=True)
    assert rc == 0, minion.last_output
    assert all(r["result"] in (None, True) for r in ret.values()), ret
    predicted = rendered(ret)
    assert set(predicted) == set(EXPECTED[node])
    for r in predicted.values():
        assert r["result"] is None and r["comment"].startswith("would create")
        assert r["changes"]["new"]["mode"] == EXPECTED[node][r["name"]]
    assert minion.files() == [], "test=True wrote files"

    rc, ret = minion.apply()
    assert rc == 0, minion.last_output
    assert all(r["result"] is True for r in ret.values()), ret
    assert all(r["changes"] for r in rendered(ret).values())
    written = minion.files()
    assert set(EXPECTED[node]) | set(ALSO_WRITTEN.get(node, ())) <= set(written)
    for path, mode in EXPECTED[node].items():
        assert f"{os.stat(minion.root / path.lstrip('/')).st_mode & 0o7777:04o}" == mode
    first_output = minion.last_output

    rc, ret = minion.apply()
    assert rc == 0
    assert all(r["result"] is True and not r["changes"] for r in ret.values()), ret
    assert_no_secret(first_output, minion.last_output, minion.log.read_text())


def test_test_mode_shows_the_real_diff_of_a_changed_file(tmp_path, example_pillar):
    minion = Minion(tmp_path, "lb1", example_pillar)  # lb1: only registry files
    assert minion.apply()[0] == 0
    path = minion.root / "etc/ha.d/ldirectord.cf"
    before = path.read_text()
    ours = re.search(r"^checkinterval=\d+\n", before, re.M).group(0)  # the pillar's value
    path.write_text(before.replace(ours, "checkinterval=50\n"))
    edited = path.read_text()
    assert edited != before, "ldirectord.cf should carry checkinterval from the pillar"

    rc, ret = minion.apply(test=True)
    change = next(r for r in ret.values() if r["name"] == "/etc/ha.d/ldirectord.cf")
    assert change["result"] is None and "would update" in change["comment"]
    assert "-checkinterval=50" in change["changes"]["diff"] and f"+{ours}" in change["changes"]["diff"]
    assert path.read_text() == edited, "test=True changed the file"
    assert_no_secret(minion.last_output, minion.log.read_text())


def test_bad_pillar_fails_with_every_message_and_writes_nothing(tmp_path):
    bad = tmp_path / "pillar"
    bad.mkdir()
    (bad / "top.sls").write_text("base:\n  '*':\n    - mailha\n")  # the whole site in one file
    data = mailha_data.example_pillar()
    data["mailha"]["vips"]["db"]["address"] = data["mailha"]["vips"]["mail"]["address"]
    data["mailha"]["keepalived"]["auth_pass"] = "muchtoolongpassword"
    (bad / "mailha.sls").write_text(yaml.safe_dump(data))

    minion = Minion(tmp_path / "m", "mail1", bad)
    proc = minion.run("state.apply", "mailha")
    assert proc.returncode != 0
    assert "pillar mailha:vips:db:address" in minion.last_output
    assert "pillar mailha:keepalived:auth_pass" in minion.last_output
    assert minion.files() == []
    assert "muchtoolongpassword" not in minion.last_output + minion.log.read_text()


def test_placeholder_secrets_are_refused_on_a_real_node(tmp_path):
    """The example's placeholders (CHANGE-ME..., CHANGEME, the base64 TSIG key) pass in a
    rehearsal (scratch mailha_root) but a real node refuses them, each by key, before anything is
    rendered; a lab opts in with mailha:allow_placeholder_secrets."""
    pillar = tmp_path / "pillar"
    pillar.mkdir()
    (pillar / "top.sls").write_text("base:\n  '*':\n    - mailha\n")  # the whole site in one file
    data = mailha_data.example_pillar()
    (pillar / "mailha.sls").write_text(yaml.safe_dump(data))
    minion = Minion(tmp_path / "m", "ns1", pillar)
    assert minion.run("mailha_site.validate").returncode == 0  # a rehearsal: accepted

    conf = yaml.safe_load((minion.conf / "minion").read_text())
    del conf["mailha_root"]  # a real node (test=True only: nothing may be changed on this host)
    (minion.conf / "minion").write_text(yaml.safe_dump(conf))
    for args in (["mailha_site.validate"], ["state.apply", "mailha", "test=True"]):
        proc = minion.run(*args)
        assert proc.returncode != 0, minion.last_output
        for key in ("mailha:galera:monitor:password", "mailha:ldap:rootpw", "mailha:dns:tsig:secret"):
            assert f"pillar {key}: is still the example's placeholder" in minion.last_output, key
        assert_no_secret(minion.last_output, minion.log.read_text())

    data["mailha"]["allow_placeholder_secrets"] = True
    (pillar / "mailha.sls").write_text(yaml.safe_dump(data))
    proc = minion.run("mailha_site.validate")
    assert proc.returncode == 0 and json.loads(proc.stdout)["local"]["valid"] is True, minion.last_output


def test_loader_lists_our_modules(tmp_path, example_pillar):
    minion = Minion(tmp_path, "mail1", example_pillar)
    proc = minion.run("sys.list_modules")
    assert proc.returncode == 0
    assert "mailha_site" in json.loads(proc.stdout)["local"]
