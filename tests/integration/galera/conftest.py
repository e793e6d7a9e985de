"""Fixtures of the Galera tier: a lab of real mariadbd members driven through Salt."""

import contextlib
import tempfile

import pytest

from tests.integration.galera.harness import REPO, GaleraLab, have_galera


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


@contextlib.contextmanager
def salted(salt_factories, lab, name):
    """A real salt-master serving the formula and ``lab``'s pillar, and one real salt-minion per
    full member (minion id = node id). Yields (LocalClient, RunnerClient, master)."""
    import salt.client
    import salt.runner

    master = salt_factories.salt_master_daemon(name, overrides={
        "interface": "127.0.0.1", "auto_accept": True,
        "file_roots": {"base": [str(REPO / "states")]},
        "pillar_roots": {"base": [str(lab.pillar_dir)]},
        "log_level_logfile": "info",
    })
    minions = [master.salt_minion_daemon(m.id, overrides={"log_level_logfile": "info"}) for m in lab.members]
    with master.started(start_timeout=120):
        started = []
        try:
            for m in minions:
                m.start(start_timeout=120)
                started.append(m)
            yield (salt.client.LocalClient(mopts=master.config.copy()),
                   salt.runner.RunnerClient(master.config.copy()), master)
        finally:
            for m in reversed(started):
                m.terminate()
