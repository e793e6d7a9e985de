"""DNS core: desired RRsets from the model, the zone parser (fed with zones captured from a real
named, see data/dns/capture.py), the ownership registry and the plan's safety rules."""
import copy
import pathlib

import pytest

from salt_mailha import data as mailha_data
from salt_mailha.core import dns as core
from salt_mailha.core.errors import ParseError, Refused
from salt_mailha.core.model import parse_site

REPO = pathlib.Path(__file__).resolve().parents[2]
DATA = pathlib.Path(__file__).with_name("data") / "dns"
EXAMPLE = mailha_data.example_pillar()
APEX = "example.net."
MX = (APEX, "MX")


def site(**dns):
    pillar = copy.deepcopy(EXAMPLE)
    pillar["mailha"]["dns"].update(dns)
    return parse_site(pillar["mailha"])


def zone(name):
    return core.parse_rrsets((DATA / name).read_text())


def rdatas(rrsets, name, rdtype):
    found = rrsets.get((name, rdtype))
    return sorted(found.rdatas) if found else []


def apply(current, the_plan):
    """What the server holds after ``the_plan`` (as named applies an UPDATE)."""
    out = dict(current)
    for c in the_plan.changes:
        if c.new:
            out[(c.name, c.rdtype)] = c.new
        else:
            out.pop((c.name, c.rdtype), None)
    return out


def without_registry(rrsets):
    return {k: v for k, v in rrsets.items() if not k[0].startswith("_mailha-owner.")}


# ----------------------------------------------------------------------------------- parser


def test_parse_captured_axfr():
    z = zone("axfr_converged.txt")
    assert rdatas(z, APEX, "MX") == ["10 mail1.example.net.", "10 mail2.example.net.",
                                     "50 backup-mx.provider.example."]
    assert z[MX].ttl == 300
    assert rdatas(z, "mail.example.net.", "A") == ["192.0.2.21"]
    assert z[("mail.example.net.", "A")].ttl == 60
    assert rdatas(z, "_mailha-owner.example.net.", "TXT") == [
        '"heritage=salt-mailha,site=example,rr=MX 10 mail1.example.net."',
        '"heritage=salt-mailha,site=example,rr=MX 10 mail2.example.net."']
    assert core.soa_serial(z, "example.net") == 2


def test_query_mode_reads_the_same_managed_rrsets_as_axfr():
    axfr, query = zone("axfr_converged.txt"), zone("query_converged.txt")
    assert set(query) <= set(axfr)
    for key in query:
        assert query[key] == axfr[key], key


@pytest.mark.parametrize("text, origin, key", [
    ("@ 60 IN MX 10 mail1", "example.net", ("example.net.", "MX")),
    ("mail 60 A 192.0.2.21", "example.net.", ("mail.example.net.", "A")),
    ("MAIL.Example.NET. 60 in a 192.0.2.21", ".", ("mail.example.net.", "A")),
], ids=["apex-relative", "no-class", "case"])
def test_parse_names(text, origin, key):
    assert key in core.parse_rrsets(text, origin)


@pytest.mark.parametrize("text", ["mail.example.net. IN A 192.0.2.21", "mail.example.net. 60 IN",
                                  "mail.example.net. 60 IN a-b 1"], ids=["no-ttl", "no-type", "bad-type"])
def test_parse_rejects_garbage(text):
    with pytest.raises(ParseError, match="line 1"):
        core.parse_rrsets(text)


@pytest.mark.parametrize("rdata, expected", [
    ('"heritage=salt-mailha,site=example,rr=MX 10 mail1.example.net."',
     ("example", "rr", ("MX", "10 mail1.example.net."))),
    ('"heritage=salt-mailha,site=other,rr=A 192.0.2.21"', ("other", "rr", ("A", "192.0.2.21"))),
    ('"heritage=salt-mailha,site=example,withdrawn=mail1"', ("example", "withdrawn", "mail1")),
    ('"heritage=external-dns,external-dns/owner=default"', None),
    ('"v=spf1 mx -all"', None),
    ('"heritage=salt-mailha,site=example" "rr=A 192.0.2.1"', None),
    ('"heritage=salt-mailha,site=example,rr=A"', None),
], ids=["mx", "other-site", "withdrawn", "external-dns", "spf", "two-strings", "no-rdata"])
def test_parse_owner_txt(rdata, expected):
    assert core.parse_owner_txt(rdata) == expected


# ----------------------------------------------------------------------------------- desired


def test_desired_records_of_the_example_site():
    want = core.desired_records(site())
    assert {k: (v.ttl, sorted(v.rdatas)) for k, v in want.items()} == {
        MX: (60, ["10 mail1.example.net.", "10 mail2.example.net."]),
        ("mail.example.net.", "A"): (60, ["192.0.2.21"]),
        ("smtp.example.net.", "A"): (60, ["192.0.2.21"]),
        ("imap.example.net.", "A"): (60, ["192.0.2.21"]),
        ("pop.example.net.", "A"): (60, ["192.0.2.21"]),
        ("mail1.example.net.", "A"): (3600, ["192.0.2.17"]),
        ("mail2.example.net.", "A"): (3600, ["192.0.2.18"]),
    }


