"""No secret, and no form derived from one, in any output of salt-mailha (issue 15, item 5).

A real salt-master and one real salt-minion per role of the example site (lb1, db1, filer1, mail1,
ns1; minion id = node id), the example pillar with real (non-placeholder) secrets and every secret
the model knows in use (VRRPv2 auth_pass, a mariabackup SST password, a lookup bind password, the
monitor password, the LDAP rootpw, a TSIG key); each minion receives only the secrets of its roles,
the master none. Every minion rehearses its node (``mailha_root``: files are written there,
nothing is started): ``mailha_site.validate``, ``state.apply mailha`` with test=True, for real,
and test=True again over edited files (diffs with old and new secret lines);
``mailha_site.show`` of every artifact on every node; a few module calls that fail without a
cluster (DNS plan, health probes); and the runner through ``salt-run`` (validate, status,
drain/undrain/remediate/presence/reconcile with test=True, a refused remediation); all along,
lb1's health beacon probes every real server (its mysql check logs in with the monitor password).

Then every secret and each of its derived forms (``secret.derived_secrets``: slapd.conf's rootpw
hash, encodings, keepalived's 8 characters, the TSIG key bytes ...) is searched for in: every job
return and CLI output, every event the master and the minions saw, the master's and minions' log
files (trace level: Salt logs every event payload there), every file under the master's and the
minions' root dirs (the job cache's msgpack files as bytes and decoded), and the argv and
environment of every process on the host, sampled every 0.1 s during the run. Every file each
rehearsal wrote under its ``mailha_root`` is searched too, except, explicitly, the rendered files
whose purpose is to hold a secret (``holds_secrets``: the registry's secret artifacts and the mail
tier's private files; each must be closed to other users). Also excluded: the pillar files (the
input) and the pillar bank of the master's minion data cache (Salt's copy of that input).

A canary proves the search sees each channel: a made-up value sent through ``test.echo``,
``event.send`` and ``cmd.run`` must be found in a return, an event, the job cache (bytes and
decoded), a log and a process's argv, every run.
"""

import base64
import copy
import difflib
import fnmatch
import json
import pathlib
import secrets as pysecrets
import shutil
import string
import subprocess
import sys
import tempfile
import time

import pytest
import yaml

from salt_mailha.core import mail as core_mail
from salt_mailha.core import render
from salt_mailha.core import secret as core_secret
from salt_mailha.core.model import parse_site, secret_fields
from tests.support import example, leaks

pytestmark = pytest.mark.integration



def holds_secrets(site, node):
    """The files whose purpose is to hold a secret, that ``node``'s formula writes: the registry's
    secret artifacts and the mail tier's private files (the lookup bind password). The only files
    of a rehearsal that are not searched; each must be closed to other users."""
    paths = {a.path for a in render.ARTIFACTS if a.secret and a.applies(site, node)}
    if node.has("mail"):
        paths |= {f.path for f in core_mail.mail_files(site, node) if f.mode[-1] == "0"}
    return sorted(paths)


NODES = ("lb1", "db1", "filer1", "mail1", "ns1")  # every role: lb, db, filer + quorum, mail, dns
SALT_RUN = pathlib.Path(sys.executable).with_name("salt-run")
ALNUM = string.ascii_letters + string.digits


def _token(n):
    return "".join(pysecrets.choice(ALNUM) for _ in range(n))


def real_secrets_pillar():
    """The whole example site with fresh real secrets, every kind of secret in use, and its DNS
    server on a closed loopback port (nothing may reach it: rehearsals are offline). Each secret
    carries characters that shell, SQL, JSON, Python-repr or URL encoding changes (those its
    formats accept), so an encoded form that leaks is caught too."""
    pillar = copy.deepcopy(example.example_pillar())
    m = pillar["mailha"]
    m["keepalived"].update(vrrp_version=2, auth_pass="K\\'%@:" + _token(2))
    m["galera"].update(sst_method="mariabackup", sst_password="S\"'%@:/ ;=$é" + _token(20))
    m["galera"]["monitor"]["password"] = "M\\'\"%@:/&;$" + _token(20)
    m["ldap"]["rootpw"] = "R'%@:/&# ;=$é" + _token(20)
    m["mail"]["lookup"] = {"bind_dn": "cn=vmail,dc=example,dc=net", "bind_password": "B\\'%@:/& é" + _token(20)}
    m["dns"]["servers"] = [{"address": "127.0.0.1", "port": 9}]
    m["dns"]["tsig"]["secret"] = base64.b64encode(pysecrets.token_bytes(32)).decode()
    return pillar


