"""core.ldap: contextCSN parsing and the agreement decision (fed with real slapd output from
tests/unit/data/ldap, see capture.py there), the slapd.conf merge, the cn=config plan."""
import copy
import pathlib

import pytest

from salt_mailha import data as mailha_data
from salt_mailha.core import ldap
from salt_mailha.core.errors import ParseError, ValidationError
from salt_mailha.core.model import parse_site
from salt_mailha.core.secret import redact
from tests.support.slapd import iredmail_like_conf

DATA = pathlib.Path(__file__).parent / "data" / "ldap"
EXAMPLE = mailha_data.example_pillar()
SUFFIX = "dc=example,dc=net"


def site_from(mutate=None, port=389):
    data = copy.deepcopy(EXAMPLE["mailha"])
    data["ldap"]["replication"]["credentials"] = data["ldap"]["rootpw"]
    data["ldap"]["port"] = port
    if mutate:
        mutate(data)
    return parse_site(data)


def csns(name):
    return ldap.parse_ldif_context_csns((DATA / name).read_text())[SUFFIX]


# ---------------------------------------------------------------------------------- contextCSN


def test_parse_real_context_csn_agreement():
    one, two = csns("contextcsn-agree-mail1.ldif"), csns("contextcsn-agree-mail2.ldif")
    assert sorted(one) == [1, 2]
    assert one == two
    assert one[1].text == "20261125122523.069929Z#000000#001#000000"
    assert one[1].time.microsecond == 69929 and one[1].sid == 1 and one[1].count == 0


def test_parse_real_output_without_context_csn():
    # before mirror mode (no syncprov overlay) the suffix entry carries no contextCSN
    assert ldap.parse_ldif_context_csns((DATA / "contextcsn-before-mirrormode.ldif").read_text()) == {SUFFIX: {}}


@pytest.mark.parametrize("value", [
    "20261125122523.069929Z#000000#001",  # field missing
    "20261125122523Z#000000#001#000000",  # no microseconds
    "20261125122523.069929Z#00000g#001#000000",  # not hex
    "garbage",
], ids=["short", "no-usec", "not-hex", "garbage"])
def test_parse_csn_refuses_malformed(value):
    with pytest.raises(ParseError, match="not a CSN"):
        ldap.parse_csn(value)


def test_parse_csn_hex_fields():
    c = ldap.parse_csn(b"20261125122523.069929Z#00000a#00f#000001")
    assert (c.count, c.sid, c.mod) == (10, 15, 1)


def test_two_values_for_one_server_id_is_a_parse_error():
    with pytest.raises(ParseError, match="serverID 1"):
        ldap.parse_context_csns(["20261125122523.069929Z#000000#001#000000",
                                 "20261125122524.069929Z#000000#001#000000"])


def test_ldif_continuation_lines_are_joined():
    text = "dn: dc=example,dc=net\ncontextCSN: 20261125122523.069929Z#000000\n #001#000000\n\n"
    assert ldap.parse_ldif_context_csns(text)[SUFFIX][1].sid == 1


# ---------------------------------------------------------------------------------- decision


def test_real_agreement_is_agreement():
    v = ldap.compare_replication({"mail1": csns("contextcsn-agree-mail1.ldif"),
                                  "mail2": csns("contextcsn-agree-mail2.ldif")})
    assert v.agree is True
    assert v.lag == {"mail1": 0.0, "mail2": 0.0}
    assert v.reason == "2 providers agree on 2 serverID(s)"


def test_real_lag_while_mail2_was_down():
    # mail1 took writes while mail2 was down; mail2's last view is the one it had before
    v = ldap.compare_replication({"mail1": csns("contextcsn-mail2-down-mail1.ldif"),
                                  "mail2": csns("contextcsn-agree-mail2.ldif")})
    assert v.agree is False
    assert v.behind == {"mail2": [1]}
    assert v.lag["mail1"] == 0.0
    assert v.lag["mail2"] == pytest.approx(0.214352)
    assert v.reason == "mail2 is behind on serverID 1 by 0.214 s"