def test_desired_mx_leaves_withdrawn_nodes_out_but_keeps_their_address():
    want = core.desired_records(site(mx={"mail1": 10, "mail2": 20}), withdrawn={"mail1"})
    assert sorted(want[MX].rdatas) == ["20 mail2.example.net."]
    assert ("mail1.example.net.", "A") in want


# ----------------------------------------------------------------------------------- plan


def test_plan_from_empty_zone_adds_everything_with_ownership():
    s, current = site(), zone("axfr_empty.txt")
    p = core.plan(s, current)
    assert p.counts() == (8, 0)
    after = apply(current, p)
    assert rdatas(after, APEX, "MX") == ["10 mail1.example.net.", "10 mail2.example.net.",
                                         "50 backup-mx.provider.example."]
    assert rdatas(after, "www.example.net.", "A") == ["192.0.2.80"]
    assert rdatas(after, APEX, "TXT") == ['"v=spf1 mx -all"']
    owned, withdrawn = core.read_registry(after, "example")
    assert owned[MX] == {"10 mail1.example.net.", "10 mail2.example.net."}
    assert owned[("pop.example.net.", "A")] == {"192.0.2.21"}
    assert withdrawn == frozenset()
    # The hand MX shares the RRset: its TTL is kept, and the plan says why.
    assert after[MX].ttl == 300
    assert "keeps TTL 300" in p.text()


def test_plan_on_the_converged_captured_zone_is_empty():
    p = core.plan(site(), zone("axfr_converged.txt"))
    assert not p and p.changes == ()
    assert "is as specified" in p.text()


def test_plan_text_and_changes_list_each_rrset():
    p = core.plan(site(names=["mail", "smtp", "imap", "webmail"]), zone("axfr_converged.txt"))
    assert p.counts() == (1, 1)
    assert p.changes_dict()["webmail.example.net. A"] == {"old": [], "new": ["60 192.0.2.21"]}
    assert p.changes_dict()["pop.example.net. A"] == {"old": ["60 192.0.2.21"], "new": []}
    assert {c.name for c in p.changes} == {"webmail.example.net.", "pop.example.net.",
                                           "_mailha-owner.webmail.example.net.",
                                           "_mailha-owner.pop.example.net."}
    text = p.text()
    assert "webmail.example.net. A (ttl 60):\n  + 192.0.2.21" in text
    assert "pop.example.net. A (ttl 60):\n  - 192.0.2.21" in text


def test_a_ttl_change_is_planned_as_a_ttl_change():
    p = core.plan(site(ttl={"default": 3600, "failover": 120}), zone("axfr_converged.txt"))
    changed = {c.name: c for c in p.changes}
    assert set(changed) == {"mail.example.net.", "smtp.example.net.", "imap.example.net.",
                            "pop.example.net."}          # MX keeps 300: a hand MX shares it
    assert all(c.ttl_changed and not c.adds and not c.deletes for c in changed.values())
    assert "ttl 60 -> 120" in p.text()


def test_every_plan_converges_in_one_step():
    s = site(names=["mail", "smtp", "webmail"], mx={"mail1": 5, "mail2": 20})
    after = apply(zone("axfr_converged.txt"), core.plan(s, zone("axfr_converged.txt")))
    assert not core.plan(s, after)
    assert rdatas(after, APEX, "MX") == ["20 mail2.example.net.", "5 mail1.example.net.",
                                         "50 backup-mx.provider.example."]


def test_records_of_others_are_never_touched():
    current = zone("axfr_converged.txt")
    current[("_mailha-owner.www.example.net.", "TXT")] = core.RRset(
        "_mailha-owner.www.example.net.", "TXT", 3600,
        frozenset({'"heritage=salt-mailha,site=other,rr=A 192.0.2.80"'}))
    p = core.plan(site(names=["mail"]), current, force=True)
    after = apply(current, p)
    for key in [("www.example.net.", "A"), (APEX, "TXT"), ("ns1.example.net.", "A"),
                ("_mailha-owner.www.example.net.", "TXT")]:
        assert after[key] == current[key], key
    assert "50 backup-mx.provider.example." in after[MX].rdatas


def test_existing_unowned_record_is_a_conflict_unless_taken_over():
    current = without_registry(zone("axfr_converged.txt"))
    with pytest.raises(Refused, match=r"mail.example.net. A 192.0.2.21 already exists but is not owned.*take_over=True"):
        core.plan(site(), current)
    p = core.plan(site(), current, take_over=True)
    after = apply(current, p)
    # Adopting the MX RRset whole: the hand backup MX in it goes, the pillar's TTL applies.
    assert [(c.name, c.deletes) for c in p.record_changes] == [(APEX, ["50 backup-mx.provider.example."])]
    assert after[MX].ttl == 60
    assert core.read_registry(after, "example")[0][MX] == {"10 mail1.example.net.", "10 mail2.example.net."}