def pillar_of(pillar, site, node):
    """``pillar`` with only the secrets ``node`` uses (``secret_fields``); None: no secret."""
    out = copy.deepcopy(pillar)
    for key, value, users in secret_fields(site):
        if value is not None and node not in users:
            *parents, last = key.split(":")
            section = out
            for name in parents:
                section = section[name]
            section.pop(last)
    return out


# ------------------------------------------------------------------ the registry of derived forms


@pytest.fixture(scope="module")
def iredmail_site():
    pillar = real_secrets_pillar()
    im = pillar["mailha"]["mail"]["iredmail"] = copy.deepcopy(example.IREDMAIL)
    im.update(admin_password=_token(24), postmaster_password=_token(24), source_hash="sha256=" + "0" * 64)
    return parse_site(pillar["mailha"])


def _forms(site):
    """What redaction knows (``Site.secrets``): the secrets and every form derived from them."""
    return {s.reveal() for s in site.secrets()}


@pytest.mark.parametrize("what, expected", [
    ("slapd.conf rootpw hash of each mail node",
     lambda s: {core_secret.slapd_rootpw_hash(s.ldap.rootpw, s.name, n.id) for n in s.nodes_with("mail")}),
    ("every secret line of the iRedMail installer config",
     lambda s: set(core_mail.iredmail_secrets(s, s.node("mail1")))),
    ("mysql_native_password hash of the SST and monitor passwords",
     lambda s: {core_secret.mysql_native_password_hash(p.reveal()) for p in (s.galera.sst_password, s.galera.monitor.password)}),
    ("base64 and hex of the rootpw",
     lambda s: {base64.b64encode(s.ldap.rootpw.reveal().encode()).decode(), s.ldap.rootpw.reveal().encode().hex()}),
    ("TSIG key bytes as hex",
     lambda s: {base64.b64decode(s.dns.tsig.secret.reveal()).hex()}),
], ids=["slapd-hash", "iredmail-config", "mysql-hash", "rootpw-encodings", "tsig-bytes"])
def test_derived_forms_are_registered(iredmail_site, what, expected):
    want = expected(iredmail_site)
    assert want, what
    assert want <= _forms(iredmail_site), f"{what}: not in Site.secrets() (secret.derived_secrets)"


@pytest.mark.parametrize("value, form", [
    ("it's", "'it'\"'\"'s'"),                 # a shell word (iRedMail's config)
    ("a'b\\c", "a\\'b\\\\c"),                  # a SQL literal as PyMySQL sends it
    ('q"x', 'q\\"x'),                          # JSON / double-quoted config value
    ("p@ss/w:rd", "p%40ss%2Fw%3Ard"),          # URL userinfo
    ("password", "*2470C0C06DEE42FD1618BB99005ADCA2EC9D1E19"),  # MySQL's PASSWORD('password')
    ("S\"'\tx", "S\\\"'\tx"),               # inside my.cnf's "sst:<password>" (neither JSON nor SQL)
], ids=["shell", "sql", "json", "url", "mysql-hash", "mycnf-body"])
def test_encoded_forms_hold_what_each_format_writes(value, form):
    assert form in core_secret.encoded_forms(value)
    assert core_secret.redact(f"x {form} y", [value, *core_secret.encoded_forms(value)]) == "x <redacted> y"


def test_keepalived_keeps_eight_characters():
    assert core_secret.keepalived_auth_pass_forms("0123456789") == ("01234567",)
    assert core_secret.keepalived_auth_pass_forms("01234567") == ()


@pytest.mark.parametrize("rotated", ["keepalived:auth_pass", "galera:sst_password", "galera:monitor:password",
                                     "ldap:rootpw", "mail:lookup:bind_password", "dns:tsig:secret"])
def test_a_rotated_secret_leaves_no_trace_in_a_diff(rotated):
    """Once a secret changes, the old value is no secret of the site any more, yet a diff of every
    file that held it removes a line with it: ``secret.redact_diff`` masks those lines too. (The
    states' diffs go through ``glue.redacted_diff``, which must call it.)"""
    pillar = real_secrets_pillar()
    before = parse_site(pillar["mailha"])
    section = pillar["mailha"]
    *parents, last = rotated.split(":")
    for name in parents:
        section = section[name]
    section[last] = base64.b64encode(pysecrets.token_bytes(24)).decode() if last == "secret" else \
        _token(8 if last == "auth_pass" else 24)
    after = parse_site(pillar["mailha"])
    old_values = [s.reveal() for s in before.secrets()]
    diffs = 0
    for node in after.nodes:
        files = [(a.path, a.render(before, node), a.render(after, node))
                 for a in render.ARTIFACTS if a.applies(after, node)]
        if node.has("mail"):
            old_files = {f.path: f.content for f in core_mail.mail_files(before, node)}
            files += [(f.path, old_files[f.path], f.content) for f in core_mail.mail_files(after, node)]
        for path, old, new in files:
            diff = "".join(difflib.unified_diff(old.splitlines(True), new.splitlines(True), path, path))
            if not diff:
                continue
            diffs += 1
            shown = core_secret.redact_diff(diff, after.secrets())
            assert not [v for v in old_values if v in shown], f"{rotated}: {path} of {node.id}"
            assert shown.count("\n-") == diff.count("\n-"), "a removed line went missing"
    assert diffs, f"rotating {rotated} changed no file"


