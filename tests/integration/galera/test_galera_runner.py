"""The whole path through a real salt-master and three real salt-minions: ``salt 'db*'
state.apply mailha.galera`` forms the cluster, and ``salt-run mailha.galera_recover`` (in
process, RunnerClient on the master's config) plans, then carries out, the recovery of a cluster
whose members were all killed."""

import time

import pytest

from tests.integration.galera.conftest import salted
from tests.integration.galera.harness import SECRETS, Writer, prepare_table, rows

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def site(salt_factories, lab):
    with salted(salt_factories, lab, "galera-master") as s:
        yield s


def test_salt_state_apply_on_all_then_galera_recover(lab, site):
    client, runner, master = site
    ids = [m.id for m in lab.members]
    ret = client.cmd(ids, "state.apply", ["mailha.galera"], tgt_type="list", timeout=300)
    assert set(ret) == set(ids), ret
    actions = []
    for states in ret.values():
        assert isinstance(states, dict), states
        assert all(r["result"] is True for r in states.values()), states
        actions += [r["changes"]["new"]["action"] for k, r in states.items() if "synced" in k]
    assert sorted(actions) == ["bootstrap", "join", "join"]
    lab.wait_synced(size=3, timeout=30)

    prepare_table(lab.member("db1"))
    writer = Writer([lab.member("db1")])
    writer.start()
    time.sleep(1)
    for m in lab.members:
        m.kill9()
    writer.stop()

    plan = runner.cmd("mailha.galera_recover", print_event=False)
    assert plan["outcome"] == "planned" and plan["plan"]["kind"] == "bootstrap", plan
    assert all(m.pid() is None for m in lab.members), "planning started something"
    seqnos = {n: int(p["position"].rsplit(":", 1)[1]) for n, p in plan["positions"].items()}
    assert seqnos[plan["plan"]["node"]] == max(seqnos.values())
    assert "highest seqno" in plan["reason"]

    done = runner.cmd("mailha.galera_recover", kwarg={"apply": True}, print_event=False)
    assert done["outcome"] == "applied" and done["result"] is True, done
    lab.wait_synced(size=3, timeout=60)
    for m in lab.members:
        assert set(writer.acked) <= rows(m)

    again = runner.cmd("mailha.galera_recover", kwarg={"apply": True, "force": "db2"}, print_event=False)
    assert again["outcome"] == "refused" and "even when forced" in again["reason"]
    text = repr(plan) + repr(done) + repr(again)
    assert not any(s in text for s in SECRETS)
