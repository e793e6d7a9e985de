"""Each output format against its real parser, fed generated values by character class.

For every (pillar key, output format) a seeded generator draws values from each character class
(``CLASSES``) and puts each into a copy of the example pillar. Then either ``parse_site`` refuses
it, naming exactly that key and never showing the value, or the project's real renderer writes
the file and the format's own parser (my_print_defaults, keepalived's config dump, ldirectord's
own ``read_config``, slaptest and its cn=config round trip, postconf, doveconf, bash,
named-checkconf) reads back exactly the value. ``EXPECT`` says which classes a format must
refuse outright and which it must carry, so neither a gate that refuses everything nor a renderer
that cuts values passes. The counts per format, class and outcome are printed at the end of the
run (``conftest.py``) and kept in ``COUNTS``.
"""

import base64
import collections
import concurrent.futures
import copy
import random
import re
import shutil
import subprocess
from dataclasses import dataclass

import pytest

from salt_mailha.core import dns, galera, lb, ldap, mail
from salt_mailha.core.errors import ValidationError
from salt_mailha.core.model import parse_site
from tests.support.example import example_pillar

pytestmark = pytest.mark.integration

SEED = 15
PER_CLASS = 12
PER_CLASS_OVERRIDE = {"ascii-specials": 40}  # the class most formats treat specially: more cases
COUNTS = collections.Counter()  # (target, class, "refused" | "read back") -> cases

# ------------------------------------------------------------------------------ generators

ALNUM = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
SPECIALS = "\"'\\#;{}$ %!&*()[]<>|`~^=,+:/?@.-_"
NON_ASCII = "éßøЖж中文ü€☃\u0301\u00a0🙂"
CONTROLS = [chr(c) for c in (*range(0, 9), 11, 12, *range(14, 32), 127, 0x85, 0x9F)]


def _word(rng, n, alphabet):
    return "".join(rng.choice(alphabet) for _ in range(n))


def _around(rng, maxlen, bad):
    """A value of ``maxlen`` characters at most with one or two ``bad`` characters inside it."""
    n = rng.randint(1, max(1, maxlen - 2))
    body = list(_word(rng, n, ALNUM))
    for _ in range(rng.randint(1, 2)):
        body.insert(rng.randint(0, len(body)), rng.choice(bad))
    return "".join(body)[:maxlen] if maxlen >= 2 else rng.choice(bad)


def _name(rng, m):
    """A host-name-like value: dot-separated labels of letters, digits and inner '-'."""
    labels = []
    for _ in range(rng.randint(1, 4)):
        n = rng.randint(1, 12)
        label = _word(rng, n, ALNUM)
        if n > 2:
            label = label[0] + _word(rng, n - 2, ALNUM + "-") + label[-1]
        labels.append(label)
    return ".".join(labels)[:m].strip(".-") or "a"