# ------------------------------------------------------------------------------- the real run


def _salt_run(master, *args):
    proc = subprocess.run([str(SALT_RUN), "-c", master.config_dir, "--out", "json", "-l", "quiet", *args],
                          capture_output=True, text=True, timeout=120)
    return proc


class Run:
    """Everything one run produced, and where to search."""

    def __init__(self):
        self.returns = []  # (what, data)
        self.outputs = []  # (what, text): CLI stdout/stderr
        self.events = {}  # id -> event
        self.daemons = []  # factories' daemons
        self.roots = {}  # node -> mailha_root
        self.pillar_dir = None
        self.rotated_site = None  # the site after every secret was changed
        self.canary = None
        self.timings = []
        self.sampler = None


@pytest.fixture(scope="module")
def run(salt_factories, event_listener, tmp_path_factory):
    # short: Salt 3006's IPC sockets live under each daemon's root (AF_UNIX paths are <= 107 bytes)
    base = pathlib.Path(tempfile.mkdtemp(prefix="ns", dir="/tmp"))
    pillar = real_secrets_pillar()
    r = Run()
    r.site = parse_site(pillar["mailha"])
    r.pillar_dir = base / "pillar"
    r.pillar_dir.mkdir()
    # least privilege, as a site deploys it: each minion receives only the secrets its roles use
    # (secret_fields), the master the topology alone; every node of the site has its pillar (the
    # runner's validate compiles each), five of them a minion
    ids = [n.id for n in r.site.nodes]
    top = {"base": {"nosecret-master": ["topology"], **{n: [f"node_{n}"] for n in ids}}}
    (r.pillar_dir / "top.sls").write_text(yaml.safe_dump(top))
    (r.pillar_dir / "topology.sls").write_text(yaml.safe_dump(pillar_of(pillar, r.site, None)))
    for n in ids:
        (r.pillar_dir / f"node_{n}.sls").write_text(yaml.safe_dump(pillar_of(pillar, r.site, n)))
    master = salt_factories.salt_master_daemon(
        "nosecret-master", defaults={"root_dir": str(base / "master")},
        overrides={"interface": "127.0.0.1", "auto_accept": True,
                   "file_roots": {"base": [str(example.REPO / "states")]},
                   "pillar_roots": {"base": [str(r.pillar_dir)]},
                   "log_level_logfile": "trace",
                   # lb2 has no minion: the runner's re-checks wait for it this long, not 11 s
                   "mailha_job_startup": 1, "mailha_probe_timeout": 0.5})
    minions = {}
    for node in NODES:
        r.roots[node] = base / "roots" / node
        r.roots[node].mkdir(parents=True)
        over = {"mailha_root": str(r.roots[node]), "log_level_logfile": "trace"}
        if node == "lb1":  # the health beacon probes every real server (the mysql check logs in)
            over.update(loop_interval=1, beacons={"mailha_health": [{"interval": 1}, {"timeout": 0.5}]})
        minions[node] = master.salt_minion_daemon(
            node, defaults={"root_dir": str(base / "minions" / node)}, overrides=over)
    started = time.time()
    r.master, r.minions = master, minions
    r.daemons = [master, *minions.values()]

    def keep_events():
        for ev in list(event_listener.store):
            if ev.daemon_id in {master.id, *NODES} and ev.stamp.timestamp() >= started - 1:
                r.events[id(ev)] = ev

    with master.started(start_timeout=120):
        up = []
        try:
            for m in minions.values():
                m.start(start_timeout=120)
                up.append(m)
            r.timings.append(("daemons up", round(time.time() - started, 1)))
            with leaks.ProcessSampler(interval=0.1) as r.sampler:
                _exercise(r, master, keep_events)
            yield r
        finally:
            for m in reversed(up):
                m.terminate()
            for root in r.roots.values():  # the vmail mountpoint is made immutable (chattr +i)
                for vmail in root.rglob("vmail"):
                    subprocess.run(["chattr", "-i", str(vmail)], check=False)
            shutil.rmtree(base, ignore_errors=True)


