"""The balancer's Galera-aware probe (core.health.galera_synced) against a real one-node Galera
cluster: healthy while Synced, unhealthy once the node is desynced, and the monitoring password
never in what the probe reports."""
import pathlib
import shutil
import subprocess
import tempfile

import pytest

from salt_mailha.core import health
from salt_mailha.core.model import MonitorSpec
from salt_mailha.core.secret import Secret
from tests.support.daemon import Daemon, wait_until
from tests.support.named import free_port

pytestmark = pytest.mark.integration

PASSWORD = "Mon-pw-7f3a9c"  # noqa: S105 - test secret, grepped for below
PROVIDER = "/usr/lib/galera/libgalera_smm.so"


@pytest.fixture(scope="module")
def galera(tmp_path_factory):
    if not shutil.which("mariadbd") or not shutil.os.path.exists(PROVIDER):
        pytest.skip("mariadb-server and galera-4 are missing: run scripts/setup-host.sh")
    # mariadbd runs as mysql: pytest's tmp dirs (0700, root) are not traversable for it
    d = pathlib.Path(tempfile.mkdtemp(prefix="rem-galera-"))
    d.chmod(0o755)
    port, gport = free_port(), free_port()
    (d / "data").mkdir()
    cnf = d / "my.cnf"
    cnf.write_text(f"""[mysqld]
user=mysql
datadir={d}/data
socket={d}/mysqld.sock
pid-file={d}/mysqld.pid
log-error={d}/error.log
port={port}
bind-address=127.0.0.1
skip-name-resolve
binlog_format=ROW
default_storage_engine=InnoDB
innodb_autoinc_lock_mode=2
innodb_buffer_pool_size=32M
performance_schema=OFF
wsrep_on=ON
wsrep_provider={PROVIDER}
wsrep_cluster_name=remtest
wsrep_cluster_address=gcomm://
wsrep_node_address=127.0.0.1:{gport}
wsrep_provider_options="gmcast.listen_addr=tcp://127.0.0.1:{gport};gcache.size=16M"
""")
    shutil.chown(d, "mysql")
    for p in d.rglob("*"):
        shutil.chown(p, "mysql")
    subprocess.run(["mariadb-install-db", f"--defaults-file={cnf}", "--user=mysql",
                    "--skip-test-db"], check=True, capture_output=True, timeout=120)
    db = Daemon("mariadbd", ["mariadbd", f"--defaults-file={cnf}", "--wsrep-new-cluster"],
                d / "stdout.log").start()

    def sql(query):
        return subprocess.run(["mariadb", "-uroot", "-S", str(d / "mysqld.sock"), "-N", "-e",
                               query], capture_output=True, text=True, timeout=30)

    try:
        wait_until(lambda: "Synced" in sql("SHOW STATUS LIKE 'wsrep_local_state_comment'").stdout,
                   60, what="galera node Synced")
        # the password goes through stdin-less SQL on the local socket, never a process argv
        r = subprocess.run(["mariadb", "-uroot", "-S", str(d / "mysqld.sock")], input=(
            "CREATE DATABASE monitoring; CREATE TABLE monitoring.health (ok INT PRIMARY KEY);"
            "INSERT INTO monitoring.health VALUES (1);"
            f"CREATE USER 'monitor'@'%' IDENTIFIED BY '{PASSWORD}';"
            "GRANT SELECT ON monitoring.* TO 'monitor'@'%';"), text=True, capture_output=True,
            timeout=30)
        assert r.returncode == 0, r.stderr
        yield port, sql
    finally:
        db.stop()
        shutil.rmtree(d, ignore_errors=True)


def test_synced_node_passes_then_desynced_fails(galera):
    port, sql = galera
    monitor = MonitorSpec("monitor", Secret(PASSWORD), "monitoring")
    ok = health.galera_synced("127.0.0.1", port, monitor, timeout=2)
    assert ok == health.ProbeResult(True, "galera node Synced, ready, Primary")
    assert sql("SET GLOBAL wsrep_desync=ON").returncode == 0
    try:
        bad = wait_until(lambda: (r := health.galera_synced("127.0.0.1", port, monitor, 2))
                         and not r.ok and r, 30, what="desynced node failing the check")
        assert "Donor/Desynced" in bad.detail
    finally:
        sql("SET GLOBAL wsrep_desync=OFF")


def test_wrong_password_fails_without_showing_it(galera):
    port, _ = galera
    monitor = MonitorSpec("monitor", Secret(PASSWORD + "-wrong"), "monitoring")
    res = health.galera_synced("127.0.0.1", port, monitor, timeout=2)
    assert not res.ok and "Access denied" in res.detail
    assert PASSWORD not in res.detail