def test_take_over_replaces_foreign_records_in_managed_rrsets():
    current = zone("axfr_empty.txt")
    current[("mail.example.net.", "A")] = core.RRset("mail.example.net.", "A", 300, frozenset({"192.0.2.9"}))
    with pytest.raises(Refused, match="also holds 192.0.2.9.*split"):
        core.plan(site(), current)
    after = apply(current, core.plan(site(), current, take_over=True))
    assert rdatas(after, "mail.example.net.", "A") == ["192.0.2.21"]
    assert after[("mail.example.net.", "A")].ttl == 60
    assert rdatas(after, APEX, "MX") == ["10 mail1.example.net.", "10 mail2.example.net."]
    assert after[MX].ttl == 60


def test_withdraw_only_touches_the_mx_rrset_and_is_remembered():
    current = zone("axfr_converged.txt")
    current.pop(("mail.example.net.", "A"))  # drift elsewhere, not withdraw_mx's business
    p = core.plan(site(), current, withdraw=("mail1",), only=(MX,))
    assert {c.name for c in p.changes} == {APEX, "_mailha-owner.example.net."}
    after = apply(current, p)
    assert rdatas(after, APEX, "MX") == ["10 mail2.example.net.", "50 backup-mx.provider.example."]
    assert core.read_registry(after, "example")[1] == {"mail1"}
    # A full run keeps it withdrawn (and fixes the drift), restore brings it back.
    full = core.plan(site(), after)
    assert {c.name for c in full.record_changes} == {"mail.example.net."}
    restored = apply(after, core.plan(site(), after, restore=("mail1",), only=(MX,)))
    assert "10 mail1.example.net." in restored[MX].rdatas
    assert core.read_registry(restored, "example")[1] == frozenset()


def test_withdraw_is_refused_for_the_last_mx():
    current = {k: v for k, v in zone("axfr_withdrawn.txt").items()}
    current[MX] = core.RRset(APEX, "MX", 60, frozenset({"10 mail2.example.net."}))
    with pytest.raises(Refused, match="withdrawing mail2 would remove the last MX record of example.net."):
        core.plan(site(), current, withdraw=("mail2",), only=(MX,))
    # With a hand-made backup MX left in place it is not the last one.
    p = core.plan(site(), zone("axfr_withdrawn.txt"), withdraw=("mail2",), only=(MX,))
    assert rdatas(apply(zone("axfr_withdrawn.txt"), p), APEX, "MX") == ["50 backup-mx.provider.example."]


def test_withdraw_of_an_unknown_node_names_the_pillar_key():
    with pytest.raises(Refused, match="'db1' has no MX in pillar mailha:dns:mx"):
        core.plan(site(), zone("axfr_converged.txt"), withdraw=("db1",), only=(MX,))


def test_removing_a_name_from_the_pillar_releases_it():
    p = core.plan(site(names=["mail", "smtp", "imap"]), zone("axfr_converged.txt"))
    assert p.counts() == (0, 1)
    after = apply(zone("axfr_converged.txt"), p)
    assert ("pop.example.net.", "A") not in after
    assert ("_mailha-owner.pop.example.net.", "TXT") not in after


@pytest.mark.parametrize("share, force, refused", [
    (0.3, False, True), (0.3, True, False), (0.6, False, False),
], ids=["over-share", "forced", "share-allows"])
def test_max_delete_share(share, force, refused):
    s = site(names=[], max_delete_share=share)          # deletes 4 of the 8 records we own
    if refused:
        with pytest.raises(Refused, match=r"deletes 4 of the 8 record\(s\).*max_delete_share 30%.*force=True"):
            core.plan(s, zone("axfr_converged.txt"), force=force)
    else:
        assert core.plan(s, zone("axfr_converged.txt"), force=force).counts() == (0, 4)


def test_changing_the_vip_is_an_update_not_a_delete():
    pillar = copy.deepcopy(EXAMPLE)
    pillar["mailha"]["vips"]["mail"]["address"] = "192.0.2.23"
    s = parse_site(pillar["mailha"])
    p = core.plan(s, zone("axfr_converged.txt"))          # 4 of 8 replaced: under the 30% rule
    assert p.counts() == (4, 4)
    assert rdatas(apply(zone("axfr_converged.txt"), p), "smtp.example.net.", "A") == ["192.0.2.23"]


def test_never_empties_the_a_of_a_name_still_in_use():
    pillar = copy.deepcopy(EXAMPLE)
    # mail1's address on the public network is gone (moved to the private one only).
    del pillar["mailha"]["nodes"]["mail1"]["addresses"]["public"]
    s = parse_site(pillar["mailha"])
    with pytest.raises(Refused, match="last A record of mail1.example.net., a name the pillar still uses"):
        core.plan(s, zone("axfr_converged.txt"), force=True)


def test_refusal_lists_every_problem_and_nothing_is_planned():
    current = without_registry(zone("axfr_converged.txt"))
    with pytest.raises(Refused) as exc:
        core.plan(site(), current)
    assert str(exc.value).count("already exists but is not owned") == 7


def test_core_never_imports_salt():
    import ast

    tree = ast.parse((REPO / "salt_mailha/core/dns.py").read_text())
    mods = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    mods |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not any(m == "salt" or m.startswith("salt.") or m.startswith("dns") for m in mods)
