"""Fixtures of the load-balancer tier: the example site moved into a netns LAN."""
import copy
from pathlib import Path

import pytest
import yaml

from salt_mailha import data as mailha_data
from tests.support import netns

ROOT = Path(__file__).resolve().parents[3]


def lab_pillar(net="10.99.77", keepalived=None, ldirectord=None):
    """pillar.example with every 192.0.2.x address moved to ``net``.x (a netns LAN), plus overrides."""
    text = yaml.safe_dump(mailha_data.example_pillar()).replace("192.0.2.", net + ".")
    pillar = yaml.safe_load(text)
    pillar["mailha"]["keepalived"].update(keepalived or {})
    pillar["mailha"]["ldirectord"].update(ldirectord or {})
    return copy.deepcopy(pillar)


@pytest.fixture(scope="session")
def netns_ok():
    ok, reason = netns.available()
    if not ok:
        pytest.skip(reason)


class LocalMinion:
    """``salt-call --local`` with our pillar, node and scratch ``mailha_root`` (argv via ``wrap``,
    e.g. ``ip netns exec``); every output and the log are checked for pillar secrets."""

    def __init__(self, base, pillar, node, wrap=None, live=None):
        import json
        import sys

        from salt_mailha.core.model import parse_site

        self._json = json
        self.base = Path(base)
        self.root = self.base / "root"
        self.root.mkdir(parents=True, exist_ok=True)
        pdir, self.conf = self.base / "pillar", self.base / "conf"
        pdir.mkdir(exist_ok=True)
        self.conf.mkdir(exist_ok=True)
        (pdir / "top.sls").write_text("base:\n  '*':\n    - mailha\n")
        (pdir / "mailha.sls").write_text(yaml.safe_dump(pillar, sort_keys=False))
        self.log = self.base / "minion.log"
        (self.conf / "minion").write_text(yaml.safe_dump({
            "id": f"{node}-test", "mailha_node": node, "file_client": "local",
            "pillar_roots": {"base": [str(pdir)]}, "file_roots": {"base": [str(self.base)]},
            "root_dir": str(self.base / "salt"), "log_file": str(self.log),
            "log_level_logfile": "debug", "mailha_root": str(self.root),
            # live=True: minion config mailha_live, the scratch root's run acts on its namespace too
            **({} if live is None else {"mailha_live": live}),
        }))
        self.salt_call = Path(sys.executable).with_name("salt-call")
        self.wrap = wrap or (lambda argv: argv)
        self.secrets = [s.reveal() for s in parse_site(pillar["mailha"]).secrets()]

    def call(self, *args):
        """(returncode, parsed "local" return or None, all text seen)."""
        import subprocess

        argv = self.wrap([str(self.salt_call), "--local", "-c", str(self.conf), "--out", "json",
                          "-l", "quiet", *map(str, args)])
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=300)
        text = proc.stdout + proc.stderr + (self.log.read_text() if self.log.exists() else "")
        for secret in self.secrets:
            assert secret not in text, "a pillar secret leaked into salt-call output or log"
        try:
            data = self._json.loads(proc.stdout)["local"]
        except (ValueError, KeyError, TypeError):
            data = None
        return proc.returncode, data, text

    def state(self, function, test=False, **kwargs):
        args = ["state.single", function] + [f"{k}={v}" for k, v in kwargs.items()]
        rc, data, text = self.call(*args, *(["test=True"] if test else []))
        if not isinstance(data, dict) or len(data) != 1:
            pytest.fail(f"no state return (rc={rc}):\n{text[-3000:]}")
        (ret,) = data.values()
        return ret
