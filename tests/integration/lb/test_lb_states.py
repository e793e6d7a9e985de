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


# --------------------------------------------------------------------------------------------
# the site CA of ldirectord's https checks (mail:tls:ca)

CA = "/etc/ssl/mailha-ca.pem"
DROPIN = "etc/systemd/system/ldirectord.service.d/mailha-ca.conf"


def with_ca(pillar, ca=CA):
    import copy

    p = copy.deepcopy(pillar)
    p["mailha"]["mail"]["tls"] = {} if ca is None else {"ca": ca}
    return p


def formula_minion(base, pillar, node="lb1"):
    """A LocalMinion whose file_roots serve this checkout's formula (states/mailha)."""
    minion = LocalMinion(base, pillar, node)
    link = minion.base / "mailha"
    if not link.exists():
        link.symlink_to(pathlib.Path(__file__).resolve().parents[3] / "states" / "mailha")
    return minion


def apply_lb(minion, test=False):
    rc, data, text = minion.call("state.apply", "mailha.lb", *(["test=True"] if test else []))
    if not isinstance(data, dict):
        pytest.fail(f"no state return (rc={rc}):\n{text[-3000:]}")
    return {v["__id__"]: v for v in data.values()}


def test_ca_present_checks_and_never_writes(tmp_path, pillar):
    from tests.support import tls

    minion = LocalMinion(tmp_path, with_ca(pillar), "lb1")
    path = minion.root / CA.lstrip("/")
    for test in (True, False):
        ret = minion.state("mailha_ldirectord.ca_present", test=test, name="mail:tls:ca")
        assert ret["result"] is False and ret["changes"] == {}, ret
        assert f"CA bundle {path} (pillar mailha:mail:tls:ca): No such file or directory" in ret["comment"]
    assert list(minion.root.rglob("*")) == []
    cert, key = tls.snakeoil(tmp_path / "tls")
    path.parent.mkdir(parents=True)
    path.write_text(cert.read_text() + key.read_text())  # a combined file is refused: it holds the key
    ret = minion.state("mailha_ldirectord.ca_present", name="mail:tls:ca")
    assert ret["result"] is False and "holds a private key" in ret["comment"]
    assert key.read_text() not in ret["comment"]
    shutil.copy(cert, path)
    for test in (True, False):
        ret = minion.state("mailha_ldirectord.ca_present", test=test, name="mail:tls:ca")
        assert (ret["result"], ret["changes"]) == (True, {}), ret
        assert ret["comment"] == f"{path} holds 1 certificate(s) for ldirectord's https checks to trust"
    ret = LocalMinion(tmp_path / "noca", with_ca(pillar, None), "lb1").state("mailha_ldirectord.ca_present",
                                                                             name="mail:tls:ca")
    assert (ret["result"], ret["changes"]) == (True, {}) and "trust the system store" in ret["comment"]


def test_ca_dropin_written_updated_and_emptied(tmp_path, pillar):
    path = tmp_path / "root" / DROPIN
    minion = LocalMinion(tmp_path, with_ca(pillar), "lb1")
    test, applied = converge(minion, "mailha_site.rendered", name="/" + DROPIN, artifact="ldirectord-ca")
    assert test["result"] is None and test["comment"] == f"would create {path}"
    assert f"+Environment=PERL_LWP_SSL_CA_FILE={CA}" in test["changes"]["diff"]
    assert applied["result"] is True and applied["changes"]["new"] == {"mode": "0644", "lines": 6}
    site = load_site(with_ca(pillar))
    assert path.read_text() == lb.render_ldirectord_ca_dropin(site, site.node("lb1")) and modes(path) == 0o644
    # ca taken out of the pillar: the setting goes (test=True first: shows it, changes nothing)
    minion = LocalMinion(tmp_path, with_ca(pillar, None), "lb1")
    before = path.read_text()
    test, applied = converge(minion, "mailha_site.rendered", name="/" + DROPIN, artifact="ldirectord-ca")
    assert test["result"] is None and f"-Environment=PERL_LWP_SSL_CA_FILE={CA}" in test["changes"]["diff"]
    assert applied["result"] is True and "Environment=" not in path.read_text() and path.read_text() != before


def test_formula_writes_no_dropin_without_the_ca_file(tmp_path, pillar):
    """lb.sls (a rehearsal: files only) with mail:tls:ca set but the file absent: the CA check fails
    and the drop-in is not written, in both modes; once the file is there, everything applies."""
    from tests.support import tls

    minion = formula_minion(tmp_path, with_ca(pillar))
    dropin = minion.root / DROPIN
    for test in (True, False):
        ret = apply_lb(minion, test=test)
        assert ret["mailha-ldirectord-ca"]["result"] is False
        assert "No such file or directory" in ret["mailha-ldirectord-ca"]["comment"]
        assert ret["mailha-file-ldirectord-ca"]["result"] is False
        assert "requisite failed" in ret["mailha-file-ldirectord-ca"]["comment"]
        assert not dropin.exists()
    assert (minion.root / "etc/ha.d/ldirectord.cf").exists()  # the rest of the formula went on
    cert, _ = tls.snakeoil(tmp_path / "tls")
    (minion.root / "etc/ssl").mkdir(parents=True)
    shutil.copy(cert, minion.root / CA.lstrip("/"))
    ret = apply_lb(minion, test=True)
    assert ret["mailha-ldirectord-ca"]["result"] is True and ret["mailha-file-ldirectord-ca"]["result"] is None
    assert not dropin.exists()
    ret = apply_lb(minion)
    assert all(v["result"] is True for v in ret.values()), ret
    assert f"Environment=PERL_LWP_SSL_CA_FILE={CA}\n" in dropin.read_text()
    for test in (True, False):
        assert all(v["result"] is True and not v["changes"] for v in apply_lb(minion, test=test).values())


def test_formula_restarts_ldirectord_after_a_daemon_reload(tmp_path, pillar):
    """What lb.sls compiles to on a real balancer (no scratch root; state.show_sls runs nothing):
    the drop-in waits for the CA check; a changed drop-in triggers a systemd daemon-reload, which
    ldirectord's restart waits for (systemd 252 does not flag a new drop-in directory itself)."""
    import yaml

    minion = formula_minion(tmp_path, with_ca(pillar))
    conf = minion.conf / "minion"
    opts = yaml.safe_load(conf.read_text())
    del opts["mailha_root"]
    conf.write_text(yaml.safe_dump(opts))
    rc, data, text = minion.call("state.show_sls", "mailha.lb")
    assert rc == 0 and isinstance(data, dict), text[-3000:]

    def reqs(sid, kind):
        (fun_args,) = [v for k, v in data[sid].items() if not k.startswith("__")]
        return [r for item in fun_args if isinstance(item, dict) for r in item.get(kind, [])]

    assert reqs("mailha-ldirectord-ca", "require_in") == [{"mailha_site": "mailha-file-ldirectord-ca"}]
    reload = data["mailha-ldirectord-unit-reload"]["module"]
    assert {"service.systemctl_reload": []} in reload
    assert reqs("mailha-ldirectord-unit-reload", "onchanges") == [{"mailha_site": "mailha-file-ldirectord-ca"}]
    assert {"module": "mailha-ldirectord-unit-reload"} in reqs("mailha-service-ldirectord", "require")
    assert {"mailha_ldirectord": "mailha-ldirectord-ca"} in reqs("mailha-service-ldirectord", "require")
    assert {"mailha_site": "mailha-file-ldirectord-ca"} in reqs("mailha-service-ldirectord", "watch")
