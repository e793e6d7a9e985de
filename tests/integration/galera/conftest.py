"""Fixtures of the Galera tier: a lab of real mariadbd members driven through Salt."""

import tempfile

import pytest

from tests.integration.galera.harness import GaleraLab, have_galera


def _lab(**kwargs):
    if not have_galera():
        pytest.skip("MariaDB Galera is missing: apt-get install mariadb-server galera-4 rsync "
                    "galera-arbitrator-4 (scripts/setup-host.sh)")
    # Not under pytest's tmp_path: its 0700 parents keep the mysql user out.
    return GaleraLab(tempfile.mkdtemp(prefix="mailha-galera-"), **kwargs)


@pytest.fixture(scope="module")
def lab():
    """db1, db2 (role db) and filer1 (role quorum), nothing started: the tests of a module bring it
    up once and share it."""
    lab = _lab()
    yield lab
    lab.cleanup()


@pytest.fixture(scope="module")
def garbd_lab():
    lab = _lab(members=("db1", "db2"), quorum=None, garbd="arb")
    yield lab
    lab.cleanup()
