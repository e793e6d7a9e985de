"""The pip-only install, as an operator without a clone does it: the wheel built from this
checkout goes into a fresh venv, and a real salt-master and two salt-minions are started from
that venv only (its own interpreter and scripts, cwd outside the repository, no file_roots).

The master serves the formula and the reactor files through the package's ``mailha``
fileserver backend (``fileserver_backend: [mailha]``); the reactor config names
``salt://mailha/reactor/health.sls``. The tests apply the formula in a rehearsal root, then let a
stopped mail service travel beacon -> reactor -> runner -> drain on both balancers and MX
withdrawal on a real named, and back; and read ``salt-run mailha.status`` as a table and as JSON.

A second test installs the wheel into a venv that already has Salt 3006 and checks that Salt
stays (``salt>=3006`` never replaces an operator's Salt) and that the package loads there.

The same wheel carries no lab; ``lab/`` builds its own wheel (salt-mailha-lab, ``mailha-lab``).
"""

import json
import pathlib
import socket
import subprocess
import zipfile

import pytest
import yaml

from salt_mailha.core.model import load_site
from tests.integration.remediation import cluster
from tests.support import saltvenv
from tests.support.daemon import Daemon, wait_until
from tests.support.named import NamedServer, free_port

pytestmark = pytest.mark.integration

BALANCERS = ("lb1", "lb2")
FAKEBIN = pathlib.Path(cluster.__file__).resolve().parent / "fakebin"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    return saltvenv.build_wheel(tmp_path_factory.mktemp("wheel"))


@pytest.fixture(scope="module")
def wheel_venv(wheel, tmp_path_factory):
    """A fresh venv holding the wheel and its dependencies (Salt of the line this run is on)."""
    return saltvenv.create(tmp_path_factory.mktemp("wheel-venv") / "venv", saltvenv.running_line(),
                           str(wheel))


def _bin(venv, name):
    return str(pathlib.Path(venv) / "bin" / name)


