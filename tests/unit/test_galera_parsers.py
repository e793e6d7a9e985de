"""Parsers of what a Galera node says about itself, fed with output captured from the real
mariadbd 10.11 + galera-4 on this machine (tests/unit/data/galera/, see its README)."""

import pathlib

import pytest

from salt_mailha.core.errors import ParseError
from salt_mailha.core.galera import (
    ZERO_UUID,
    GaleraPosition,
    parse_grastate,
    parse_recovered_position,
    parse_wsrep_status,
    set_safe_to_bootstrap,
)

DATA = pathlib.Path(__file__).parent / "data" / "galera"
UUID = "d84ce8f4-e8c9-11f1-876c-fa62e30020a8"


def read(name):
    return (DATA / name).read_text()


def status_rows(name):
    lines = read(name).splitlines()
    assert lines[0].split("\t") == ["Variable_name", "Value"]
    return [tuple(line.split("\t", 1)) for line in lines[1:]]


@pytest.mark.parametrize("name, uuid, seqno, safe", [
    ("grastate-running-bootstrap.dat", UUID, -1, True),
    ("grastate-after-kill9.dat", UUID, -1, False),
    ("grastate-allkilled-n1.dat", UUID, -1, False),
    ("grastate-clean-shutdown-first.dat", UUID, 15, False),
    # the last node stopped, but in a non-Primary component: Galera does not mark it safe
    ("grastate-clean-shutdown-last.dat", UUID, 16, False),
    ("grastate-empty-never-joined.dat", ZERO_UUID, -1, False),
], ids=["running-bootstrap", "after-kill9", "all-killed", "clean-first", "clean-last-nonprimary",
        "empty-file-never-joined"])
def test_parse_grastate_real_files(name, uuid, seqno, safe):
    st = parse_grastate(read(name))
    assert (st.uuid, st.seqno, st.safe_to_bootstrap) == (uuid, seqno, safe)


def test_empty_grastate_is_no_history():
    assert parse_grastate(read("grastate-empty-never-joined.dat")).position.empty


@pytest.mark.parametrize("text, what", [
    ("# GALERA saved state\nversion: 2.1\nseqno: 3\n", "'uuid'"),
    (f"uuid: {UUID}\nseqno: three\n", "not an integer"),
    ("uuid: not-a-uuid\nseqno: 1\n", "not a Galera state UUID"),
    (f"uuid: {UUID}\nseqno: 1\nsafe_to_bootstrap: yes\n", "safe_to_bootstrap"),
    ("garbage without colon\n", "key: value"),
], ids=["no-uuid", "bad-seqno", "bad-uuid", "bad-safe", "garbage"])
def test_parse_grastate_rejects_damaged_files(text, what):
    with pytest.raises(ParseError, match=what):
        parse_grastate(text)


def test_set_safe_to_bootstrap_changes_only_that_line():
    text = read("grastate-allkilled-n2.dat")
    new = set_safe_to_bootstrap(text)
    assert parse_grastate(new).safe_to_bootstrap is True
    assert [ln for ln in new.splitlines() if not ln.startswith("safe_to_bootstrap")] == \
           [ln for ln in text.splitlines() if not ln.startswith("safe_to_bootstrap")]
    assert parse_grastate(set_safe_to_bootstrap(new, False)).safe_to_bootstrap is False


@pytest.mark.parametrize("name, expected", [
    ("recover-after-kill9.log", f"{UUID}:6"),
    ("recover-allkilled-n1.log", f"{UUID}:11"),
    ("recover-allkilled-n2.log", f"{UUID}:13"),
    ("recover-allkilled-n3.log", f"{UUID}:13"),
    ("recover-fresh-datadir.log", f"{ZERO_UUID}:-1"),
    ("recover-zero-uuid.log", f"{ZERO_UUID}:-1"),
    # one log file reused by two runs: the last line is the current position
    ("recover-appended-two-runs.log", f"{UUID}:15"),
], ids=["after-kill9", "all-killed-n1", "all-killed-n2", "all-killed-n3", "fresh-datadir",
        "never-joined", "several-positions-last-wins"])
def test_parse_recovered_position_real_logs(name, expected):
    assert str(parse_recovered_position(read(name))) == expected


@pytest.mark.parametrize("name", ["joiner-error-log-excerpt.log", "bootstrap-refused-unsafe.log"],
                         ids=["only-from-storage-lines", "failed-start"])
def test_parse_recovered_position_none_is_an_error(name):
    # "Recovered position from storage:" (a joiner during SST) must not be taken for a recovery
    with pytest.raises(ParseError, match="Recovered position"):
        parse_recovered_position(read(name))


def test_recovered_position_with_gtid_suffix():
    line = f"2026-11-25 12:15:37 0 [Note] WSREP: Recovered position: {UUID}:42,0-1-42\n"
    assert parse_recovered_position(line) == GaleraPosition(UUID, 42)


@pytest.mark.parametrize("name, size, status, state, ready, synced, last", [
    ("status-bootstrap-1node.tsv", 1, "Primary", "Synced", True, True, 1),
    ("status-3node-n2.tsv", 3, "Primary", "Synced", True, True, 6),
    ("status-after-kill-n3.tsv", 2, "Primary", "Synced", True, True, 7),
    ("status-desynced.tsv", 3, "Primary", "Donor/Desynced", True, False, None),
    ("status-nonprimary.tsv", 1, "non-Primary", "Initialized", False, False, None),
], ids=["bootstrap", "three-nodes", "after-kill", "donor-desynced", "non-primary"])
def test_parse_wsrep_status_real(name, size, status, state, ready, synced, last):
    st = parse_wsrep_status(status_rows(name))
    assert (st.cluster_size, st.cluster_status, st.local_state_comment, st.ready) == (size, status, state, ready)
    assert st.synced is synced
    assert st.connected is True
    if last is not None:
        assert st.last_committed == last
        assert st.position == GaleraPosition(UUID, last)


def test_parse_wsrep_status_without_provider_reads_as_not_in_a_cluster():
    st = parse_wsrep_status([("wsrep_ready", "OFF"), ("wsrep_connected", "OFF")])
    assert (st.primary, st.synced, st.cluster_size) == (False, False, 0)
    with pytest.raises(ParseError):
        parse_wsrep_status([])


@pytest.mark.parametrize("text", ["", "abc:1", f"{UUID}", f"{UUID}:-2", f"{UUID}:1;rm -rf /"],
                         ids=["empty", "bad-uuid", "no-seqno", "below-minus-one", "injection"])
def test_position_parse_rejects(text):
    with pytest.raises(ParseError):
        GaleraPosition.parse(text)


def test_parse_wsrep_status_of_a_server_without_wsrep_real():
    st = parse_wsrep_status(status_rows("status-no-provider.tsv"))
    assert (st.cluster_status, st.cluster_size, st.ready, st.connected, st.synced) == \
        ("Disconnected", 0, False, False, False)
