"""mailha_galera.configured through salt-call --local (no daemon needed): both modes, a real
diff in test mode, idempotence, the file's mode and group, secrets redacted, a wrong name."""

import grp
import os

import pytest
import yaml

from tests.integration.galera.harness import SST_PASSWORD

pytestmark = pytest.mark.integration


def single(member, *args):
    rc, ret = member.call("state.single", "mailha_galera.configured", f"name={member.cnf}", *args)
    (r,) = ret.values()
    return r


def test_configured_both_modes_diff_and_idempotence(lab):
    db1 = lab.member("db1")
    r = single(db1, "test=True")
    assert r["result"] is None and r["comment"] == f"would create {db1.cnf}" and not db1.cnf.exists()
    assert r["changes"]["new"]["mode"] == "0640" and "+wsrep_node_address = 127.0.0.11:" in r["changes"]["diff"]

    r = single(db1)
    assert r["result"] is True and r["comment"] == f"created {db1.cnf}"
    st = os.stat(db1.cnf)
    assert f"{st.st_mode & 0o7777:04o}" == "0640" and st.st_uid == 0 and st.st_gid == grp.getgrnam("mysql").gr_gid
    assert single(db1)["changes"] == {}
    assert single(db1, "test=True")["result"] is True

    text = db1.cnf.read_text()
    db1.cnf.write_text(text.replace("wsrep_sst_method = rsync", "wsrep_sst_method = xtrabackup"))
    r = single(db1, "test=True")
    assert r["result"] is None and "-wsrep_sst_method = xtrabackup" in r["changes"]["diff"]
    assert "xtrabackup" in db1.cnf.read_text(), "test mode rewrote the file"
    r = single(db1)
    assert r["result"] is True and r["comment"] == f"updated {db1.cnf}" and db1.cnf.read_text() == text


def test_configured_redacts_the_sst_password_in_the_diff(lab):
    db2 = lab.member("db2")
    pillar = yaml.safe_load((lab.pillar_dir / "mailha.sls").read_text())
    pillar["mailha"]["galera"]["sst_method"] = "mariabackup"
    (lab.pillar_dir / "mailha.sls").write_text(yaml.safe_dump(pillar))
    try:
        r = single(db2, "test=True")
        assert 'wsrep_sst_auth = "sst:<redacted>"' in r["changes"]["diff"]  # the value is quoted
        assert SST_PASSWORD not in repr(r)
    finally:
        pillar["mailha"]["galera"]["sst_method"] = "rsync"
        (lab.pillar_dir / "mailha.sls").write_text(yaml.safe_dump(pillar))
    assert not any(SST_PASSWORD in t for t in lab.outputs())


def test_configured_refuses_a_path_that_is_not_the_members(lab):
    filer1 = lab.member("filer1")
    rc, ret = filer1.call("state.single", "mailha_galera.configured", "name=/etc/mysql/other.cnf")
    (r,) = ret.values()
    assert r["result"] is False and "mailha:galera:instances:filer1:config" in r["comment"]
    assert not os.path.exists("/etc/mysql/other.cnf")
