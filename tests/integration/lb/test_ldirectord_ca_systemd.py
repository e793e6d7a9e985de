"""lb.sls on a balancer with real systemd (252, Debian 12): one systemd-nspawn container booted from
the lab's base tree (read-only lower layer of an overlay; no network but lo), ``salt-call --local
state.apply mailha.lb`` inside, and ldirectord's own process environment read from /proc.

It starts like a balancer of the previous formula version: ldirectord running, no drop-in
directory. systemd 252 does not flag a unit whose drop-in directory is new as needing a reload
(systemd#31752; measured on this image: NeedDaemonReload=no), so without lb.sls's explicit daemon-reload
Salt's provider would restart ldirectord with the old environment. Then: ``mail:tls:ca`` set
(test=True changes nothing; apply restarts ldirectord with PERL_LWP_SSL_CA_FILE; again: no
change), a CA file missing (the check fails, ldirectord is neither reconfigured nor restarted),
``ca`` removed (restart without the variable). keepalived fails here (no eth0): not checked.
"""
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pytest
import yaml

from salt_mailha.core.model import parse_site
from salt_mailha_lab.nodes import Node
from salt_mailha_lab.util import CACHE_DIR
from tests.integration.lb.conftest import ROOT, lab_pillar
from tests.support.daemon import pid_alive, wait_until

BASE = CACHE_DIR / "base"
SNAKEOIL = "/etc/ssl/certs/ssl-cert-snakeoil.pem"
DROPIN_DIR = "/etc/systemd/system/ldirectord.service.d"

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,  # about 100 s: seven salt-call runs in the container
    pytest.mark.skipif(os.geteuid() != 0, reason="systemd-nspawn and overlay mounts need root"),
    pytest.mark.skipif(not shutil.which("systemd-nspawn"),
                       reason="systemd-nspawn missing: apt-get install systemd-container"),
]


class Balancer:
    def __init__(self, pillar):
        self.dir = Path(tempfile.mkdtemp(prefix="mailha-ldca-"))
        self.merged = self.dir / "merged"
        self.pillar = pillar
        self.proc = None
        self.outputs = []

    def boot(self):
        upper, work, m = self.dir / "upper", self.dir / "work", self.merged
        for d in (upper, work, m):
            d.mkdir()
        subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                        f"lowerdir={BASE},upperdir={upper},workdir={work}", m], check=True)
        (m / "etc/hostname").write_text("lb1\n")
        (m / "etc/machine-id").write_text(uuid.uuid4().hex + "\n")
        Node._register_package(m)  # the lab's way to make the bind-mounted package importable
        (m / "etc/systemd/system/salt-minion.service").unlink(missing_ok=True)
        (m / "etc/systemd/system/salt-minion.service").symlink_to("/dev/null")  # no master here
        (m / "srv/pillar").mkdir(parents=True)
        (m / "srv/pillar/top.sls").write_text("base:\n  '*':\n    - mailha\n")
        (m / "etc/salt/minion.d").mkdir(parents=True, exist_ok=True)
        (m / "etc/salt/minion.d/test.conf").write_text(
            "id: lb1\nfile_client: local\nfile_roots: {base: [/srv/states]}\npillar_roots: {base: [/srv/pillar]}\n")
        argv = ["systemd-nspawn", "--quiet", "--directory", str(m), "--machine", f"mhldca{uuid.uuid4().hex[:6]}",
                "--boot", "--register=no", "--keep-unit", "--link-journal=no", "--resolv-conf=off", "--timezone=off",
                "--private-network", "--console=read-only",
                f"--bind-ro={ROOT / 'salt_mailha'}:/opt/salt-mailha/salt_mailha", f"--bind-ro={ROOT / 'states'}:/srv/states"]
        with open(self.dir / "console.log", "ab") as out:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True)
        wait_until(lambda: self.exec("systemctl", "is-system-running", check=False) in ("running", "degraded"),
                   90, interval=0.5, what="systemd up in the container")

    def leader(self):
        try:
            return Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()[0]
        except (OSError, IndexError):
            return None

    def exec(self, *argv, check=True):
        leader = self.leader()
        if leader is None:
            if self.proc.poll() is not None:
                raise RuntimeError(f"systemd-nspawn exited; see {self.dir / 'console.log'}")
            return None
        proc = subprocess.run(["nsenter", "-t", leader, "-a", "--", *argv], capture_output=True, text=True,
                              timeout=300, check=False)
        if check and proc.returncode != 0:
            raise AssertionError(f"{argv}: rc={proc.returncode}\n{proc.stdout}{proc.stderr}")
        return proc.stdout.strip()

    def apply(self, ca=None, test=False):
        pillar = json.loads(json.dumps(self.pillar))
        if ca is not None:
            pillar["mailha"]["mail"]["tls"]["ca"] = ca
        (self.merged / "srv/pillar/mailha.sls").write_text(yaml.safe_dump(pillar))
        out = self.exec("/opt/salt/bin/salt-call", "--local", "--out", "json", "-l", "quiet", "state.apply",
                        "mailha.lb", *(["test=True"] if test else []), check=False)
        self.outputs.append(out)
        return {v["__id__"]: v for v in json.loads(out)["local"].values() if "keepalived" not in v["__id__"]}

    def ldirectord(self):
        """(main pid, PERL_LWP_SSL_CA_FILE in its environment or None)."""
        pid = self.exec("systemctl", "show", "-p", "MainPID", "--value", "ldirectord")
        env = dict(v.split("=", 1) for v in self.exec("cat", f"/proc/{pid}/environ").split("\0") if "=" in v)
        return int(pid), env.get("PERL_LWP_SSL_CA_FILE")

    def close(self):
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            deadline = time.monotonic() + 30
            while pid_alive(self.proc.pid) and self.proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.2)
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if os.path.ismount(self.merged):
            subprocess.run(["umount", self.merged], check=False)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def balancer():
    # Checked when the test runs, not at collection: in README's test command the lab test
    # (tests/integration/lab, which runs first) builds the base tree; a skip would hide this test.
    if not (BASE / "opt/salt/bin/salt-call").exists() or not (BASE / SNAKEOIL.lstrip("/")).exists():
        pytest.fail(f"no lab base tree in {BASE}: build it once with mailha-lab up (lab/salt_mailha_lab/README.md)")
    pillar = lab_pillar("10.99.83")
    pillar["mailha"]["mail"]["tls"] = {"cert": SNAKEOIL, "key": "/etc/ssl/private/ssl-cert-snakeoil.key"}
    b = Balancer(pillar)
    try:
        b.boot()
        yield b
    finally:
        b.close()


