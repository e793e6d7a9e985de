import pytest

from tests.integration.ldap.fixtures import MirrorPair
from tests.support.slapd import have_slapd


@pytest.fixture
def mirror_pair_factory(tmp_path):
    """Build (not start) a MirrorPair per config format (or ``"native"``: the native mail path's
    slapd.conf, empty databases); every pair is stopped at teardown."""
    if not have_slapd():
        pytest.skip("slapd with the syncprov module is missing: apt-get install slapd ldap-utils "
                    "(scripts/setup-host.sh)")
    pairs = []

    def build(config_format):
        where = tmp_path / config_format.replace("=", "_").replace(".", "_")
        pair = MirrorPair.build_native(where) if config_format == "native" else MirrorPair.build(where, config_format)
        pairs.append(pair)
        return pair

    yield build
    for pair in pairs:
        pair.stop()
