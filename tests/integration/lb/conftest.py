"""Fixtures of the load-balancer tier: the example site moved into a netns LAN."""
import copy
from pathlib import Path

import pytest
import yaml

from tests.support import netns

ROOT = Path(__file__).resolve().parents[3]


def lab_pillar(net="10.99.77", keepalived=None, ldirectord=None):
    """pillar.example with every 1.1.1.x address moved to ``net``.x (a netns LAN), plus overrides."""
    text = (ROOT / "pillar.example" / "mailha.sls").read_text().replace("1.1.1.", net + ".")
    pillar = yaml.safe_load(text)
    pillar["mailha"]["keepalived"].update(keepalived or {})
    pillar["mailha"]["ldirectord"].update(ldirectord or {})
    return copy.deepcopy(pillar)


@pytest.fixture(scope="session")
def netns_ok():
    ok, reason = netns.available()
    if not ok:
        pytest.skip(reason)