CLASSES = {
    # what every format carries: the baseline that a gate refusing too much would fail
    "name-like": _name,
    # printable ASCII, weighted towards what config formats treat specially
    "ascii-specials": lambda rng, m: _word(rng, rng.randint(1, min(m, 24)), SPECIALS + ALNUM[:10]),
    "blank-edges": lambda rng, m: (" " * rng.randint(1, 2) + _word(rng, min(m, 8) - 4, ALNUM)
                                   + " " * rng.randint(0, 1)),
    "line-breaks": lambda rng, m: _around(rng, m, "\n\r"),
    "tab": lambda rng, m: _around(rng, m, "\t"),
    "control": lambda rng, m: _around(rng, m, CONTROLS),
    "non-ascii": lambda rng, m: _around(rng, max(2, m // 2), NON_ASCII),
    "long": lambda rng, m: _word(rng, rng.randint(min(m, 200), min(m, 1500)), ALNUM + "-_.:"),
    "unicode-line-separators": lambda rng, m: _around(rng, m, "\u2028\u2029"),
    "lone-surrogate": lambda rng, m: _around(rng, m, ["\ud800", "\udfff"]),
}


def generate(target, cls):
    rng = random.Random(f"{SEED}:{target.name}:{cls}")
    values, seen = [], set()
    while len(values) < PER_CLASS_OVERRIDE.get(cls, PER_CLASS):
        v = CLASSES[cls](rng, target.maxlen)
        if v and v not in seen:
            seen.add(v)
            values.append(v)
    return values


# ---------------------------------------------------------------------------------- oracles


def _run(argv, **kw):
    return subprocess.run(argv, capture_output=True, timeout=60, **kw)


def my_print_defaults(tmp, texts):
    out = []
    for i, text in enumerate(texts):
        f = tmp / f"galera{i}.cnf"
        f.write_text(text, encoding="utf-8")
        res = _run(["my_print_defaults", f"--defaults-file={f}", "mysqld"])
        assert res.returncode == 0, res.stderr
        opts = [line for line in res.stdout.decode("utf-8").split("\n") if line.startswith("--wsrep_sst_auth=")]
        assert len(opts) == 1, opts
        out.append(opts[0].removeprefix("--wsrep_sst_auth="))
    return out


KEEPALIVED_INSTANCE = """vrrp_instance I{i} {{
    state BACKUP
    interface v0
    virtual_router_id {vrid}
    priority 100
    authentication {{
        auth_type PASS
{line}
    }}
    virtual_ipaddress {{
        192.0.2.{vrid}/32
    }}
}}
"""


def keepalived_dump(tmp, lines):
    """keepalived's own view of each ``auth_pass`` line: ``-t`` accepts the file, then keepalived
    runs (in a network namespace of its own) with ``--dump-conf`` and prints each instance's
    password as it parsed it."""
    conf = tmp / "keepalived.conf"
    conf.write_bytes("".join(KEEPALIVED_INSTANCE.format(i=i, vrid=i + 1, line=line)
                             for i, line in enumerate(lines)).encode("utf-8"))
    script = (f"ip link add v0 type veth peer name v1 && ip link set v0 up && ip link set lo up && "
              f"keepalived -t -f {conf} -l; echo CONFIG-TEST-RC=$?; "
              f"timeout 2 keepalived -n -l -D -d --vrrp -f {conf} -p {tmp}/k.pid -r {tmp}/v.pid 2>&1; true")
    res = _run(["unshare", "-n", "sh", "-c", script])
    text = res.stdout.decode("utf-8", "surrogateescape")
    assert "CONFIG-TEST-RC=0" in text, text[-3000:]
    found, current = {}, None
    for line in text.split("\n"):
        m = re.search(r": +VRRP Instance = I(\d+)$", line)
        if m:
            current = int(m.group(1))
        m = re.search(r": +Password = (.*)$", line)
        if m and current is not None:
            found[current] = m.group(1)
    return [found.get(i) for i in range(len(lines))]


LDIRECTORD_READ = r"""
my $src = do { local $/; open my $f, "<", "/usr/sbin/ldirectord" or die "ldirectord: $!"; <$f> };
$src =~ s/^__END__.*//ms;
eval "package main; return 1;\n" . $src;  # compile ldirectord's subs, run none of its main
die $@ if $@;
no warnings;
*main::ld_log = sub {};
*main::config_error = sub { die "config error line $_[0]: $_[1]\n" };
for my $file (@ARGV) {
    $main::CONFIG = $file;
    main::read_config();
    my ($mysql) = grep { $_->{service} eq "mysql" } @main::VIRTUAL;
    my ($http) = grep { $_->{service} eq "http" } @main::VIRTUAL;
    print join(" ", map { unpack("H*", $_) . "." } ($mysql->{login}, $mysql->{passwd}, $http->{receive})), "\n";
}
"""


def ldirectord_read(tmp, texts):
    """ldirectord's own ``read_config`` (the installed script's code, its main not run) on each
    rendered ldirectord.cf: ``(login, passwd, receive)`` of the mysql and http checks."""
    files = []
    for i, text in enumerate(texts):
        f = tmp / f"ldirectord{i}.cf"
        f.write_bytes(text.encode("utf-8"))
        files.append(str(f))
    (tmp / "read.pl").write_text(LDIRECTORD_READ)
    res = _run(["perl", str(tmp / "read.pl"), *files])
    assert res.returncode == 0, res.stderr.decode()
    rows = [tuple(bytes.fromhex(h.rstrip(".")).decode("utf-8") for h in line.split())
            for line in res.stdout.decode().splitlines()]
    assert len(rows) == len(texts) and all(len(r) == 3 for r in rows), res.stdout
    return rows


def _ldif_entries(text):
    """Attribute values of one LDIF file (folded lines joined, base64 values decoded)."""
    out = collections.defaultdict(list)
    for line in re.sub(r"\n ", "", text).split("\n"):
        m = re.match(r"^([A-Za-z0-9;-]+)(::?) ?(.*)$", line)
        if m:
            attr, sep, value = m.groups()
            out[attr].append(base64.b64decode(value).decode("utf-8") if sep == "::" else value)
    return out


def slapd_read(tmp, texts, what="credentials"):
    """slaptest on each rendered slapd.conf, its conversion to cn=config, slaptest again on that
    (slapd re-reads what it wrote), then what slapd holds: the syncrepl credentials, or the
    rootdn (``what="rootdn"``)."""
    out = []
    for i, text in enumerate(texts):
        d = tmp / f"slapd{i}"
        (d / "db").mkdir(parents=True)
        (d / "slapd.d").mkdir()
        conf = d / "slapd.conf"
        conf.write_bytes(text.replace("/var/lib/ldap", str(d / "db")).replace("/run/slapd", str(d))
                         .encode("utf-8"))
        res = _run(["slaptest", "-u", "-f", str(conf)])
        assert res.returncode == 0, res.stderr.decode()
        _run(["slaptest", "-f", str(conf), "-F", str(d / "slapd.d")])  # converts, then cannot open the db
        res = _run(["slaptest", "-u", "-F", str(d / "slapd.d")])
        assert res.returncode == 0, res.stderr.decode()
        (db,) = (d / "slapd.d" / "cn=config").glob("olcDatabase=*mdb.ldif")
        entry = _ldif_entries(db.read_text(encoding="utf-8"))
        if what == "rootdn":
            out.append(entry["olcRootDN"][0])
            continue
        syncrepls = entry["olcSyncrepl"]
        creds = {re.search(r' credentials="(.*)" keepalive=', s, re.S).group(1) for s in syncrepls}
        assert len(syncrepls) == 2 and len(creds) == 1, syncrepls
        out.append(creds.pop())
    return out


def _postfix_printable(value):
    """What Postfix's warnings show of ``value``: '?' for each byte that is not printable ASCII."""
    return "".join(chr(b) if 32 <= b < 127 else "?" for b in value.encode("utf-8"))


def postfix_want(value):
    return _postfix_printable(value) if "$" in value else value


def postconf_read(tmp, texts, name):
    """Postfix's own reader of ``name = value`` files (main.cf and lookup tables share it,
    dict_load_file), run by postconf on the rendered table as a main.cf. postconf reports a
    parameter it does not know as ``unused parameter: name=value``, with '?' for every byte that
    is not printable ASCII; so a value without '$' is also read exactly, from the same file with
    that one line renamed to a parameter postconf knows (``smtpd_banner``; a '$' there would be
    a macro of main.cf, which a lookup table does not expand). A first line sets myhostname:
    without it postconf spends seconds resolving this host's name. postconf still takes about two
    seconds per file here, so the files are read in parallel."""

    def read(i, text):
        d = tmp / f"postfix{i}"
        d.mkdir()
        text = "myhostname = oracle.example\n" + text
        (d / "main.cf").write_bytes(text.encode("utf-8"))
        (d / "master.cf").write_text("")
        res = _run(["postconf", "-c", str(d), "-h", "myhostname"])
        warned = [line.split(f"unused parameter: {name}=", 1)[1]
                  for line in res.stderr.decode("utf-8").split("\n") if f"unused parameter: {name}=" in line]
        assert len(warned) == 1, res.stderr.decode()
        if "$" in warned[0]:
            return warned[0]
        lines = text.split("\n")
        hits = [k for k, line in enumerate(lines) if line.startswith(f"{name} =")]
        assert len(hits) == 1, text
        lines[hits[0]] = "smtpd_banner" + lines[hits[0]][len(name):]
        (d / "main.cf").write_bytes("\n".join(lines).encode("utf-8"))
        res = _run(["postconf", "-c", str(d), "-h", "smtpd_banner"])
        assert res.returncode == 0, res.stderr.decode()
        exact = res.stdout.decode("utf-8").removesuffix("\n")
        assert _postfix_printable(exact) == warned[0]
        return exact

    with concurrent.futures.ThreadPoolExecutor(max_workers=128) as pool:
        return list(pool.map(read, range(len(texts)), texts))


def doveconf_read(tmp, encoded):
    """Dovecot's config parser on each rendered value (the line's right-hand side, moved onto a
    setting doveconf knows: doveconf reads no dovecot-ldap.conf.ext; its quoting and escapes are
    the same as the settings reader's)."""
    out = []
    for i, rhs in enumerate(encoded):
        f = tmp / f"dovecot{i}.conf"
        f.write_bytes(f"postmaster_address = {rhs}\n".encode())
        res = _run(["doveconf", "-c", str(f), "-h", "postmaster_address"])
        assert res.returncode == 0, res.stderr.decode()
        out.append(res.stdout.decode("utf-8").removesuffix("\n"))
    return out


def bash_read(tmp, texts, name):
    out = []
    for i, text in enumerate(texts):
        f = tmp / f"config{i}"
        f.write_bytes(text.encode("utf-8"))
        res = _run(["bash", "-c", f'set -e; source "$1"; printf %s "${name}"', "bash", str(f)])
        assert res.returncode == 0, res.stderr.decode()
        out.append(res.stdout.decode("utf-8"))
    return out


def named_read(tmp, sites):
    """named-checkconf -p on the rendered key file and named.conf.local (chrooted at ``tmp``):
    the key name and secret named holds."""
    out = []
    for i, site in enumerate(sites):
        root = tmp / f"named{i}"
        (root / "etc" / "bind").mkdir(parents=True)
        node = site.nodes_with("dns")[0]
        (root / dns.BIND_KEY_FILE.lstrip("/")).write_text(dns.render_tsig_key(site, node))
        (root / "etc/bind/named.conf.local").write_text(dns.render_named_conf_local(site, node))
        res = _run(["named-checkconf", "-p", "-t", str(root), "/etc/bind/named.conf.local"])
        assert res.returncode == 0, res.stdout.decode() + res.stderr.decode()
        text = res.stdout.decode()
        name = re.search(r'^key "([^"]*)" \{', text, re.M).group(1)
        assert re.search(rf'grant "?{re.escape(name)}"? zonesub "?ANY"?;', text), text
        out.append((name, re.search(r'secret "([^"]*)";', text).group(1)))
    return out


# ---------------------------------------------------------------------------------- targets


@dataclass
class Target:
    name: str
    key: str
    put: object  # (pillar mailha dict, value) -> None
    read: object  # (tmp, accepted sites) -> what the parser read, compared to want(value)
    want: object = staticmethod(lambda v: v)
    maxlen: int = 64
    secret: bool = True
    pillar: object = staticmethod(lambda: example_pillar()["mailha"])
    # classes every value of which must be refused / must be carried
    refused: tuple = ("line-breaks", "tab", "control", "lone-surrogate", "unicode-line-separators")
    carried: tuple = ("name-like", "non-ascii", "long")
    also: tuple = ()  # other keys the same value was put under (named too when refused)


def _galera(p, v):
    p["galera"].update(sst_method="mariabackup", sst_password=v)


def _auth(p, v):
    p["keepalived"].update(vrrp_version=2, auth_pass=v)


def _monitor_password(p, v):
    p["galera"]["monitor"]["password"] = v


def _monitor_user(p, v):
    p["galera"]["monitor"]["user"] = v


def _rootpw(p, v):
    p["ldap"]["rootpw"] = v


def _lookup(p, v):
    p["mail"]["lookup"] = {"bind_dn": "cn=vmail,dc=example,dc=net", "bind_password": v}


def _iredmail(p, v):
    p["mail"]["iredmail"]["admin_password"] = v


def _tsig_name(p, v):
    p["dns"]["tsig"]["name"] = v


def _own_lookup(p):
    p["mail"]["lookup"] = {"bind_dn": "cn=vmail,dc=example,dc=net", "bind_password": "lookup-secret"}
    return p


def _dn(v):
    return f"cn={v},dc=example,dc=net"


def _rootdn(p, v):
    p["ldap"]["rootdn"] = _dn(v)
    p["ldap"]["replication"]["binddn"] = _dn(v)


def _lookup_dn(p, v):
    p["mail"]["lookup"] = {"bind_dn": _dn(v), "bind_password": "lookup-secret"}


def _rendered_line(text, prefix):
    (line,) = [x for x in text.split("\n") if x.strip().startswith(prefix)][:1]
    return line


TARGETS = [
    Target("galera.cnf sst_password", "mailha:galera:sst_password", _galera,
           lambda tmp, sites: my_print_defaults(tmp, [galera.render_galera_cnf(s, s.node("db1")) for s in sites]),
           want=lambda v: f"sst:{v}", carried=("name-like", "ascii-specials", "blank-edges", "non-ascii", "long")),
    Target("keepalived.conf auth_pass", "mailha:keepalived:auth_pass", _auth,
           lambda tmp, sites: keepalived_dump(tmp, [_rendered_line(lb.render_keepalived_conf(s, s.node("lb1")),
                                                                   "auth_pass ") for s in sites]),
           maxlen=8, carried=("name-like", "blank-edges", "non-ascii", "long")),
    Target("ldirectord.cf monitor password", "mailha:galera:monitor:password", _monitor_password,
           lambda tmp, sites: [p for _, p, _ in ldirectord_read(
               tmp, [lb.render_ldirectord_cf(s, s.node("lb1")) for s in sites])],
           carried=("name-like", "blank-edges", "non-ascii", "long")),
    Target("ldirectord.cf monitor user", "mailha:galera:monitor:user", _monitor_user,
           lambda tmp, sites: [u for u, _, _ in ldirectord_read(
               tmp, [lb.render_ldirectord_cf(s, s.node("lb1")) for s in sites])],
           secret=False, maxlen=80, carried=("name-like", "non-ascii")),
    Target("slapd.conf syncrepl credentials (rootpw)", "mailha:ldap:rootpw", _rootpw,
           lambda tmp, sites: slapd_read(tmp, [ldap.render_native_slapd_conf(s, s.node("mail1")) for s in sites]),
           pillar=lambda: _own_lookup(example_pillar()["mailha"]),  # rootpw reaches slapd.conf alone
           carried=("name-like", "blank-edges", "non-ascii", "long")),
    Target("postfix ldap table bind_pw", "mailha:mail:lookup:bind_password", _lookup,
           lambda tmp, sites: postconf_read(
               tmp, [mail.render_postfix_virtual_mailbox_maps(s, s.node("mail1")) for s in sites], "bind_pw"),
           want=postfix_want,
           refused=(*Target.refused, "blank-edges")),
    Target("dovecot-ldap.conf.ext dnpass", "mailha:mail:lookup:bind_password", _lookup,
           lambda tmp, sites: doveconf_read(tmp, [
               _rendered_line(mail.render_dovecot_ldap_conf(s, s.node("mail1")), "dnpass").split(" = ", 1)[1]
               for s in sites]),
           refused=(*Target.refused, "blank-edges")),  # the same secret reaches Postfix
    Target("ldirectord.cf receive (health_content)", "mailha:ldirectord:health_content",
           lambda p, v: p.setdefault("ldirectord", {}).update(health_content=v),
           lambda tmp, sites: [r for _, _, r in ldirectord_read(
               tmp, [lb.render_ldirectord_cf(s, s.node("lb1")) for s in sites])],
           secret=False, carried=("name-like", "blank-edges", "non-ascii", "long")),
    # DNs: the generated text is the value of the first RDN (cn=<value>,dc=example,dc=net)
    Target("slapd.conf rootdn", "mailha:ldap:rootdn", _rootdn,
           lambda tmp, sites: slapd_read(tmp, [ldap.render_native_slapd_conf(s, s.node("mail1")) for s in sites],
                                         "rootdn"),
           want=_dn, secret=False, refused=(*Target.refused, "blank-edges"),
           also=("mailha:ldap:replication:binddn",)),
    Target("postfix ldap table bind_dn", "mailha:mail:lookup:bind_dn", _lookup_dn,
           lambda tmp, sites: postconf_read(
               tmp, [mail.render_postfix_virtual_mailbox_maps(s, s.node("mail1")) for s in sites], "bind_dn"),
           want=lambda v: postfix_want(_dn(v)), secret=False, refused=(*Target.refused, "blank-edges")),
    Target("dovecot-ldap.conf.ext dn", "mailha:mail:lookup:bind_dn", _lookup_dn,
           lambda tmp, sites: doveconf_read(tmp, [
               _rendered_line(mail.render_dovecot_ldap_conf(s, s.node("mail1")), "dn =").split(" = ", 1)[1]
               for s in sites]),
           want=_dn, secret=False, refused=(*Target.refused, "blank-edges")),
    Target("iRedMail config MYSQL_ROOT_PASSWD", "mailha:mail:iredmail:admin_password", _iredmail,
           lambda tmp, sites: bash_read(tmp, [mail.render_iredmail_config(s, s.node("mail1")) for s in sites],
                                        "MYSQL_ROOT_PASSWD"),
           pillar=lambda: example_pillar(iredmail=True)["mailha"],
           carried=("name-like", "ascii-specials", "blank-edges", "non-ascii", "long")),
    Target("named key name", "mailha:dns:tsig:name", _tsig_name,
           lambda tmp, sites: [n for n, _ in named_read(tmp, sites)],
           secret=False, carried=("name-like",), refused=(*Target.refused, "non-ascii", "blank-edges")),
]


_PILLARS = {}


def _outcome(target, value):
    """("refused", None) after checking the refusal, or ("accepted", site)."""
    if target.name not in _PILLARS:  # reading the example's files costs more than parsing it
        _PILLARS[target.name] = target.pillar()
    p = copy.deepcopy(_PILLARS[target.name])
    target.put(p, value)
    try:
        site = parse_site(p)
    except ValidationError as exc:
        keys = {k for k, _ in exc.problems}  # (one key may have two problems: bytes and a character)
        assert keys == {target.key, *target.also}, (value, exc.problems)
        if target.secret and len(value) >= 4:
            assert value not in str(exc), "a refusal shows the secret"
        return "refused", None
    return "accepted", site


@pytest.mark.parametrize("target", TARGETS, ids=[t.name for t in TARGETS])
def test_value_is_refused_or_read_back_identically(target, tmp_path):
    accepted, by_class = [], collections.defaultdict(collections.Counter)
    for cls in CLASSES:
        for value in generate(target, cls):
            outcome, site = _outcome(target, value)
            by_class[cls][outcome] += 1
            if site is not None:
                accepted.append((cls, value, site))
    assert accepted, "every generated value was refused: the gate refuses too much"
    read = target.read(tmp_path, [s for _, _, s in accepted])
    wrong = [(cls, v, r) for (cls, v, _), r in zip(accepted, read, strict=True) if r != target.want(v)]
    assert not wrong, f"{len(wrong)} value(s) the parser read back differently, e.g. {wrong[:3]!r}"
    for cls, counts in by_class.items():
        COUNTS[(target.name, cls, "refused")] += counts["refused"]
        COUNTS[(target.name, cls, "read back")] += counts["accepted"]
    for cls in target.refused:
        assert by_class[cls]["accepted"] == 0, f"{cls}: {by_class[cls]['accepted']} value(s) got through"
    for cls in target.carried:
        assert by_class[cls]["refused"] == 0, f"{cls}: {by_class[cls]['refused']} value(s) refused needlessly"


# Bad input, by class: what every format must refuse, and how many generated cases of each class
# every target refused. The table is the "classes and counts".
BAD_CLASSES = {
    "line-breaks": "a line break or carriage return inside a value",
    "tab": "a tab inside a value",
    "control": "another C0/C1 control character or DEL (NUL included)",
    "lone-surrogate": "text with no UTF-8 form",
    "unicode-line-separators": "U+2028 or U+2029 (Python's splitlines breaks a line there)",
}


@pytest.mark.parametrize("cls", list(BAD_CLASSES), ids=list(BAD_CLASSES))
def test_bad_input_class_is_refused_by_every_format(cls):
    refused = collections.Counter()
    for target in TARGETS:
        for value in generate(target, cls):
            outcome, _ = _outcome(target, value)
            assert outcome == "refused", (target.name, value)
            refused[target.name] += 1
    assert sum(refused.values()) == PER_CLASS_OVERRIDE.get(cls, PER_CLASS) * len(TARGETS)
    print(f"\n{cls} ({BAD_CLASSES[cls]}): {sum(refused.values())} cases refused across {len(TARGETS)} targets")


def test_the_oracles_are_present():
    """CI skips nothing: a missing parser is a failure, with what to install."""
    missing = [b for b in ("my_print_defaults", "keepalived", "perl", "slaptest", "postconf", "doveconf", "bash",
                           "named-checkconf", "unshare") if shutil.which(b) is None]
    assert not missing, f"install the Debian packages that provide {missing} (scripts/setup-host.sh)"