def _exercise(r, master, keep_events):
    import salt.client

    client = salt.client.LocalClient(mopts=master.config.copy())
    nodes = list(NODES)

    def call(fun, arg=(), tgt=None, timeout=120, **kwarg):
        t0 = time.monotonic()
        ret = client.cmd(tgt or nodes, fun, list(arg), kwarg=kwarg or None, tgt_type="list", timeout=timeout)
        r.returns.append((f"{fun} {list(arg)} {kwarg}", ret))
        r.timings.append((fun, round(time.monotonic() - t0, 1)))
        keep_events()
        return ret

    # the canary: a value the search must find in a return, an event, the job cache and a log
    r.canary = "canary-" + _token(16)
    call("test.echo", [r.canary], tgt=["lb1"])
    call("event.send", ["mailha/test/canary"], tgt=["lb1"], canary=r.canary)
    call("cmd.run", [f"sleep 1; true {r.canary}"], tgt=["lb1"])  # a shell whose argv holds it

    ret = call("mailha_site.validate")
    assert all(isinstance(v, dict) and v.get("valid") for v in ret.values()), ret
    ret = call("state.apply", ["mailha"], test=True)
    assert set(ret) == set(NODES), ret
    assert all(isinstance(v, dict) for v in ret.values()), ret
    assert not any(p.is_file() for root in r.roots.values() for p in root.rglob("*")), "test=True wrote files"
    ret = call("state.apply", ["mailha"])
    assert all(isinstance(v, dict) for v in ret.values()), ret
    # (ns1's records state plans against the rehearsal's zone: nothing reaches the closed port)
    failed = sorted(f"{n}: {k}: {s['comment']}" for n, v in ret.items() for k, s in v.items()
                    if s["result"] is not True)
    assert not failed, "\n".join(failed)
    # an edited file with a secret in it: test=True now shows a diff with its old and new lines
    edited = 0
    for root in r.roots.values():
        for a in render.ARTIFACTS:
            path = root / a.path.lstrip("/")
            if a.secret and path.is_file():
                path.write_text(path.read_text() + "# edited by hand\n")
                edited += 1
    assert edited >= 4  # keepalived.conf, ldirectord.cf, galera.cnf (db1, filer1), slapd.conf, tsig key
    ret = call("state.apply", ["mailha"], test=True)
    diffs = [s for v in ret.values() for s in v.values() if isinstance(s, dict) and s.get("changes", {}).get("diff")]
    assert len(diffs) >= edited, "the edited files gave no diffs"

    # a rotation: every secret changes; test=True diffs the files that hold the old ones (whose
    # old values are no pillar secret any more) against the new ones: neither may show
    rotated = real_secrets_pillar()
    r.rotated_site = parse_site(rotated["mailha"])
    for n in (n.id for n in r.site.nodes):
        (r.pillar_dir / f"node_{n}.sls").write_text(yaml.safe_dump(pillar_of(rotated, r.rotated_site, n)))
    call("saltutil.refresh_pillar", wait=True)
    ret = call("state.apply", ["mailha"], test=True)
    diffs = [s for v in ret.values() for s in v.values() if isinstance(s, dict) and s.get("changes", {}).get("diff")]
    assert len(diffs) >= edited, "the rotated secrets gave no diffs"

    # every artifact of the registry, on every node (refused where the node does not get it)
    shown = 0
    for a in render.ARTIFACTS:
        ret = call("mailha_site.show", [a.id])
        shown += sum(1 for v in ret.values() if isinstance(v, str) and not v.startswith("ERROR"))
    assert shown >= len(render.ARTIFACTS), shown
    call("mailha_site.artifacts")
    call("mailha_site.formula")
    # module calls that fail without a cluster: their errors must be clean too
    call("mailha_dns.plan", tgt=["ns1"], timeout=60, take_over=True)
    call("mailha_dns.records", tgt=["ns1"], timeout=60, test=True)
    for node in ("db1", "mail1"):
        call("mailha_health.probe", [node], tgt=["lb1"], timeout=60)
    call("mailha_health.local", tgt=["lb1", "db1", "mail1"], timeout=60)
    keep_events()

    for args in (["mailha.validate"], ["mailha.status"], ["mailha.drain", "mail1", "test=True"],
                 ["mailha.undrain", "mail1", "test=True"],
                 ["mailha.remediate", "mail1", "reporter=lb1", "test=True"],
                 ["mailha.remediate", "no such node!"], ["mailha.presence", "lost=[mail1]", "test=True"],
                 ["mailha.reconcile", "test=True"]):
        t0 = time.monotonic()
        proc = _salt_run(master, *args)
        r.timings.append((args[0], round(time.monotonic() - t0, 1)))
        r.outputs.append((f"salt-run {' '.join(args)}", proc.stdout + proc.stderr))
        try:
            r.returns.append((f"salt-run {' '.join(args)}", json.loads(proc.stdout)))
        except ValueError:
            pass
        if args == ["mailha.validate"]:
            assert json.loads(proc.stdout).get("valid") is True, proc.stdout
        keep_events()
    time.sleep(1)  # the last events and log lines reach the listener and the files
    keep_events()
    assert any(fnmatch.fnmatch(ev.tag, "salt/beacon/lb1/mailha_health/*") for ev in r.events.values()), \
        "the health beacon reported nothing"


