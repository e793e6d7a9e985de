"""The real lab: ``mailha-lab up``, ``up`` again, ``status``, a one-node drill, ``down`` twice.

Boots every pillar node as a systemd-nspawn container (real systemd inside), a salt-master in
the bridge namespace and runs ``state.apply mailha``. Cold (no cached base tree) it debootstraps
first. Slow: minutes, dominated by the formula's own waits.
"""
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys

import pytest

from salt_mailha.lab import network
from salt_mailha.lab.util import PREFIX, RUN_DIR

# cold, the first test also builds the base tree: allow more than the suite default
pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(2400)]

CLI = [sys.executable, "-m", "salt_mailha.lab.cli"]
OUTPUTS = []  # every CLI output of this module, grepped for secrets before ``down``


def _need():
    if os.geteuid() != 0:
        return "needs root (namespaces, overlay mounts, systemd-nspawn)"
    for tool in ("systemd-nspawn", "debootstrap", "nsenter"):
        if not shutil.which(tool):
            return f"{tool} missing: run scripts/setup-host.sh"
    if (RUN_DIR / "lab.json").exists():
        return f"a lab is already up in {RUN_DIR}; run 'mailha-lab down' first"
    return None


def lab(*args, timeout=3600):
    proc = subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout)
    OUTPUTS.append(proc.stdout + proc.stderr)
    return proc.returncode, proc.stdout + proc.stderr


def status_rows(text):
    """``{node: row-dict}`` from the status table."""
    lines = text.splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("node "))
    cols = lines[head].split()
    rows = {}
    for line in lines[head + 2:]:
        if not line.strip() or line.startswith("master:"):
            break
        cells = line.split()
        rows[cells[0]] = dict(zip(cols, cells, strict=False))
    return rows


@pytest.fixture(scope="module")
def up_lab():
    reason = _need()
    if reason:
        pytest.skip(reason)
    try:
        code, out = lab("up")
        yield code, out
    finally:
        lab("down")


def test_up_boots_every_node_with_systemd_and_a_minion(up_lab):
    code, out = up_lab
    assert code == 0, out  # 2 would mean: the lab is up but state.apply failed on some node
    nodes = json.loads((RUN_DIR / "lab.json").read_text())["nodes"]
    rows = status_rows(out)
    assert set(rows) == set(nodes)
    for row in rows.values():
        assert row["container"] == "running", out
        assert row["systemd"] in ("running", "degraded"), out
        assert row["minion"] == "up", out
        assert row["state.apply"] == "ok", out  # every node converged by `state.apply mailha`
    assert "total" in out.splitlines()[-1]


def test_nodes_run_real_systemd_in_their_own_netns(up_lab):
    from salt_mailha.lab.lab import Lab

    node = Lab().node("lb1")
    assert node.exec(["systemd-detect-virt"]).stdout.strip() == "systemd-nspawn"
    assert node.exec(["cat", "/proc/1/comm"]).stdout.strip() == "systemd"
    addrs = node.exec(["ip", "-o", "-4", "addr", "show"]).stdout
    assert " 10.99.0.13/24 " in addrs and " 10.99.1.13/24 " in addrs
    # the host's own interfaces are untouched: no lab address in the root namespace
    assert "10.99." not in subprocess.run(["ip", "-o", "addr"], capture_output=True,
                                          text=True).stdout


def test_up_again_is_idempotent(up_lab):
    code, out = lab("up")
    assert code == 0, out
    assert "base tree: cached" in out
    assert "0 started, 8 already running" in out
    # the formula converged the first time: the second state.apply changes nothing anywhere
    rows = status_rows(out)
    assert len(rows) == 8
    for row in rows.values():
        assert row["state.apply"] == "ok", out
    assert all(", 0 changed, 0 failed" in line for line in out.splitlines()
               if line.split(" ", 1)[0] in rows and "states," in line), out


def drill_rows(text):
    """``[(node, check, while down, recovered in, after return)]`` from the drill's table."""
    lines = text.splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("node ") and "check" in line)
    rows = []
    for line in lines[head + 2:]:
        cells = re.split(r"\s{2,}", line.strip())
        if len(cells) < 5:
            break
        rows.append(tuple(cells[:5]))
    return rows


def test_drill_kills_every_node_once_and_the_site_keeps_serving(up_lab):
    code, out = lab("drill", timeout=2400)  # default mode: kill (a power cut), every node
    assert code == 0, out
    rows = drill_rows(out)
    nodes = json.loads((RUN_DIR / "lab.json").read_text())["nodes"]
    for node in nodes:
        mine = {r[1]: r for r in rows if r[0] == node}
        assert mine["node unreachable"][2] == "pass", out
        assert mine["node returns (minion answers)"][2] == "pass", out
        # the tiers' checks ran (not skipped) while each node was down, and after it came back
        for check in ("mail: SMTP accepts, IMAPS reads", "sql write on a db member",
                      "ldap write on a server", "MX follows the mail nodes"):
            assert check in mine, out
            expected = ("n/a",) if node == "ns1" and check.startswith("MX") else ("pass",)
            assert mine[check][2].startswith(expected), out
            assert mine[check][4] == "pass", out
    assert not [r for r in rows if "FAIL" in " ".join(r)], out
    # container balancers have no IPVS: every VIP check is reported skipped, never passed
    vips = [r for r in rows if r[1].startswith("vip ")]
    assert vips and all(r[0] == "*" and r[2].startswith("skipped: needs IPVS") for r in vips), out


def test_no_secret_in_lab_output_or_logs(up_lab):
    import yaml

    from salt_mailha.core.model import load_site

    site = load_site(yaml.safe_load((RUN_DIR / "master/pillar/mailha.sls").read_text()))
    values = [s.reveal() for s in site.secrets() if s.reveal()]
    assert values
    # the drill's own SQL and mailbox passwords, too
    values += [p.read_text().strip() for p in RUN_DIR.glob("drill-*-password")]
    assert len(list(RUN_DIR.glob("drill-*-password"))) == 2
    code, out = lab("status")
    assert code == 0, out
    logs = [*(RUN_DIR / "logs").glob("*.log"), RUN_DIR / "master/root/var/log/salt/master",
            *RUN_DIR.glob("nodes/*/upper/var/log/salt/minion")]
    texts = list(OUTPUTS) + [p.read_text(errors="replace") for p in logs if p.exists()]
    for text in texts:
        assert not [v for v in values if v in text]


def test_down_removes_everything_and_is_safe_twice(up_lab):
    for _ in range(2):
        code, out = lab("down")
        assert code == 0, out
    assert not any(n.startswith(PREFIX + "-") for n in network.existing_netns())
    with open("/proc/self/mountinfo") as fh:
        assert str(RUN_DIR) not in fh.read()
    assert not pathlib.Path(RUN_DIR).exists()
