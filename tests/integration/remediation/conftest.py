"""Real salt-master + four salt-minions (lb1, lb2, mail1, mail2), a real named, and stand-in mail
services on loopback: the remediation loop end to end (beacon -> reactor -> orchestration ->
runner -> ldirectord maintenance files + RFC 2136 MX).

One session for all remediation tests (about 15-40 s to start on 2 cores): the recipe and traps
are in shared/notes/REAL-SERVICES.md section 6 (auto_accept, interface 127.0.0.1, private
root_dir, LocalClient(mopts=master.config)).
"""
import logging
import shutil

import pytest

from salt_mailha.core.model import load_site
from tests.integration.remediation import cluster
from tests.support.daemon import wait_until
from tests.support.named import NamedServer

log = logging.getLogger(__name__)

pytestmark = pytest.mark.integration


def _missing():
    if shutil.which("named") is None and not shutil.os.path.exists("/usr/sbin/named"):
        return "named (bind9) is missing: run scripts/setup-host.sh"
    return None


@pytest.fixture(scope="session")
def salt_factories_config(tmp_path_factory):
    return {"root_dir": str(tmp_path_factory.mktemp("rem-salt"))}


@pytest.fixture(scope="session")
def rem_named(tmp_path_factory):
    reason = _missing()
    if reason:
        pytest.skip(reason)
    ns = NamedServer(tmp_path_factory.mktemp("rem-named"), zone="example.net",
                     key_name="mailha-update").start()
    yield ns
    ns.stop()


@pytest.fixture(scope="session")
def rem_pillar(rem_named):
    return cluster.site_pillar(rem_named)


@pytest.fixture(scope="session")
def rem_services(rem_pillar):
    services = cluster.mail_services(rem_pillar)
    for per_node in services.values():
        for listener in per_node.values():
            listener.start()
    yield services
    for per_node in services.values():
        for listener in per_node.values():
            listener.stop()


class Cluster:
    def __init__(self, master, minions, named, services, pillar, roots):
        import salt.client
        import salt.runner

        self.master, self.minions, self.named = master, minions, named
        self.services, self.pillar, self.roots = services, pillar, roots
        self.client = salt.client.LocalClient(mopts=master.config.copy())
        self.runner = salt.runner.RunnerClient(master.config.copy())

    def run(self, fun, *args, **kwargs):
        """Our runner, in process, against the real master's config and minions."""
        return self.runner.cmd(fun, arg=list(args), kwarg=kwargs, print_event=False)

    def call(self, tgt, fun, *args, timeout=30, **kwargs):
        ret = self.client.cmd(tgt, fun, list(args), kwarg=kwargs or None, timeout=timeout)
        assert tgt in ret, f"{tgt} did not answer {fun}: {ret!r}"
        return ret[tgt]

    def drained(self, node):
        """Balancers whose ldirectord maintenance directory holds ``node``'s address."""
        addr = cluster.node_address(self.pillar, node)
        return {lb for lb in ("lb1", "lb2") if addr in cluster.maintenance_files(self.roots, lb)}

    def weights(self, lb, node):
        """``node``'s weights in ``lb``'s IPVS table, as mailha_ipvs.list reports them."""
        addr = cluster.node_address(self.pillar, node)
        return sorted({r["weight"] for vs in self.call(lb, "mailha_ipvs.list")
                       for r in vs["real_servers"] if r["address"] == addr})

    def mx(self):
        return self.named.query("example.net", "MX")

    def mx_of(self, node):
        return any(r.endswith(f" {node}.example.net.") for r in self.mx())


@pytest.fixture(scope="session")
def rem_cluster(salt_factories, rem_named, rem_pillar, rem_services, tmp_path_factory):
    base = tmp_path_factory.mktemp("rem-site")
    cluster.write_pillar(base / "pillar", rem_pillar)
    roots = base / "roots"
    site = load_site(rem_pillar)
    master = salt_factories.salt_master_daemon(
        "rem-master", overrides=cluster.master_overrides(base / "pillar"))
    minions = {}
    for m in cluster.MINIONS:
        minions[m] = master.salt_minion_daemon(m, overrides=cluster.minion_overrides(m, roots))
        if m.startswith("lb"):
            # a new dict: the factories share one environ between all daemons
            minions[m].environ = cluster.prepare_balancer(roots, m, site)
    with master.started(start_timeout=120):
        started = []
        try:
            for m in minions.values():
                m.start(start_timeout=120)
                started.append(m)
            c = Cluster(master, minions, rem_named, rem_services, rem_pillar, roots)
            # the updater (lb1) publishes the site's records: both MX present before any test
            ret = c.call("lb1", "mailha_dns.records", take_over=True)
            assert ret.get("result") is True, ret
            assert c.mx_of("mail1") and c.mx_of("mail2"), c.mx()
            # the beacons have seen both mail nodes up (their first decision) before tests run
            wait_until(lambda: not c.drained("mail1") and not c.drained("mail2"), 60,
                       what="mail nodes in service")
            yield c
        finally:
            for m in reversed(started):
                m.terminate()
