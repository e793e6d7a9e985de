"""The example pillar only names addresses nobody owns on the Internet.

A manual run of the dns role against the example once sent TCP to the example's DNS server, then
in routed space (1.1.1.10:53). This guards the example, not the model: sites may use any address.
"""
import ipaddress

import pytest

from tests.support.example import example_pillar

# RFC 5737 documentation, RFC 1918 private, RFC 3849 IPv6 documentation.
UNROUTED = [ipaddress.ip_network(n) for n in (
    "192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24",
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "2001:db8::/32")]


def _addresses(obj, key="mailha"):
    """``(pillar key, network)`` for every string in ``obj`` that is an address or a network."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _addresses(v, f"{key}:{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _addresses(v, f"{key}:{i}")
    elif isinstance(obj, str):
        try:
            yield key, ipaddress.ip_network(obj, strict=False)
        except ValueError:
            pass


@pytest.mark.parametrize("iredmail", [False, True], ids=["native", "iredmail"])
def test_example_addresses_are_documentation_or_private(iredmail):
    found = list(_addresses(example_pillar(iredmail=iredmail)["mailha"]))
    # every node, both VIPs, both networks and the DNS server: the walk really saw them
    assert len(found) == 2 + 15 + 2 + 1
    routed = [(k, str(n)) for k, n in found
              if not any(n.version == u.version and n.subnet_of(u) for u in UNROUTED)]
    assert routed == [], "the example must use RFC 5737/1918 addresses; move these"


def test_example_public_network_is_rfc5737_test_net_1():
    mailha = example_pillar()["mailha"]
    assert mailha["networks"]["public"] == "192.0.2.0/24"
    assert mailha["dns"]["servers"][0]["address"] == "192.0.2.10"