def _search(r, finder):
    """Every output of the run, through ``finder``; returns what it searched, by kind."""
    for what, data in r.returns:
        finder.data(f"return of {what}", data, kind="job returns")
    for what, text in r.outputs:
        finder.text(f"output of {what}", text, kind="CLI outputs")
    for ev in r.events.values():
        finder.data(f"event {ev.tag} on {ev.daemon_id}", ev.full_data, kind="events")
    r.sampler.search(finder)
    for node, root in r.roots.items():  # what each rehearsal wrote, but the files meant to hold secrets
        private = [root / p.lstrip("/") for p in holds_secrets(r.site, r.site.node(node))]
        for path in private:
            assert not path.is_file() or path.stat().st_mode & 0o007 == 0, f"{path} is open to other users"
        finder.tree(root, exclude=private, kind="rehearsal files")
    log_lines = 0
    for d in r.daemons:
        with open(d.config["log_file"], errors="replace") as fh:
            log_lines += sum(1 for _ in fh)
    finder.count("log lines", log_lines)
    # every file of the master and of each minion (logs, job cache, minion caches, keys ...)
    master_cache = pathlib.Path(r.master.config["cachedir"])
    # the master's minion data cache keeps each minion's compiled pillar (Salt's copy of the
    # input, bank "pillar"; older Salt: minions/<id>/data.p, whose other keys are searched)
    pillar_cache = master_cache / "pillar"
    data_cache = master_cache / "minions"
    for d in r.daemons:
        finder.tree(d.config["root_dir"], exclude=[pillar_cache, data_cache], kind="files")
    finder.count("job cache files", sum(1 for p in (master_cache / "jobs").rglob("*") if p.is_file()))
    for path in sorted(data_cache.rglob("*.p")) if data_cache.is_dir() else ():
        for obj in leaks._unpack_all(path.read_bytes()):
            if isinstance(obj, dict):
                obj = {k: v for k, v in obj.items() if k != "pillar"}
            finder.data(f"{path} (pillar left out)", obj, kind="minion data cache files")


def test_no_secret_nor_derived_form_in_any_output(run):
    needles = leaks.needles(run.site)
    # every kind of secret is in play, with its derived forms
    assert len([d for d in needles.values() if d.startswith("mailha:") and "," not in d]) == 6, needles.values()
    assert any("hashed in mail1's slapd.conf" in d for d in needles.values())
    needles.update({v: f"{d} (rotated)" for v, d in leaks.needles(run.rotated_site).items()})
    finder = leaks.Finder(needles)
    _search(run, finder)
    counts = finder.counts
    print(f"searched {len(needles)} values: {counts}; timings {run.timings}")
    assert counts["job returns"] >= 20 and counts["events"] >= 50 and counts["log lines"] >= 1000, counts
    assert counts["job cache files"] >= 20 and counts["process argv/environ samples"] >= 100, counts
    assert not finder.hits, f"secrets leaked:\n{finder.report()}"


def test_the_search_finds_a_canary_in_every_channel(run):
    finder = leaks.Finder({run.canary: "canary"})
    _search(run, finder)
    where = [w for w, _ in finder.hits]
    assert any(w.startswith("return of test.echo") for w in where), where
    assert any(w.startswith("event mailha/test/canary") for w in where), where
    assert any("/jobs/" in w and "decoded" in w for w in where), where
    assert any("/jobs/" in w and "decoded" not in w for w in where), where
    assert any(w.endswith(".log") or "/log/" in w for w in where), where
    assert any(w.startswith("cmdline of process") for w in where), where