@pytest.mark.parametrize("views,agree,reason", [
    ({}, False, "no LDAP providers to compare"),
    ({"mail1": None, "mail2": None}, False, "cannot read mail1, mail2"),
    ({"mail1": "agree", "mail2": None}, False, "cannot read mail2"),
    ({"mail1": "agree", "mail2": {}}, False, "mail2 is behind on serverID 1,2 by 0.632 s"),
], ids=["none", "all-down", "one-down", "empty-peer"])
def test_decision_table(views, agree, reason):
    views = {k: (csns("contextcsn-agree-mail1.ldif") if v == "agree" else v) for k, v in views.items()}
    v = ldap.compare_replication(views)
    assert (v.agree, v.reason) == (agree, reason)


# ---------------------------------------------------------------------------------- servers


def test_servers_follow_mail_node_order_and_private_address():
    assert ldap.mirror_servers(site_from()) == (
        ldap.MirrorServer("mail1", 1, "ldap://10.1.1.17:389/"),
        ldap.MirrorServer("mail2", 2, "ldap://10.1.1.18:389/"),
    )


def test_server_id_override():
    def mutate(d):
        d["ldap"]["servers"] = {"mail1": {"server_id": 7, "url": "ldap://10.1.1.17:389/"}}
    assert [s.server_id for s in ldap.mirror_servers(site_from(mutate))] == [7, 2]


def test_server_id_override_colliding_with_a_default_is_refused():
    def mutate(d):
        d["ldap"]["servers"] = {"mail1": {"server_id": 2, "url": "ldap://10.1.1.17:389/"}}
    with pytest.raises(ValidationError, match="mailha:ldap:servers:mail2:server_id"):
        ldap.mirror_servers(site_from(mutate))


def test_replication_as_rootdn_with_another_password_is_refused():
    data = copy.deepcopy(EXAMPLE["mailha"])
    data["ldap"]["replication"]["credentials"] = "CHANGE-ME-other"
    with pytest.raises(ValidationError, match="mailha:ldap:replication:credentials") as exc:
        parse_site(data)
    assert "CHANGE-ME" not in str(exc.value)


# ---------------------------------------------------------------------------------- slapd.conf


def test_merge_into_iredmail_conf_keeps_every_line_and_is_idempotent():
    site = site_from()
    base = iredmail_like_conf("/srv/ldap", SUFFIX, "cn=Manager," + SUFFIX, "pw")
    merged = ldap.merge_slapd_conf(base, site)
    assert ldap.merge_slapd_conf(merged, site) == merged
    kept = [line for line in merged.splitlines() if line not in _managed_lines(merged)]
    assert kept == base.splitlines()
    lines = merged.splitlines()
    # global part before the first database, database part at the end of the mdb database
    assert lines.index("serverID    1 ldap://10.1.1.17:389/") < lines.index("database monitor")
    assert lines.index("mirrormode  on") > lines.index("database    mdb")
    assert "moduleload  syncprov" in lines
    assert "modulepath  /usr/lib/ldap" not in _managed_lines(merged)  # iRedMail's file has one
    assert not any(line.startswith("index") for line in _managed_lines(merged))  # already indexed
    # syncrepl before mirrormode before the overlay: slapd needs that order
    assert lines.index("syncrepl    rid=002") < lines.index("mirrormode  on") < lines.index("overlay     syncprov")


def _managed_lines(text):
    out, inside = [], False
    for line in text.splitlines():
        if line.startswith("# BEGIN salt-mailha"):
            inside = True
        if inside:
            out.append(line)
        if line.startswith("# END salt-mailha"):
            inside = False
    return out


MINIMAL = """include /etc/ldap/schema/core.schema
pidfile /run/slapd.pid

database mdb
suffix "dc=other,dc=org"
directory /var/lib/ldap/other

database mdb
suffix "DC=Example, DC=Net"
directory /var/lib/ldap/example
rootdn cn=Manager,dc=example,dc=net
index objectClass eq
"""