def _free_tcp_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Site:
    """Master + lb1 + lb2 from the wheel venv, a real named, mail services on loopback."""

    def __init__(self, venv, base, named):
        self.venv, self.base, self.named = pathlib.Path(venv), pathlib.Path(base), named
        self.pillar = cluster.site_pillar(named)
        services = self.pillar["mailha"]["services"]
        # ports of our own: the remediation tier's session may hold the site's fixed ports
        services["imap"]["port"] = free_port("127.0.0.17")
        services["smtp"]["port"] = free_port("127.0.0.17")
        self.listeners = {}
        for node in ("mail1", "mail2"):
            addr = cluster.node_address(self.pillar, node)
            self.listeners[node] = {
                "imap": cluster.ServiceListener(addr, services["imap"]["port"],
                                                b"* OK Dovecot ready.\r\n"),
                "smtp": cluster.ServiceListener(addr, services["smtp"]["port"],
                                                b"220 mail ESMTP Postfix\r\n"),
            }
        self.roots = self.base / "roots"
        self.daemons = []
        self.master_conf = self.base / "master-etc"
        self.pub_port, self.ret_port = _free_tcp_port(), _free_tcp_port()

    # -- configuration -------------------------------------------------------------------
    def write_master(self):
        cluster.write_pillar(self.base / "pillar", self.pillar)
        self.master_conf.mkdir(parents=True)
        reactor = "salt://mailha/reactor/health.sls"
        conf = {
            "id": "wheel-master", "root_dir": str(self.base / "master-root"), "user": "root",
            "interface": "127.0.0.1", "publish_port": self.pub_port, "ret_port": self.ret_port,
            "auto_accept": True, "log_level_logfile": "info",
            "fileserver_backend": ["mailha"],  # no file_roots: the formula comes from the wheel
            "pillar_roots": {"base": [str(self.base / "pillar")]},
            "reactor": [{"salt/beacon/*/mailha_health/mailha/health/*": [reactor]}],
        }
        (self.master_conf / "master").write_text(yaml.safe_dump(conf))

    def write_minion(self, mid):
        etc = self.base / f"{mid}-etc"
        etc.mkdir(parents=True)
        conf = {
            "id": mid, "root_dir": str(self.base / f"{mid}-root"), "user": "root",
            "master": "127.0.0.1", "master_port": self.ret_port, "publish_port": self.pub_port,
            "log_level_logfile": "info", "loop_interval": 1, "acceptance_wait_time": 1,
            # live although rooted: the reactor's MX withdrawal must reach the test's named
            "mailha_root": str(self.roots / mid), "mailha_live": True,
            "beacons": {"mailha_health": [{"interval": 1}, {"timeout": 0.5}]},
        }
        (etc / "minion").write_text(yaml.safe_dump(conf))
        return etc

    # -- processes -------------------------------------------------------------------------
    def start(self):
        for per in self.listeners.values():
            for listener in per.values():
                listener.start()
        self.write_master()
        env = saltvenv.clean_env(self.venv)
        master = Daemon("salt-master", [_bin(self.venv, "salt-master"), "-c", self.master_conf,
                                        "-l", "warning"], self.base / "master.out", env=env,
                        cwd=self.base).start()
        self.daemons.append(master)
        site = load_site(self.pillar)
        for mid in BALANCERS:
            etc = self.write_minion(mid)
            benv = cluster.prepare_balancer(self.roots, mid, site)
            menv = dict(env, MAILHA_FAKE_IPVS=benv["MAILHA_FAKE_IPVS"],
                        PATH=f"{FAKEBIN}:{env['PATH']}")
            self.daemons.append(Daemon(mid, [_bin(self.venv, "salt-minion"), "-c", etc, "-l",
                                             "warning"], self.base / f"{mid}.out", env=menv,
                                       cwd=self.base).start())
        wait_until(lambda: self.ping() == set(BALANCERS), 120, interval=1,
                   what="lb1 and lb2 answering test.ping")

    def stop(self):
        for d in reversed(self.daemons):
            d.stop()
        for per in self.listeners.values():
            for listener in per.values():
                listener.stop()

    # -- commands, all through the wheel venv's own scripts ------------------------------------
    def salt(self, *args, timeout=120):
        proc = subprocess.run([_bin(self.venv, "salt"), "-c", str(self.master_conf), "--out=json",
                               "--static", *map(str, args)], capture_output=True, text=True,
                              timeout=timeout + 30, env=saltvenv.clean_env(self.venv),
                              cwd=self.base)
        return json.loads(proc.stdout) if proc.stdout.strip() else {}

    def ping(self):
        return {m for m, ok in self.salt("*", "test.ping", "--timeout=5", timeout=10).items() if ok}

    def salt_run(self, *args, timeout=120):
        return subprocess.run([_bin(self.venv, "salt-run"), "-c", str(self.master_conf),
                               *map(str, args)], capture_output=True, text=True, timeout=timeout,
                              env=saltvenv.clean_env(self.venv), cwd=self.base)

    def drained(self, node):
        addr = cluster.node_address(self.pillar, node)
        return {lb for lb in BALANCERS if addr in cluster.maintenance_files(self.roots, lb)}

    def mx_of(self, node):
        return any(r.endswith(f" {node}.example.net.") for r in self.named.query("example.net", "MX"))


@pytest.fixture(scope="module")
def wheel_site(wheel_venv, tmp_path_factory):
    base = tmp_path_factory.mktemp("wheel-site")
    named = NamedServer(base / "named", zone="example.net", key_name="mailha-update").start()
    site = Site(wheel_venv, base, named)
    try:
        site.start()
        yield site
    finally:
        site.stop()
        named.stop()


def test_wheel_carries_formula_reactor_and_examples(wheel_venv):
    """The installed package, not a checkout: its data root is inside the venv."""
    proc = saltvenv.run([saltvenv.python(wheel_venv), "-m", "salt_mailha.data"], timeout=60,
                        venv=wheel_venv, cwd="/")
    paths = dict(line.split(": ", 1) for line in proc.stdout.splitlines())
    for key in ("file_roots", "reactor", "examples", "pillar_example"):
        assert paths[key].startswith(str(wheel_venv)), paths
    root = pathlib.Path(paths["file_roots"])
    assert (root / "mailha" / "init.sls").is_file() and (root / "mailha" / "orch").is_dir()
    assert {p.name for p in pathlib.Path(paths["reactor"]).glob("*.sls")} >= {"health.sls",
                                                                               "presence.sls"}
    assert (pathlib.Path(paths["examples"]) / "master.d" / "mailha.conf").is_file()
    assert (pathlib.Path(paths["pillar_example"]) / "mailha.sls").is_file()


