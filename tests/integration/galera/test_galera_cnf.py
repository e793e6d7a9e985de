"""The rendered galera.cnf is accepted option by option by the real mariadbd."""

import copy
import pathlib
import subprocess

import pytest

from salt_mailha import data as mailha_data
from salt_mailha.core.galera import render_galera_cnf
from salt_mailha.core.model import parse_site
from tests.integration.galera.harness import EVS, have_galera

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(not have_galera(), reason="apt-get install mariadb-server galera-4 "
                                                           "(scripts/setup-host.sh)")]
ROOT = pathlib.Path(__file__).resolve().parents[3]
EXAMPLE = mailha_data.example_pillar()["mailha"]


def check(path):
    return subprocess.run(["/usr/sbin/mariadbd", f"--defaults-file={path}", "--help", "--verbose"],
                          capture_output=True, text=True, timeout=60)


def site(**galera):
    d = copy.deepcopy(EXAMPLE)
    d["galera"].update(galera)
    return parse_site(d)


@pytest.mark.parametrize("galera", [
    {},
    {"sst_method": "mariabackup", "sst_password": "sst-pw", "evs": EVS},
    {"instances": {"db1": {"port": 33061, "gmcast_port": 45671, "ist_port": 45681, "sst_port": 44441,
                           "datadir": "/srv/g/db1/data", "socket": "/srv/g/db1/run/s.sock"}}},
], ids=["defaults", "mariabackup-tuned-evs", "instance-overrides"])
def test_mariadbd_accepts_every_rendered_option(tmp_path, galera):
    s = site(**galera)
    path = tmp_path / "galera.cnf"
    path.write_text(render_galera_cnf(s, s.node("db1")))
    res = check(path)
    assert res.returncode == 0, res.stderr
    assert "unknown" not in res.stderr.lower()
    values = dict(line.split(None, 1) for line in res.stdout.splitlines()
                  if line.startswith("wsrep-") and len(line.split(None, 1)) == 2)
    assert values["wsrep-node-address"].strip().startswith("10.1.1.15")
    assert values["wsrep-sst-receive-address"].strip().startswith("10.1.1.15:")


def test_an_unknown_option_is_rejected(tmp_path):
    # the check above can fail: mariadbd refuses an option it does not know
    s = site()
    path = tmp_path / "galera.cnf"
    path.write_text(render_galera_cnf(s, s.node("db1")).replace("[sst]", "wsrep_no_such_option = 1\n[sst]"))
    res = check(path)
    assert res.returncode != 0 and "wsrep_no_such_option" in res.stderr