def test_merge_minimal_conf_adds_module_path_and_indexes_in_the_right_database():
    merged = ldap.merge_slapd_conf(MINIMAL, site_from())
    managed = _managed_lines(merged)
    assert "modulepath  /usr/lib/ldap" in managed and "moduleload  syncprov" in managed
    assert "index       entryCSN,entryUUID eq" in managed
    lines = merged.splitlines()
    assert lines.index("index objectClass eq") < lines.index("mirrormode  on")  # second database
    assert merged.endswith("# END salt-mailha ldap mirrormode (database)\n")


def test_pillar_change_replaces_the_block():
    first = ldap.merge_slapd_conf(MINIMAL, site_from())
    second = ldap.merge_slapd_conf(first, site_from(port=3389))
    assert "ldap://10.1.1.17:3389/" in second and "ldap://10.1.1.17:389/" not in second
    assert second.count("# BEGIN salt-mailha") == 2
    assert second == ldap.merge_slapd_conf(MINIMAL, site_from(port=3389))


@pytest.mark.parametrize("extra,where,message", [
    ("moduleload syncprov.la\n", "global", None),
    ("serverID 1 ldap://mail1/\n", "global", "line 2: serverid is set outside"),
    ("syncrepl rid=1 provider=ldap://mail1/\n", "db", "syncrepl is set outside"),
    ("overlay syncprov\n", "db", "overlay syncprov is set outside"),
    ("MirrorMode on\n", "db", "mirrormode is set outside"),
    ("index entryCSN pres\n", "db", "entryCSN is indexed without 'eq'"),
], ids=["module-present", "serverid", "syncrepl", "overlay", "mirrormode", "index-no-eq"])
def test_existing_replication_settings(extra, where, message):
    text = MINIMAL.replace("pidfile", extra + "pidfile") if where == "global" else MINIMAL + extra
    if message is None:
        merged = ldap.merge_slapd_conf(text, site_from())
        assert "moduleload  syncprov" not in merged  # loaded once, by the existing line
        return
    with pytest.raises(ldap.ConfigConflict, match=message):
        ldap.merge_slapd_conf(text, site_from())


@pytest.mark.parametrize("text,message", [
    ("database mdb\nsuffix dc=other,dc=org\n", "no database with suffix 'dc=example,dc=net'"),
    ("include /etc/ldap/schema/core.schema\n", "has no 'database' section"),
    (MINIMAL.replace("rootdn cn=Manager,dc=example,dc=net\n", ""), "has no rootdn"),
    (MINIMAL + "# BEGIN salt-mailha ldap mirrormode (database)\nmirrormode on\n", "has no END marker"),
    (MINIMAL + "# END salt-mailha ldap mirrormode (global)\n", "END marker of 'global' without its BEGIN"),
], ids=["wrong-suffix", "not-slapd", "no-rootdn", "no-end", "stray-end"])
def test_merge_refuses(text, message):
    with pytest.raises(ldap.ConfigConflict, match=message):
        ldap.merge_slapd_conf(text, site_from())


def test_rendering_is_deterministic_and_holds_the_credential_only_in_syncrepl():
    site = site_from()
    a, b = ldap.render_mirrormode(site), ldap.render_mirrormode(site)
    assert a == b
    secret = site.ldap.replication.credentials.reveal()
    hits = [line for line in a.global_lines + a.database_lines if secret in line]
    assert hits == [f'            credentials="{secret}"'] * 2
    shown = redact("\n".join(a.database_lines), site.secrets())
    assert secret not in shown and 'credentials="<redacted>"' in shown


@pytest.mark.parametrize("value", ['pa"ss', "pa\\ss", "pa\nss"], ids=["quote", "backslash", "newline"])
def test_values_slapd_cannot_hold_are_refused_before_rendering(value):
    """The replication credential (here rootpw: replication binds as the rootdn) is refused by
    the model, naming the key, never the value."""
    p = copy.deepcopy(EXAMPLE["mailha"])
    p["ldap"]["rootpw"] = value
    with pytest.raises(ValidationError) as exc:
        parse_site(p)
    assert [k for k, _ in exc.value.problems] == ["mailha:ldap:rootpw"]
    assert "slapd" in str(exc.value) and value not in str(exc.value)


