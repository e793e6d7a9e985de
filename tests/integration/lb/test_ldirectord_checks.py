"""ldirectord from Debian with the ldirectord.cf our renderer makes, against real services in
netns "hosts": its health checks (mysql login with the Galera monitor account, the http health
page, a plain connect for smtps) mark each real server up or down correctly, and a database
server that accepts connections but never answers is marked down instead of hanging ldirectord. The checks do not
need IPVS (ldirectord logs that ipvsadm fails here and keeps checking; the table itself is
tested in the User-mode Linux guest, test_ipvs_guest.py). The monitor password never shows in a process's
argv."""
import os
import re
import shutil
import subprocess

import pytest

from salt_mailha.core import galera, lb
from salt_mailha.core.model import load_site
from tests.integration.lb.conftest import lab_pillar
from tests.support.daemon import Daemon, wait_until
from tests.support.netns import Lan

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not (shutil.which("ldirectord") and shutil.which("mariadbd")),
                       reason="ldirectord or mariadb-server missing: run scripts/setup-host.sh"),
    pytest.mark.skipif(subprocess.run(["perl", "-MDBD::mysql", "-e1"], capture_output=True).returncode != 0,
                       reason="ldirectord's mysql check needs DBD::mysql: apt-get install libdbd-mysql-perl"),
]

NET = "10.99.77"
DB_VIP, MAIL_VIP = f"{NET}.22", f"{NET}.21"
DB1, DB2, MAIL1, MAIL2 = (f"{NET}.{i}" for i in (15, 16, 17, 18))


def mariadb(lan, tmp_path, password):
    """A throw-away one-member Galera cluster in db1's namespace (so it is Synced in a Primary
    component, which the balancer's query requires) with the monitor account and health row the
    pillar's mailha_galera.monitor_present creates."""
    d = tmp_path / "db1"
    (d / "data").mkdir(parents=True)
    cnf = d / "my.cnf"
    cnf.write_text(f"[mysqld]\nuser=root\ndatadir={d}/data\nsocket={d}/sock\npid-file={d}/pid\n"
                   f"bind-address={DB1}\nport=3306\nskip-name-resolve\nlog-error={d}/error.log\n"
                   "innodb_buffer_pool_size=16M\nperformance_schema=OFF\n"
                   "binlog_format=ROW\ninnodb_autoinc_lock_mode=2\nwsrep_on=ON\n"
                   "wsrep_provider=/usr/lib/galera/libgalera_smm.so\nwsrep_cluster_address=gcomm://\n"
                   f"wsrep_node_address={DB1}\nwsrep_sst_method=rsync\n")
    subprocess.run(["mariadb-install-db", f"--defaults-file={cnf}", "--user=root",
                    "--auth-root-authentication-method=socket", "--skip-test-db"],
                   check=True, capture_output=True)
    server = Daemon("mariadbd", lan.argv("db1", ["mariadbd", f"--defaults-file={cnf}"]),
                    d / "stdout.log").start()
    wait_until(lambda: subprocess.run(["mariadb", "-S", f"{d}/sock", "-e", "SELECT 1"],
                                      capture_output=True).returncode == 0, 60, what="mariadbd up")
    # the password goes through stdin, never argv
    sql = (f"CREATE DATABASE monitoring; CREATE USER 'monitor'@'%' IDENTIFIED BY '{password}'; "
           "GRANT SELECT ON monitoring.* TO 'monitor'@'%'; "
           f"CREATE TABLE monitoring.{galera.HEALTH_TABLE} (id INT PRIMARY KEY, ok TINYINT NOT NULL); "
           f"INSERT INTO monitoring.{galera.HEALTH_TABLE} VALUES (1, 1);")
    subprocess.run(["mariadb", "-S", f"{d}/sock"], input=sql, text=True, check=True)
    return server


