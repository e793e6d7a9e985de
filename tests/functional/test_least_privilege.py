"""Least privilege, through Salt's real pillar compiler: with the example's top file, each node
receives exactly the secrets its roles use (the master none), and ``salt-run mailha.validate``
checks a site's pillar tree node by node: a secret given to a node that does not use it, a secret
a node lacks, two copies that differ, or a file that does not render are each named."""

import pathlib
import shutil

import pytest
import salt.config
import salt.pillar
import salt.runner
import yaml

from salt_mailha import data
from salt_mailha.core.model import load_site, secret_fields

EXAMPLE = data.paths()["pillar_example"]
WHOLE = load_site(data.example_pillar())


def master_opts(tmp_path, pillar_dir):
    conf = tmp_path / "master"
    conf.write_text(yaml.safe_dump({
        "id": "saltmaster", "root_dir": str(tmp_path / "root"), "pillar_roots": {"base": [str(pillar_dir)]},
        "file_roots": {"base": [str(tmp_path / "files")]}, "mailha_site_cache": 0,
    }))
    opts = salt.config.master_config(str(conf))
    pathlib.Path(opts["cachedir"], "proc").mkdir(parents=True, exist_ok=True)  # a runner's job file
    return opts


def compiled(opts, minion_id):
    return salt.pillar.get_pillar(opts, {}, minion_id, saltenv="base").compile_pillar()


def validate(tmp_path, pillar_dir):
    opts = master_opts(tmp_path, pillar_dir)
    return salt.runner.RunnerClient(opts).cmd("mailha.validate", print_event=False)


@pytest.fixture
def tree(tmp_path):
    """A copy of the example's pillar tree to edit."""
    dst = tmp_path / "pillar"
    shutil.copytree(EXAMPLE, dst)
    return dst


def test_each_role_receives_only_the_secrets_it_uses(tmp_path):
    opts = master_opts(tmp_path, EXAMPLE)
    roles = {r for n in WHOLE.nodes for r in n.roles}
    assert roles == {"dns", "filer", "quorum", "lb", "db", "mail"}
    every = [(key, value.reveal(), users) for key, value, users in secret_fields(WHOLE) if value is not None]
    assert len(every) >= 3 and all(users for _, _, users in every)
    for role in sorted(roles):
        for node in WHOLE.nodes_with(role):
            pillar = compiled(opts, node.id)
            site = load_site(pillar, node=node.id)  # it holds everything its roles use
            held = {key for key, value, _ in secret_fields(site) if value is not None}
            assert held == {key for key, _, users in every if node.id in users}, (role, node.id)
            text = repr(pillar)
            assert [key for key, value, users in every if node.id not in users and value in text] == [], node.id
    # the master acts on the topology alone
    text = repr(compiled(opts, "saltmaster"))
    assert "mailha" in text and [key for key, value, _ in every if value in text] == []


def test_validate_accepts_the_example(tmp_path):
    ret = validate(tmp_path, EXAMPLE)
    assert ret == {"site": "example", "nodes": 8, "valid": True, "problems": []}


def test_validate_names_a_secret_given_to_a_node_that_does_not_use_it(tmp_path, tree):
    top = (tree / "top.sls").read_text().replace("'mail1,mail2':", "'mail1,mail2,lb1':")
    (tree / "top.sls").write_text(top)
    ret = validate(tmp_path, tree)
    assert ret["valid"] is False
    assert ret["problems"] == ["lb1: pillar mailha:ldap:rootpw: reaches lb1, whose roles (lb) do not use it: "
                               "assign it only to mail1, mail2"]


def test_validate_names_a_secret_a_node_lacks_and_copies_that_differ(tmp_path, tree):
    top = (tree / "top.sls").read_text().replace("'ns1':", "'nobody':")
    extra = {"mailha": {"galera": {"monitor": {"password": "another-monitor-password"}}}}
    (tree / "mailha_secrets" / "monitor_lb.sls").write_text(yaml.safe_dump(extra))
    top = top.replace("'lb1,lb2,db1,db2,filer1':", "'lb1,lb2':\n    - match: list\n"
                      "    - mailha_secrets.monitor_lb\n  'db1,db2,filer1':")
    (tree / "top.sls").write_text(top)
    ret = validate(tmp_path, tree)
    assert ret["valid"] is False
    assert "ns1: pillar mailha:dns:tsig:secret: is required on ns1 (roles dns): assign the pillar file " \
           "that holds it to this minion" in ret["problems"]
    differ = [p for p in ret["problems"] if "differs" in p]
    assert differ == [f"{lb}: pillar mailha:galera:monitor:password: differs from the copy filer1 receives: "
                      "keep each secret in one pillar file" for lb in ("lb1", "lb2")]
    assert "another-monitor-password" not in repr(ret)


def test_validate_reports_a_file_that_does_not_render(tmp_path, tree):
    (tree / "mailha_secrets" / "mail.sls").write_text("mailha:\n  ldap:\n    rootpw: [unclosed\n")
    ret = validate(tmp_path, tree)
    assert ret["valid"] is False
    bad = [p for p in ret["problems"] if p.startswith(("mail1: ", "mail2: "))]
    assert len(bad) == 2 and all("did not render" in p and "mailha_secrets.mail" in p for p in bad), ret


def test_a_minion_names_the_pillar_file_that_did_not_render(tmp_path, tree):
    """A YAML mistake in a secret file: the minion's validate names the file that failed (Salt
    otherwise says so only in its debug log, and the pillar merely lacks the secret)."""
    import subprocess
    import sys

    (tree / "mailha_secrets" / "mail.sls").write_text("mailha:\n  ldap:\n    rootpw: [unclosed\n")
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "minion").write_text(yaml.safe_dump({
        "id": "mail1", "file_client": "local", "pillar_roots": {"base": [str(tree)]},
        "root_dir": str(tmp_path / "salt"), "mailha_root": str(tmp_path / "root")}))
    salt_call = pathlib.Path(sys.executable).with_name("salt-call")
    proc = subprocess.run([str(salt_call), "--local", "-c", str(conf), "--out", "json", "-l", "quiet",
                           "mailha_site.validate"], capture_output=True, text=True, timeout=120)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "pillar mailha: the pillar did not render: Rendering SLS 'mailha_secrets.mail' failed" in out, out