def _wheel_contents(wheel):
    """(file names, entry_points.txt text) of a built wheel."""
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        eps = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        return names, "".join(zf.read(n).decode() for n in eps)


def test_runtime_wheel_carries_no_lab(wheel):
    """An operator's ``pip install salt-mailha`` gets no lab: it is its own distribution."""
    names, entry_points = _wheel_contents(wheel)
    assert "salt_mailha/__init__.py" in names
    lab = [n for n in names if n.startswith(("salt_mailha_lab/", "salt_mailha/lab/", "lab/"))]
    assert not lab, lab
    assert "mailha-lab" not in entry_points, entry_points


def test_lab_wheel_carries_the_lab_and_its_script(tmp_path):
    """``lab/`` builds the salt-mailha-lab wheel: the package, its README and ``mailha-lab``."""
    lab = saltvenv.build_wheel(tmp_path, project=saltvenv.REPO / "lab", dist="salt_mailha_lab")
    names, entry_points = _wheel_contents(lab)
    assert {"salt_mailha_lab/cli.py", "salt_mailha_lab/README.md"} <= set(names), names
    assert not [n for n in names if n.startswith("salt_mailha/")], names
    assert "mailha-lab = salt_mailha_lab.cli:main" in entry_points, entry_points
    with zipfile.ZipFile(lab) as zf:
        (meta,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        assert "Requires-Dist: salt-mailha\n" in zf.read(meta).decode()


def test_daemons_run_from_the_wheel_venv_only(wheel_site):
    venv = str(wheel_site.venv)
    for d in wheel_site.daemons:
        assert d.running(), d.log()
        # the libraries mapped into the daemon are the wheel venv's, never the test venv's
        maps = pathlib.Path(f"/proc/{d.pid}/maps").read_text()
        assert f"{venv}/lib/" in maps, d.name
        assert str(saltvenv.REPO) not in maps, d.name
    versions = wheel_site.salt("*", "test.version")
    assert versions == {m: saltvenv.installed_version(venv, "salt") for m in BALANCERS}
    listed = wheel_site.salt("lb1", "cp.list_master")["lb1"]
    assert {"mailha/init.sls", "mailha/lb.sls", "mailha/reactor/health.sls",
            "mailha/examples/minion.d/mailha.conf"} <= set(listed)


def test_state_apply_mailha_in_a_rehearsal_root(wheel_site):
    s = wheel_site
    # the DNS updater (lb1) owns the site's records first, as in the remediation tier
    ret = s.salt("lb1", "mailha_dns.records", "take_over=True")["lb1"]
    assert ret.get("result") is True, ret
    root = s.roots / "lb2"  # lb2's rehearsal root (its minion config names the same one)
    ret = s.salt("lb2", "state.apply", "mailha", f'pillar={{"mailha_root": "{root}"}}',
                 timeout=300)["lb2"]
    assert isinstance(ret, dict) and ret, ret
    failed = {k: v["comment"] for k, v in ret.items() if v["result"] is not True}
    assert not failed, failed
    assert (root / "etc" / "keepalived" / "keepalived.conf").is_file()
    assert (root / "etc" / "ha.d" / "ldirectord.cf").is_file()
    again = s.salt("lb2", "state.apply", "mailha", f'pillar={{"mailha_root": "{root}"}}',
                   timeout=300)["lb2"]
    assert all(v["result"] is True and not v["changes"] for v in again.values()), again


def test_reactor_from_the_package_drains_and_restores(wheel_site):
    s = wheel_site
    assert s.salt("lb1", "mailha_dns.records", "take_over=True")["lb1"].get("result") is True
    wait_until(lambda: s.mx_of("mail1") and s.mx_of("mail2") and not s.drained("mail1"), 60,
               what="both MX present, mail1 in service")
    s.listeners["mail1"]["imap"].stop()
    try:
        wait_until(lambda: s.drained("mail1") == set(BALANCERS) and not s.mx_of("mail1"), 90,
                   interval=0.5, what="mail1 drained on lb1 and lb2 and its MX withdrawn "
                                      "(beacon -> salt://mailha/reactor/health.sls -> runner)")
        assert s.drained("mail2") == set() and s.mx_of("mail2"), "mail2 untouched"
    finally:
        s.listeners["mail1"]["imap"].start()
    wait_until(lambda: s.drained("mail1") == set() and s.mx_of("mail1"), 90, interval=0.5,
               what="mail1 restored on both balancers and its MX back")


def test_status_runner_prints_a_table_and_json(wheel_site):
    s = wheel_site
    text = s.salt_run("mailha.status")
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert lines[0] == "site remtest", text.stdout
    assert lines[1].split()[:3] == ["node", "roles", "health"], text.stdout
    row = next(line.split() for line in lines if line.startswith("mail1 "))
    assert row[1] == "mail" and row[2] == "ok", text.stdout
    structured = s.salt_run("mailha.status", "--out=json")
    assert structured.returncode == 0, structured.stderr
    data = json.loads(structured.stdout)
    assert data["site"] == "remtest"
    assert data["columns"][:2] == ["roles", "health"] and "weight@lb1" in data["columns"]
    assert data["nodes"]["mail1"]["health"] == "ok" and data["nodes"]["mail1"]["mx"] == "yes"
    assert data["nodes"]["lb1"]["roles"] == "lb"
    assert s.named.secret not in text.stdout + structured.stdout


def test_wheel_leaves_an_installed_salt_3006_in_place(wheel, tmp_path):
    """An operator's venv with Salt 3006: ``pip install`` of the wheel keeps that Salt (no pin,
    no upgrade) and the package loads there, formula included."""
    want = saltvenv.salt_version("3006")
    venv = saltvenv.create(tmp_path / "venv", "3006", f"salt=={want}")
    assert saltvenv.installed_version(venv, "salt") == want
    saltvenv.run([saltvenv.python(venv), "-m", "pip", "install", "-q", str(wheel)], timeout=600,
                 venv=venv)
    assert saltvenv.installed_version(venv, "salt") == want
    assert saltvenv.installed_version(venv, "salt-mailha")
    saltvenv.run([saltvenv.python(venv), "-m", "pip", "check"], timeout=120, venv=venv)
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "minion").write_text(yaml.safe_dump({
        "id": "db1", "file_client": "local", "root_dir": str(tmp_path / "root"),
        "fileserver_backend": ["mailha"]}))
    call = [_bin(venv, "salt-call"), "-c", str(etc), "--out=json"]
    mods = json.loads(saltvenv.run(call + ["sys.list_modules", "mailha_*"], timeout=120,
                                   venv=venv, cwd=tmp_path).stdout)["local"]
    assert {"mailha_site", "mailha_dns", "mailha_health"} <= set(mods)
    listed = json.loads(saltvenv.run(call + ["cp.list_master"], timeout=120, venv=venv,
                                     cwd=tmp_path).stdout)["local"]
    assert "mailha/init.sls" in listed
    states = json.loads(saltvenv.run(call + ["sys.list_state_modules", "mailha_*"], timeout=120,
                                     venv=venv, cwd=tmp_path).stdout)["local"]
    assert {"mailha_site", "mailha_dns", "mailha_ldirectord"} <= set(states)
    # beacons, runner, outputter: through that Salt's loader (beacons.list_available asks a
    # running minion daemon on 3006, which salt-call --local does not have)
    script = (
        "import json, salt.config, salt.loader\n"
        f"opts = salt.config.minion_config({str(etc / 'minion')!r})\n"
        "mopts = salt.config.master_config(None)\n"
        "print(json.dumps({'beacons': sorted(salt.loader.beacons(opts, salt.loader.minion_mods(opts))),\n"
        "                  'runners': sorted(salt.loader.runner(mopts)),\n"
        "                  'outputters': sorted(salt.loader.outputters(mopts))}))\n")
    loaded = json.loads(saltvenv.run([saltvenv.python(venv), "-c", script], timeout=300,
                                     venv=venv, cwd=tmp_path).stdout.splitlines()[-1])
    assert {"mailha_health.beacon", "mailha_local.beacon"} <= set(loaded["beacons"])
    assert {"mailha.status", "mailha.remediate"} <= set(loaded["runners"])
    assert "mailha_status" in loaded["outputters"]
