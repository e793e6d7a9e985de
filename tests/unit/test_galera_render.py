"""galera.cnf from the model, and the GaleraSpec fields the Galera tier added to the model."""

import copy
import pathlib

import pytest

from salt_mailha import data as mailha_data
from salt_mailha.core.errors import MailhaError, ValidationError
from salt_mailha.core.galera import garbd_argv, gcomm_address, render_galera_cnf
from salt_mailha.core.model import parse_site

ROOT = pathlib.Path(__file__).resolve().parents[2]
EXAMPLE = mailha_data.example_pillar()["mailha"]


def example(**galera):
    d = copy.deepcopy(EXAMPLE)
    d["galera"].update(galera)
    return d


def lines(text):
    return [ln.strip() for ln in text.splitlines()]


def test_cnf_pins_node_and_sst_address_to_the_private_address_never_the_vip():
    site = parse_site(example())
    text = render_galera_cnf(site, site.node("db1"))
    assert "wsrep_node_address = 10.1.1.15" in lines(text)
    assert "wsrep_sst_receive_address = 10.1.1.15:4444" in lines(text)
    assert site.vips["db"].address not in text
    assert "wsrep_cluster_address = gcomm://10.1.1.11,10.1.1.15,10.1.1.16" in lines(text)
    assert "wsrep_node_name = db1" in lines(text)


def test_cnf_is_deterministic_and_differs_per_node():
    site = parse_site(example())
    assert render_galera_cnf(site, site.node("db1")) == render_galera_cnf(site, site.node("db1"))
    assert render_galera_cnf(site, site.node("db1")) != render_galera_cnf(site, site.node("db2"))


def test_rsync_cnf_holds_no_secret_and_mariabackup_gets_sst_auth():
    site = parse_site(example())
    text = render_galera_cnf(site, site.node("filer1"))
    assert all(s.reveal() not in text for s in site.secrets())
    site = parse_site(example(sst_method="mariabackup", sst_password="CHANGE-ME-db-sst"))
    assert 'wsrep_sst_auth = "sst:CHANGE-ME-db-sst"' in lines(render_galera_cnf(site, site.node("db2")))


def test_cnf_refuses_non_member():
    site = parse_site(example())
    with pytest.raises(MailhaError, match="not a Galera member"):
        render_galera_cnf(site, site.node("mail1"))


def test_evs_timeouts_and_instances_render():
    site = parse_site(example(
        evs={"suspect_timeout": 1, "inactive_timeout": 2, "keepalive_period": 0.25, "install_timeout": 2,
             "inactive_check_period": 0.3, "join_retrans_period": 0.5},
        instances={"db1": {"port": 33061, "gmcast_port": 45671, "ist_port": 45681, "sst_port": 44441,
                           "datadir": "/srv/g/db1/data", "socket": "/srv/g/db1/sock"}},
    ))
    text = render_galera_cnf(site, site.node("db1"))
    opts = next(ln for ln in lines(text) if ln.startswith("wsrep_provider_options"))
    assert "evs.suspect_timeout=PT1S;evs.inactive_timeout=PT2S;evs.inactive_check_period=PT0.3S;" \
           "evs.keepalive_period=PT0.25S;evs.install_timeout=PT2S;evs.join_retrans_period=PT0.5S" in opts
    assert "gmcast.listen_addr=tcp://10.1.1.15:45671" in opts and "ist.recv_addr=10.1.1.15:45681" in opts
    assert {"port = 33061", "datadir = /srv/g/db1/data", "socket = /srv/g/db1/sock",
            "wsrep_node_address = 10.1.1.15:45671", "wsrep_sst_receive_address = 10.1.1.15:44441"} <= set(lines(text))
    assert gcomm_address(site) == "gcomm://10.1.1.11,10.1.1.15:45671,10.1.1.16"


def test_garbd_argv_joins_the_full_members():
    d = example(arbitrator="garbd")
    d["nodes"]["filer1"]["roles"] = ["filer", "garbd"]
    site = parse_site(d)
    argv = garbd_argv(site, site.node("filer1"))
    assert argv[:7] == ["garbd", "--name", "filer1", "--address", "gcomm://10.1.1.15,10.1.1.16", "--group", "mailha_db"]
    assert "gmcast.listen_addr=tcp://10.1.1.11:4567" in argv[-1]


BAD = [
    ("launcher", {"launcher": "docker"}, "mailha:galera:launcher", "systemd, direct"),
    ("keepalive-vs-suspect", {"evs": {"suspect_timeout": 1, "keepalive_period": 0.5}},
     "mailha:galera:evs:keepalive_period", "suspect_timeout/3"),
    ("inactive-below-suspect", {"evs": {"suspect_timeout": 5, "inactive_timeout": 2, "install_timeout": 1}},
     "mailha:galera:evs:inactive_timeout", "at least suspect_timeout"),
    ("evs-unknown-key", {"evs": {"suspect": 1}}, "mailha:galera:evs:suspect", "unknown key"),
    ("instance-not-member", {"instances": {"mail1": {"port": 3307}}}, "mailha:galera:instances:mail1",
     "not a Galera member"),
    ("instance-relative-path", {"instances": {"db1": {"datadir": "data"}}}, "mailha:galera:instances:db1:datadir",
     "absolute path"),
    ("instance-port-range", {"instances": {"db1": {"port": 70000}}}, "mailha:galera:instances:db1:port", "out of range"),
    ("instance-ports-equal", {"instances": {"db1": {"port": 4567}}}, "mailha:galera:instances:db1", "must differ"),
    ("provider-relative", {"provider": "libgalera.so"}, "mailha:galera:provider", "absolute path"),
]


@pytest.mark.parametrize("galera, key, words", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_galera_spec_validation(galera, key, words):
    with pytest.raises(ValidationError) as exc:
        parse_site(example(**galera))
    msgs = [m for k, m in exc.value.problems if k == key]
    assert msgs and words in msgs[0], exc.value.problems


def test_two_members_on_one_address_need_their_own_ports_and_paths():
    d = example(instances={"db1": {"port": 33061, "gmcast_port": 45671, "ist_port": 45681, "sst_port": 44441},
                           "db2": {"port": 33061, "gmcast_port": 45672, "ist_port": 45682, "sst_port": 44442}})
    d["nodes"]["db2"]["addresses"]["private"] = "10.1.1.15"
    with pytest.raises(ValidationError) as exc:
        parse_site(d)
    keys = {k for k, _ in exc.value.problems}
    assert "mailha:galera:instances:db2:port" in keys      # 10.1.1.15:33061 twice
    assert "mailha:galera:instances:db2:datadir" in keys   # default /var/lib/mysql twice on one address


def test_defaults_are_debian_and_systemd():
    g = parse_site(example()).galera
    assert (g.launcher, g.user, g.instance("db1").datadir, g.instance("db1").port) == \
           ("systemd", "mysql", "/var/lib/mysql", 3306)
