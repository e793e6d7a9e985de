"""Debian's own slaptest accepts what we render, in both forms (fast: no daemon)."""
import subprocess

import pytest

from salt_mailha.core import ldap
from tests.support.slapd import SLAPADD, SLAPTEST, have_slapd, iredmail_like_conf
from tests.unit.test_ldap import MINIMAL, site_from

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(not have_slapd(), reason="slapd missing: apt-get install slapd (scripts/setup-host.sh)")]


def _slaptest(path):
    return subprocess.run([SLAPTEST, "-u", "-f", str(path)], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("base", ["iredmail", "minimal"])
def test_slaptest_accepts_merged_conf(tmp_path, base):
    (tmp_path / "db").mkdir()
    text = (iredmail_like_conf(tmp_path, "dc=example,dc=net", "cn=Manager,dc=example,dc=net", "pw")
            if base == "iredmail" else MINIMAL.replace("/var/lib/ldap/example", str(tmp_path / "db"))
            .replace("/var/lib/ldap/other", str(tmp_path / "db"))
            .replace("pidfile /run/slapd.pid", f"pidfile {tmp_path}/pid\nmoduleload back_mdb"))
    conf = tmp_path / "slapd.conf"
    conf.write_text(ldap.merge_slapd_conf(text, site_from()))
    res = _slaptest(conf)
    assert res.returncode == 0, res.stderr
    # and a broken block would be refused (the check is not a no-op)
    conf.write_text(conf.read_text().replace("mirrormode  on", "mirrormode  sideways"))
    assert _slaptest(conf).returncode != 0


def test_converted_cn_config_holds_the_mirror_settings(tmp_path):
    (tmp_path / "db").mkdir()
    (tmp_path / "slapd.d").mkdir()
    conf = tmp_path / "slapd.conf"
    site = site_from()
    conf.write_text(ldap.merge_slapd_conf(
        iredmail_like_conf(tmp_path, "dc=example,dc=net", "cn=Manager,dc=example,dc=net", "pw"), site))
    subprocess.run([SLAPADD, "-f", str(conf), "-b", "dc=example,dc=net", "-l", "/dev/null"], check=True,
                   capture_output=True, timeout=60)
    subprocess.run([SLAPTEST, "-Q", "-f", str(conf), "-F", str(tmp_path / "slapd.d")], check=True,
                   capture_output=True, timeout=60)
    cfg = (tmp_path / "slapd.d" / "cn=config.ldif").read_text()
    assert "olcServerID: 1 ldap://10.1.1.17:389/" in cfg and "olcServerID: 2 ldap://10.1.1.18:389/" in cfg
    db = (tmp_path / "slapd.d" / "cn=config" / "olcDatabase={2}mdb.ldif").read_text()
    assert "olcMultiProvider: TRUE" in db
    assert db.count("olcSyncrepl: rid=") == 2
    assert (tmp_path / "slapd.d" / "cn=config" / "olcDatabase={2}mdb" / "olcOverlay={0}syncprov.ldif").exists()
