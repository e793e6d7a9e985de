"""The load-balancer tier's states and module through real ``salt-call --local`` on this host
(files under a scratch mailha_root; nothing live): the keepalived notify hook, ldirectord's
maintenance directory, the DR files without live changes, and mailha_ipvs's argument errors and
its message on a kernel without IPVS. Every state in both modes; second runs change nothing."""
import os
import pathlib
import shutil
import stat
import sys

import pytest

from salt_mailha.core import lb
from salt_mailha.core.model import load_site
from tests.integration.lb.conftest import LocalMinion, lab_pillar

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def pillar():
    return lab_pillar("10.99.77")


def modes(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def converge(minion, function, **kwargs):
    """test=True (which must write nothing), apply, apply, test=True: returns the first two."""
    before = sorted(minion.root.rglob("*"))
    first_test = minion.state(function, test=True, **kwargs)
    assert sorted(minion.root.rglob("*")) == before, "test=True wrote something"
    applied = minion.state(function, **kwargs)
    for test in (False, True):
        again = minion.state(function, test=test, **kwargs)
        assert (again["result"], again["changes"]) == (True, {}), again
    return first_test, applied


def test_notify_hook(tmp_path, pillar):
    minion = LocalMinion(tmp_path, pillar, "lb1")
    path = minion.root / "etc/keepalived/mailha-notify.sh"
    test, applied = converge(minion, "mailha_keepalived.notify_hook", name=lb.NOTIFY_SCRIPT)
    assert test["result"] is None and test["comment"] == f"would create {path}"
    assert applied["result"] is True and applied["changes"]["new"] == {"mode": "0755"}
    site = load_site(pillar)
    # the hook runs the salt-call beside the minion's own Python (here: this venv's)
    salt_call = str(pathlib.Path(sys.executable).with_name("salt-call"))
    assert path.read_text() == lb.render_keepalived_notify(site, site.node("lb1"), salt_call=salt_call)
    assert f"exec {salt_call} " in path.read_text()
    assert modes(path) == 0o755


def test_notify_hook_refuses_non_lb(tmp_path, pillar):
    ret = LocalMinion(tmp_path, pillar, "db1").state("mailha_keepalived.notify_hook",
                                                     name=lb.NOTIFY_SCRIPT)
    assert ret["result"] is False and "not a load balancer" in ret["comment"]
    assert not (tmp_path / "root/etc").exists()


def test_maintenance_dir_keeps_drains(tmp_path, pillar):
    minion = LocalMinion(tmp_path, pillar, "lb1")
    path = minion.root / "etc/ldirectord.maintenance"
    test, applied = converge(minion, "mailha_ldirectord.maintenance_dir", name=lb.MAINTENANCE_DIR)
    assert test["result"] is None and test["changes"] == {"old": None, "new": "0755"}
    assert applied["result"] is True and path.is_dir() and modes(path) == 0o755
    (path / "10.99.77.17").write_text("drained\n")
    ret = minion.state("mailha_ldirectord.maintenance_dir", name=lb.MAINTENANCE_DIR)
    assert ret["changes"] == {} and "drained: 10.99.77.17" in ret["comment"]
    assert (path / "10.99.77.17").exists()


def test_dr_files_only(tmp_path, pillar):
    minion = LocalMinion(tmp_path, pillar, "db1")
    test, applied = converge(minion, "mailha_dr.configured", name="dr", live=False)
    assert test["result"] is None and "lo" not in test["changes"]
    assert set(applied["changes"]) == {"/etc/network/interfaces.d/mailha-lo0",
                                       "/etc/sysctl.d/90-mailha-dr.conf"}
    lo0 = (minion.root / "etc/network/interfaces.d/mailha-lo0").read_text()
    assert "address 10.99.77.22\n" in lo0 and "10.99.77.21" not in lo0


needs_ipvsadm = pytest.mark.skipif(not shutil.which("ipvsadm"),
                                   reason="ipvsadm missing: run scripts/setup-host.sh")


@needs_ipvsadm
@pytest.mark.parametrize(
    "args,needle",
    [(("mailha_ipvs.set_weight", "10.99.77.21", "70000", "10.99.77.17", "0"),
      "invalid argument port: 70000 is out of range"),
     (("mailha_ipvs.set_weight", "10.99.77.21", "80", "10.99.77.17", "weight=-1"),
      "invalid argument weight"),
     (("mailha_ipvs.set_weight", "10.99.77.21;id", "80", "10.99.77.17", "1"),
      "invalid argument vip"),
     (("mailha_ipvs.drain", "10.99.77.17", "protocol=icmp"), "invalid argument protocol"),
     (("mailha_ipvs.drain", "nosuchnode"), "neither an IP address nor a node of site example")],
    ids=["port", "weight", "vip-injection", "protocol", "unknown-node"])
def test_ipvs_argument_errors(tmp_path, pillar, args, needle):
    rc, _, text = LocalMinion(tmp_path, pillar, "lb1").call(*args)
    assert rc != 0 and needle in text


@needs_ipvsadm
@pytest.mark.skipif(os.path.exists("/proc/net/ip_vs"), reason="this kernel has IPVS")
def test_ipvs_says_kernel_has_no_ipvs(tmp_path, pillar):
    rc, _, text = LocalMinion(tmp_path, pillar, "lb1").call("mailha_ipvs.list")
    assert rc != 0 and "this kernel has no IPVS" in text
