"""The ``mailha`` fileserver backend through Salt's real loader and fileserver, in
``salt-call --local`` (the same code a master runs): it lists and serves the package's formula,
reactor files and example configs, applies the formula with no file_roots at all, and refuses
paths outside its trees."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
SALT_CALL = Path(sys.executable).parent / "salt-call"


@pytest.fixture
def call(tmp_path):
    def make(backends=("mailha",), **extra):
        etc = tmp_path / "etc"
        etc.mkdir(exist_ok=True)
        conf = {"id": "db1", "file_client": "local", "root_dir": str(tmp_path / "root"),
                "fileserver_backend": list(backends),
                "pillar_roots": {"base": [str(REPO / "pillar.example")]}, **extra}
        (etc / "minion").write_text(yaml.safe_dump(conf))

        def run(*args):
            proc = subprocess.run([str(SALT_CALL), "-c", str(etc), "--out=json", *args],
                                  capture_output=True, text=True, timeout=300, cwd=tmp_path)
            assert proc.stdout.strip(), proc.stderr
            return json.loads(proc.stdout)["local"]
        return run
    return make


def test_lists_formula_reactor_and_examples(call):
    listed = set(call()("cp.list_master"))
    formula = {f"mailha/{p.relative_to(REPO / 'states' / 'mailha')}"
               for p in (REPO / "states" / "mailha").rglob("*") if p.is_file()}
    reactor = {f"mailha/reactor/{p.name}" for p in (REPO / "reactor").glob("*.sls")}
    examples = {f"mailha/examples/{p.relative_to(REPO / 'examples')}"
                for p in (REPO / "examples").rglob("*") if p.is_file()}
    assert formula and reactor and examples
    assert listed == formula | reactor | examples


def test_serves_file_content_byte_for_byte(call):
    run = call()
    assert run("cp.get_file_str", "salt://mailha/reactor/health.sls") == \
        (REPO / "reactor" / "health.sls").read_text()
    assert run("cp.get_file_str", "salt://mailha/init.sls") == \
        (REPO / "states" / "mailha" / "init.sls").read_text()
    assert "mailha/orch" in run("cp.list_master_dirs")


@pytest.mark.parametrize("url", ["salt://mailha/../../../etc/passwd", "salt://etc/passwd",
                                 "salt://mailha/reactor/../../setup.py",
                                 "salt://mailha/no-such.sls"],
                         ids=["dotdot", "outside-prefix", "reactor-dotdot", "missing"])
def test_refuses_paths_outside_its_trees(call, url):
    assert call()("cp.get_file_str", url) is False


def test_serves_only_its_environments(call):
    run = call(mailha_saltenvs=["prod"])
    assert run("cp.list_master") == []
    assert "mailha/init.sls" in run("cp.list_master", "saltenv=prod")


def test_formula_applies_from_the_backend_alone(call, tmp_path):
    """No file_roots backend at all: state.apply mailha renders and writes the rehearsal files."""
    root = tmp_path / "rehearsal"
    run = call()
    ret = run("state.apply", "mailha", f'pillar={{"mailha_root": "{root}"}}')
    assert isinstance(ret, dict) and ret, ret
    assert all(v["result"] is True for v in ret.values()), ret
    assert (root / "etc" / "mysql" / "mariadb.conf.d" / "60-mailha-galera.cnf").is_file()