def test_ldirectord_restarts_with_the_site_ca(balancer):
    b = balancer
    ret = b.apply()
    assert all(v["result"] is True for v in ret.values()), ret
    # a balancer of the previous formula: ldirectord running, no drop-in directory
    b.exec("rm", "-r", DROPIN_DIR)
    b.exec("systemctl", "daemon-reload")
    pid, ca = b.ldirectord()
    assert pid and ca is None

    ret = b.apply(ca=SNAKEOIL, test=True)
    assert ret["mailha-file-ldirectord-ca"]["result"] is None
    assert ret["mailha-ldirectord-unit-reload"]["result"] is None
    assert ret["mailha-service-ldirectord"]["comment"] == "Service is set to be restarted"
    assert not (b.merged / DROPIN_DIR.lstrip("/")).exists() and b.ldirectord() == (pid, None)

    ret = b.apply(ca=SNAKEOIL)
    assert all(v["result"] is True for v in ret.values()), ret
    assert ret["mailha-ldirectord-unit-reload"]["changes"] == {"service.systemctl_reload": True}
    new_pid, ca = b.ldirectord()
    assert new_pid != pid and ca == SNAKEOIL

    for test in (True, False):
        ret = b.apply(ca=SNAKEOIL, test=test)
        assert all(v["result"] is True and not v["changes"] for v in ret.values()), ret
    assert b.ldirectord() == (new_pid, SNAKEOIL)

    # a CA the balancer does not have: the check fails; nothing is rewritten or restarted
    ret = b.apply(ca="/etc/ssl/certs/mailha-missing.pem")
    assert ret["mailha-ldirectord-ca"]["result"] is False
    assert "mailha-missing.pem (pillar mailha:mail:tls:ca): No such file or directory" in \
        ret["mailha-ldirectord-ca"]["comment"]
    assert ret["mailha-service-ldirectord"]["result"] is False
    assert "requisite failed" in ret["mailha-service-ldirectord"]["comment"]
    assert b.ldirectord() == (new_pid, SNAKEOIL)

    # ca taken out of the pillar: ldirectord goes back to the system store
    ret = b.apply()
    assert all(v["result"] is True for v in ret.values()), ret
    last_pid, ca = b.ldirectord()
    assert last_pid != new_pid and ca is None

    secrets = [s.reveal() for s in parse_site(b.pillar["mailha"]).secrets()]
    assert not [s for s in secrets if any(s in out for out in b.outputs)], "a pillar secret in salt-call output"