# ---------------------------------------------------------------------------------- cn=config


def _readback():
    """The real cn=config database entry after our state ran (port 34209 on 127.0.1.17/18)."""
    vals = {}
    for line in (DATA / "cnconfig-database-readback.ldif").read_text().splitlines():
        if ": " in line:
            k, v = line.split(": ", 1)
            vals.setdefault(k, []).append(v)
    return vals


def _loop_site():
    def mutate(d):
        d["networks"]["loop"] = "127.0.0.0/8"
        d["nodes"]["mail1"]["addresses"]["loop"] = "127.0.1.17"
        d["nodes"]["mail2"]["addresses"]["loop"] = "127.0.1.18"
        d["ldap"]["network"] = "loop"
    return site_from(mutate, port=34209)


def _live(**kw):
    r = _readback()
    base = dict(
        server_ids=("1 ldap://127.0.1.17:34209/", "2 ldap://127.0.1.18:34209/"),
        modules=(("cn=module{0},cn=config", ("back_mdb", "back_monitor", "syncprov")),),
        database_dn=r["dn"][0], indexes=tuple(r["olcDbIndex"]),
        syncrepls=tuple(ldap.strip_order(v) for v in r["olcSyncrepl"]), multiprovider=True,
        overlay_dn="olcOverlay={0}syncprov," + r["dn"][0],
        overlay=(("olcSpCheckpoint", "100 10"), ("olcSpSessionlog", "100")),
    )
    base.update(kw)
    return ldap.CnConfigLive(**base)


def test_real_cnconfig_readback_needs_nothing():
    assert ldap.plan_cnconfig(ldap.desired_cnconfig(_loop_site()), _live()) == []


def test_parse_real_syncrepl_readback():
    p = ldap.parse_syncrepl(_readback()["olcSyncrepl"][0])
    assert p["rid"] == "001" and p["retry"] == "1 60 5 +" and p["binddn"] == "cn=Manager,dc=example,dc=net"


def test_fresh_cnconfig_gets_every_step_in_order():
    live = _live(server_ids=(), modules=(("cn=module{0},cn=config", ("back_mdb",)),),
                 indexes=("objectClass eq",), syncrepls=(), multiprovider=False, overlay_dn=None, overlay=())
    ops = ldap.plan_cnconfig(ldap.desired_cnconfig(_loop_site()), live)
    assert [(o.kind, o.dn) for o in ops] == [
        ("modify", "cn=module{0},cn=config"),
        ("modify", "cn=config"),
        ("modify", "olcDatabase={2}mdb,cn=config"),
        ("add", "olcOverlay=syncprov,olcDatabase={2}mdb,cn=config"),
        ("modify", "olcDatabase={2}mdb,cn=config"),
    ]
    assert ops[2].changes == (("olcDbIndex", "add", ("entryCSN eq", "entryUUID eq")),)
    assert [a for a, _, _ in ops[-1].changes] == ["olcSyncrepl", "olcMultiProvider"]
    site = _loop_site()
    shown = redact(ldap.describe_ops(ops, live), site.secrets())
    assert shown["cn=config"] == {"old": {"olcServerID": []},
                                  "new": {"olcServerID": ["1 ldap://127.0.1.17:34209/",
                                                          "2 ldap://127.0.1.18:34209/"]}}
    assert site.ldap.rootpw.reveal() not in repr(shown)


def test_no_module_list_adds_one():
    ops = ldap.plan_cnconfig(ldap.desired_cnconfig(_loop_site()), _live(modules=()))
    assert [(o.kind, o.dn) for o in ops] == [("add", "cn=module,cn=config")]