@pytest.fixture
def lab(netns_ok, tmp_path):
    pillar = lab_pillar(NET, ldirectord={"checkinterval": 1, "checktimeout": 2, "failurecount": 1})
    pillar["mailha"]["services"] = {
        "mysql": {"vip": "db", "port": 3306, "check": "mysql", "scheduler": "wrr"},
        "http": {"vip": "mail", "port": 80, "check": "http", "scheduler": "sh"},
        "smtps": {"vip": "mail", "port": 465, "check": "connect", "scheduler": "wrr"},
    }
    site = load_site(pillar)
    password = site.galera.monitor.password.reveal()
    lan = Lan("ld", bridge_address=f"{NET}.254/24")
    procs = []
    try:
        for name, addr in (("lb1", f"{NET}.13"), ("db1", DB1), ("db2", DB2), ("mail1", MAIL1),
                           ("mail2", MAIL2)):
            lan.add_host(name, f"{addr}/24")
        procs.append(mariadb(lan, tmp_path, password))
        # db2 accepts connections and never greets (a joiner mid-SST, a stalled host): DBI waits
        # for the greeting forever unless the DSN carries timeouts, and ldirectord with it
        procs.append(Daemon("mute-3306", lan.argv("db2", [
            "perl", "-MIO::Socket::INET", "-e",
            f"$s = IO::Socket::INET->new(Listen => 16, LocalAddr => '{DB2}', LocalPort => 3306,"
            " ReuseAddr => 1) or die $!; push @c, $c while $c = $s->accept"]),
            tmp_path / "mute.log").start())
        for name, page in (("mail1", "ldirectord"), ("mail2", "maintenance")):
            www = tmp_path / f"www-{name}"
            www.mkdir()
            (www / "ldirectord.txt").write_text(page + "\n")
            procs.append(Daemon(f"httpd-{name}", lan.argv(name, ["busybox", "httpd", "-f", "-p", "80",
                                                                  "-h", www]), tmp_path / f"{name}.log").start())
        # only mail1 accepts connections on 465
        procs.append(Daemon("tcp-465", lan.argv("mail1", ["busybox", "httpd", "-f", "-p", "465", "-h",
                                                           tmp_path]), tmp_path / "465.log").start())
        cf = tmp_path / "ldirectord.cf"
        cf.write_text(lb.render_ldirectord_cf(site, site.node("lb1"), maintenancedir=str(tmp_path / "maint"),
                                              logfile=str(tmp_path / "ldirectord.log")))
        cf.chmod(0o600)
        (tmp_path / "maint").mkdir()
        ld = Daemon("ldirectord", lan.argv("lb1", ["ldirectord", "-d", cf, "start"]),
                    tmp_path / "ldirectord.out").start()
        procs.append(ld)
        yield ld, password, tmp_path
    finally:
        for p in reversed(procs):
            p.stop()
        lan.close()


_VERDICT = re.compile(r"(Enabled|Disabled)\s+real server=\S*?:tcp:([\d.]+):(\d+):.*?\(virtual=tcp:([\d.:]+)\)")


def verdicts(ld):
    """{(real, virtual): "up"|"down"} from ldirectord's check log (the last verdict wins)."""
    return {(f"{m.group(2)}:{m.group(3)}", m.group(4)): "up" if m.group(1) == "Enabled" else "down"
            for m in _VERDICT.finditer(ld.log())}


def judged(lan, cf, log, env, want):
    """Run real ldirectord with config ``cf`` on lan host lb1 until its verdicts match ``want``
    (60 s, else fail with its log); stop it and return its log."""
    ld = Daemon("ldirectord", lan.argv("lb1", ["ldirectord", "-d", cf, "start"]), log, env=env).start()
    try:
        wait_until(lambda: all(verdicts(ld).get(k) == v for k, v in want.items()), 60, interval=0.5,
                   what="ldirectord's verdict on both real servers")
    except TimeoutError:
        pytest.fail(f"{verdicts(ld)}\n{ld.log()[-4000:]}")
    finally:
        ld.stop()
    return ld.log()


def test_health_checks_of_rendered_config(lab):
    ld, password, tmp_path = lab
    want = {(f"{DB1}:3306", f"{DB_VIP}:3306"): "up", (f"{DB2}:3306", f"{DB_VIP}:3306"): "down",
            (f"{MAIL1}:80", f"{MAIL_VIP}:80"): "up", (f"{MAIL2}:80", f"{MAIL_VIP}:80"): "down",
            (f"{MAIL1}:465", f"{MAIL_VIP}:465"): "up", (f"{MAIL2}:465", f"{MAIL_VIP}:465"): "down"}
    try:
        wait_until(lambda: all(verdicts(ld).get(k) == v for k, v in want.items()), 60,
                   interval=0.5, what="every real server judged")
    except TimeoutError:
        pytest.fail(f"{verdicts(ld)}\n{ld.log()[-4000:]}")
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    assert password.encode() not in f.read(), f"monitor password in argv of pid {pid}"
            except (FileNotFoundError, ProcessLookupError, PermissionError):
                pass
