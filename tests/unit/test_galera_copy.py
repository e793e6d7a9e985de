"""Is a stopped member's datadir a complete copy of the history? ``assess_copy`` and
``last_joiner_transfer`` fed with files captured from real MariaDB 10.11 + galera-4 runs where a
rejoining member's rsync SST was cut off by a power loss (tests/unit/data/galera/README.md)."""

import pathlib

import pytest

from salt_mailha.core.galera import (
    SST_MARKERS,
    ZERO_UUID,
    GaleraPosition,
    assess_copy,
    last_joiner_transfer,
    parse_recovered_position,
)

DATA = pathlib.Path(__file__).parent / "data" / "galera"
CUT = GaleraPosition("c2ecc930-ee33-11f1-80be-23679c68f29c", 65)  # the donor's, recovered on the joiner
OLD = "d84ce8f4-e8c9-11f1-876c-fa62e30020a8"


def read(name):
    return (DATA / name).read_text()


def recovered(name):
    return parse_recovered_position(read(name))


@pytest.mark.parametrize("log, expected", [
    ("joiner-sst-cut-after-copy.log", ("2026-12-02 9:36:05", False)),
    ("joiner-sst-cut-mid-copy.log", ("2026-12-02 9:36:41", False)),
    # SST installed, then the donor died during IST: the copy is whole at the SST position
    ("joiner-donor-killed-during-ist.log", ("2026-12-02 9:40:00", True)),
    ("member-complete-after-power-cut.log", None),  # the bootstrap node never received an SST
    ("joiner-error-log-excerpt.log", None),  # an excerpt from after the transfer: no evidence either way
], ids=["cut-after-copy", "cut-mid-copy", "donor-killed-in-ist", "never-a-joiner", "excerpt-without-start"])
def test_last_joiner_transfer_real_logs(log, expected):
    assert last_joiner_transfer(read(log)) == expected


def test_a_cut_transfer_followed_by_a_synced_start_is_history():
    """One error log across restarts: the cut SST, then the datadir re-initialized and the node
    bootstrapped (Synced): the old cut says nothing about today's datadir."""
    log = read("joiner-sst-cut-mid-copy.log") + read("member-complete-after-power-cut.log")
    assert last_joiner_transfer(log) == ("2026-12-02 9:36:41", True)
    assert assess_copy(read("grastate-after-kill9.dat"), recovered("recover-after-kill9.log"), (), log).complete


def test_recovery_of_a_cut_joiner_returns_the_donors_position():
    """Why grastate.dat alone is not enough: InnoDB on the half-joined node recovers the
    donor's checkpoint, exactly like a complete member's."""
    assert recovered("recover-sst-cut-joiner.log") == CUT
    assert read("grastate-sst-cut-joiner.dat") == ""


CASES = [
    # id, grastate file (None: missing), recovered (file or position), markers, log, incomplete?, words
    ("issue-scenario-cut-after-copy", "grastate-sst-cut-joiner.dat", "recover-sst-cut-joiner.log",
     ("sst_in_progress", "rsync_sst_complete"), "joiner-sst-cut-after-copy.log", True,
     ["sst_in_progress is in the datadir", "rsync_sst_complete", "never completed",
      f"grastate.dat is empty but InnoDB recovers {CUT}"]),
    ("marker-alone", "grastate-after-kill9.dat", None, ("sst_in_progress",), None, True,
     ["sst_in_progress is in the datadir"]),
    ("mariabackup-staging-dir", "grastate-after-kill9.dat", None, (".sst",), None, True, [".sst is in the datadir"]),
    # the script's cleanup ran (marker gone) but mariadbd died before accepting the state
    ("log-alone-marker-cleaned", "grastate-sst-cut-joiner.dat", None, (), "joiner-sst-cut-mid-copy.log", True,
     ["requested at 2026-12-02 9:36:41 that never completed"]),
    ("empty-grastate-but-innodb-has-a-position", "grastate-sst-cut-joiner.dat", "recover-sst-cut-joiner.log",
     (), None, True, ["grastate.dat is empty but InnoDB recovers"]),
    ("missing-grastate-but-innodb-has-a-position", None, "recover-sst-cut-joiner.log", (), None, True,
     ["no grastate.dat but InnoDB recovers"]),
    ("zero-uuid-grastate-but-innodb-has-a-position", "zero", "recover-sst-cut-joiner.log", (), None, True,
     ["grastate.dat has the zero UUID"]),
    ("grastate-and-innodb-disagree", "grastate-after-kill9.dat", "recover-sst-cut-joiner.log", (), None, True,
     [f"grastate.dat says cluster {OLD} but InnoDB recovers {CUT}"]),
    # complete copies
    ("crashed-member", "grastate-after-kill9.dat", "recover-after-kill9.log", (), "member-complete-after-power-cut.log",
     False, []),
    ("donor-killed-during-ist-is-whole-at-65", "grastate-donor-killed-joiner.dat", "recover-donor-killed-joiner.log",
     (), "joiner-donor-killed-during-ist.log", False, []),
    ("clean-shutdown", "grastate-clean-shutdown-first.dat", None, (), None, False, []),
    ("never-joined-fresh-datadir", "grastate-empty-never-joined.dat", "recover-fresh-datadir.log", (), None, False, []),
    ("no-grastate-fresh-datadir", None, "recover-fresh-datadir.log", (), None, False, []),
]


@pytest.mark.parametrize("gs, rec, markers, log, bad, words", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_assess_copy(gs, rec, markers, log, bad, words):
    text = None if gs is None else f"uuid: {ZERO_UUID}\nseqno: -1\nsafe_to_bootstrap: 0\n" if gs == "zero" else read(gs)
    a = assess_copy(text, recovered(rec) if rec else None, markers, read(log) if log else None)
    assert a.complete is (not bad), a.incomplete
    text_all = " | ".join(a.incomplete)
    for w in words:
        assert w in text_all


def test_position_comes_from_grastate_when_it_knows_else_from_innodb():
    assert assess_copy(read("grastate-clean-shutdown-first.dat")).position == GaleraPosition(OLD, 15)
    assert assess_copy(read("grastate-after-kill9.dat"), recovered("recover-after-kill9.log")).position == \
        recovered("recover-after-kill9.log")
    assert assess_copy(read("grastate-after-kill9.dat")).position == GaleraPosition(OLD, -1)
    assert assess_copy(None).position is None


def test_markers_are_the_ones_the_sst_scripts_clean_up():
    assert SST_MARKERS == ("sst_in_progress", "rsync_sst_complete", ".sst")