def test_changed_password_replaces_syncrepl_only():
    def mutate(d):
        d["networks"]["loop"] = "127.0.0.0/8"
        d["nodes"]["mail1"]["addresses"]["loop"] = "127.0.1.17"
        d["nodes"]["mail2"]["addresses"]["loop"] = "127.0.1.18"
        d["ldap"]["network"] = "loop"
        d["ldap"]["rootpw"] = d["ldap"]["replication"]["credentials"] = "a-new-one"
    ops = ldap.plan_cnconfig(ldap.desired_cnconfig(site_from(mutate, port=34209)), _live())
    assert [(o.dn, [c[0] for c in o.changes]) for o in ops] == [("olcDatabase={2}mdb,cn=config", ["olcSyncrepl"])]


@pytest.mark.parametrize("live,message", [
    (dict(database_dn=None), "no database with olcSuffix"),
    (dict(indexes=("entryCSN pres", "entryUUID eq")), "entryCSN is indexed without 'eq'"),
    (dict(has_rootdn=False), "has no olcRootDN"),
], ids=["no-database", "index-no-eq", "no-rootdn"])
def test_cnconfig_refuses(live, message):
    with pytest.raises(ldap.ConfigConflict, match=message):
        ldap.plan_cnconfig(ldap.desired_cnconfig(_loop_site()), _live(**live))


def _unfold(path):
    vals = {}
    last = None
    for line in path.read_text().splitlines():
        if line.startswith(" ") and last:
            vals[last][-1] += line[1:]
        elif ": " in line:
            last, v = line.split(": ", 1)
            vals.setdefault(last, []).append(v)
    return vals


def test_cn_config_converted_by_slaptest_needs_nothing():
    # slaptest -F reorders rids, lower-cases binddn and adds its defaults: still "as specified"
    r = _unfold(DATA / "cnconfig-converted-by-slaptest.ldif")
    assert [ldap.parse_syncrepl(v)["rid"] for v in r["olcSyncrepl"]] == ["002", "001"]
    live = ldap.CnConfigLive(
        server_ids=tuple(r["olcServerID"]), modules=(("cn=module{0},cn=config", ("back_mdb", "syncprov")),),
        database_dn=r["dn"][0], indexes=tuple(r["olcDbIndex"]), syncrepls=tuple(r["olcSyncrepl"]),
        multiprovider=r["olcMultiProvider"] == ["TRUE"], overlay_dn="olcOverlay={0}syncprov," + r["dn"][0],
        overlay=(("olcSpCheckpoint", "100 10"), ("olcSpSessionlog", "100")))
    assert ldap.plan_cnconfig(ldap.desired_cnconfig(site_from()), live) == []
    moved = ldap.plan_cnconfig(ldap.desired_cnconfig(site_from(port=3389)), live)
    assert [c[0] for o in moved for c in o.changes] == ["olcServerID", "olcSyncrepl"]


def test_old_credential_is_masked_in_a_diff():
    # after a password change the old value is no longer a pillar secret: mask it by shape
    old = ldap.merge_slapd_conf(MINIMAL, site_from())
    live = _live(syncrepls=tuple(ldap.strip_order(v) for v in _readback()["olcSyncrepl"]))
    def mutate(d):
        d["ldap"]["rootpw"] = d["ldap"]["replication"]["credentials"] = "brand-new"
    shown = ldap.mask_credentials({"lines": old.splitlines(), "ops": ldap.describe_ops(
        ldap.plan_cnconfig(ldap.desired_cnconfig(site_from(mutate, port=34209)), live), live)})
    text = repr(shown)
    assert "CHANGE-ME-ldap-root" not in text and "brand-new" not in text
    assert text.count('credentials="<redacted>"') == 2 + 4  # 2 in the file, 2 old + 2 new syncrepls


def test_slapd_default_listens_on_each_nodes_serverid_url_exactly():
    """slapd refuses to start ("no serverID / URL match") unless -h holds its serverID URL."""
    site = site_from()
    for server in ldap.mirror_servers(site):
        text = ldap.render_slapd_default(site, site.node(server.node))
        services = next(line for line in text.splitlines() if line.startswith("SLAPD_SERVICES="))
        assert server.url in services.split('"')[1].split()
        assert "SLAPD_CONF=/etc/ldap/slapd.conf" in text
