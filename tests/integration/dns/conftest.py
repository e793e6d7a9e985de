"""Fixtures of the DNS tier: a real named with a dynamic zone, and a real ``salt-call --local``
minion (the pillar's updater, ns1) whose pillar is the example site pointed at that named."""
import copy
import json
import pathlib
import subprocess
import sys

import pytest
import yaml

from salt_mailha import data as mailha_data
from tests.support.named import NamedServer

REPO = pathlib.Path(__file__).resolve().parents[3]
SALT_CALL = pathlib.Path(sys.executable).with_name("salt-call")
EXAMPLE = mailha_data.example_pillar()


def site_pillar(named, **dns_overrides):
    """The example pillar with its dns servers/secret pointed at ``named`` (plus overrides)."""
    pillar = named.point_pillar(EXAMPLE)
    pillar["mailha"]["dns"].update(copy.deepcopy(dns_overrides))
    return pillar


class Minion:
    """``salt-call --local`` as node ns1, with a pillar we can rewrite between calls.

    ``live`` (minion config ``mailha_live``): True sends the records to the test's own named
    although files go under a scratch root; False is a plain rehearsal, which sends nothing."""

    def __init__(self, base, pillar, live=True):
        self.base = pathlib.Path(base)
        self.conf = self.base / "conf"
        self.pillar_dir = self.base / "pillar"
        self.log = self.base / "minion.log"
        self.conf.mkdir(parents=True, exist_ok=True)
        self.pillar_dir.mkdir(exist_ok=True)
        (self.pillar_dir / "top.sls").write_text("base:\n  '*':\n    - mailha\n")
        (self.conf / "minion").write_text(yaml.safe_dump({
            "id": "ns1",
            "file_client": "local",
            "file_roots": {"base": [str(REPO / "states")]},
            "pillar_roots": {"base": [str(self.pillar_dir)]},
            "root_dir": str(self.base / "salt"),
            # a rehearsal: role dns's BIND files go under this scratch root and no service of this
            # host is touched; mailha_live opts in to sending the records to the test's own named
            # (pillar dns:servers), which a rehearsal alone never does
            "mailha_root": str(self.base / "root"),
            "mailha_live": live,
            "log_file": str(self.log),
            "log_level_logfile": "debug",
        }))
        self.outputs = []
        self.set_pillar(pillar)

    def set_pillar(self, pillar):
        (self.pillar_dir / "mailha.sls").write_text(yaml.safe_dump(pillar))

    def call(self, *args):
        """Run one salt-call; returns (returncode, the 'local' return)."""
        proc = subprocess.run(
            [str(SALT_CALL), "--local", "-c", str(self.conf), "--out", "json", "-l", "quiet", *args],
            capture_output=True, text=True, timeout=120,
        )
        self.outputs.append(proc.stdout + proc.stderr)
        try:
            return proc.returncode, json.loads(proc.stdout)["local"]
        except (ValueError, KeyError):
            pytest.fail(f"salt-call {args} gave no JSON (rc={proc.returncode}):\n{proc.stdout}{proc.stderr}")

    def state(self, test=False, **kwargs):
        """``state.single mailha_dns.records``: (returncode, the one state's return)."""
        args = ["state.single", "mailha_dns.records", "name=dns"]
        args += [f"{k}={v}" for k, v in kwargs.items()]
        if test:
            args.append("test=True")
        rc, ret = self.call(*args)
        assert isinstance(ret, dict) and len(ret) == 1, ret
        return rc, next(iter(ret.values()))

    def everything_written(self):
        """Every output and log line this minion produced (for the secret grep)."""
        log = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(self.outputs) + "\n" + log


@pytest.fixture
def named(tmp_path):
    ns = NamedServer(tmp_path / "named", records=["www IN A 192.0.2.80"]).start()
    yield ns
    ns.stop()


@pytest.fixture
def minion(tmp_path, named):
    return Minion(tmp_path / "minion", site_pillar(named))
