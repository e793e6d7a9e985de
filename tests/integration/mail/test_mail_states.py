"""The mailha_mail states through a real ``salt-call --local`` minion (mail1), with a scratch
``mailha_root``: every state in test mode first (nothing changes), then for real, then again
(nothing to do). Every output and the minion's debug log are grepped for the pillar's secrets.

The iRedMail tarball cannot be downloaded here, so the installer is a small ``iRedMail.sh`` made
by the test (in a directory, and packed as a tarball on the Salt fileserver) that records its
argv, environment and the mode of the ``config`` beside it: what is tested is the state's
behaviour (command, environment, config file, once-only marker, failure reporting), not iRedMail.
This kernel has no NFS: the vmail share's fstab line and immutable mountpoint are checked under
the scratch root, and a tmpfs mounted on the scratch mountpoint stands for "the share is mounted".
"""
import copy
import hashlib
import io
import json
import os
import pathlib
import shutil
import stat
import subprocess
import sys
import tarfile

import pytest
import yaml

from tests.support.example import example_pillar

pytestmark = pytest.mark.integration

REPO = pathlib.Path(__file__).resolve().parents[3]
SALT_CALL = pathlib.Path(sys.executable).with_name("salt-call")
EXAMPLE = example_pillar(iredmail=True)
SECRETS = ("CHANGE-ME-iredmail-admin", "CHANGE-ME-postmaster", "CHANGE-ME-ldap-root", "CHANGE-ME-db-root")

FAKE_INSTALLER = r"""#!/bin/bash
# Stand-in for iRedMail.sh: records how it was run, then exits with $FAKE_RC (file) or 0.
here="$(cd "$(dirname "$0")" && pwd)"
out="$here/../record"
mkdir -p "$out"
n=$(( $(cat "$out/count" 2>/dev/null || echo 0) + 1 )); echo $n > "$out/count"
echo "$0 $*" > "$out/argv"
env > "$out/env"
stat -c %a "$here/config" > "$out/config_mode"
pwd > "$out/cwd"
. "$here/config"
rc=$(cat "$here/FAKE_RC" 2>/dev/null || echo 0)
if [ "$rc" != 0 ]; then
  echo "<< ERROR >> could not connect to MySQL as root with password ${MYSQL_ROOT_PASSWD}"
  echo "installation aborted"
fi
exit $rc
"""


class Minion:
    """``salt-call --local`` as mail1 with a scratch ``mailha_root`` and an extra file root."""

    def __init__(self, base, pillar, node="mail1", live=None):
        self.base = pathlib.Path(base)
        self.root = self.base / "root"
        self.srv = self.base / "srv"
        self.conf = self.base / "conf"
        self.log = self.base / "minion.log"
        for d in (self.root, self.srv, self.conf, self.base / "pillar"):
            d.mkdir(parents=True, exist_ok=True)
        (self.base / "pillar" / "top.sls").write_text("base:\n  '*':\n    - mailha\n")
        (self.base / "pillar" / "mailha.sls").write_text(yaml.safe_dump(pillar))
        (self.conf / "minion").write_text(yaml.safe_dump({
            "id": node, "file_client": "local", "mailha_root": str(self.root),
            "file_roots": {"base": [str(self.srv), str(REPO / "states")]},
            "pillar_roots": {"base": [str(self.base / "pillar")]},
            "root_dir": str(self.base / "salt"), "log_file": str(self.log), "log_level_logfile": "debug",
            **({} if live is None else {"mailha_live": live}),
        }))
        self.outputs = []

    def call(self, *args, test=False, grains=False):
        # grains cost ~0.6 s a call and our states do not read them (Salt's service state does)
        argv = [str(SALT_CALL), "--local", "-c", str(self.conf), "--out", "json", "-l", "quiet",
                *([] if grains else ["--skip-grains"]), *args]
        if test:
            argv.append("test=True")
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
        self.outputs.append(proc.stdout + proc.stderr)
        try:
            return json.loads(proc.stdout)["local"]
        except (ValueError, KeyError):
            pytest.fail(f"salt-call {args} gave no JSON (rc={proc.returncode}):\n{proc.stdout}{proc.stderr}")

    def single(self, fun, test=False, **kwargs):
        ret = self.call("state.single", fun, "name=mail", *[f"{k}={v}" for k, v in kwargs.items()], test=test)
        assert isinstance(ret, dict) and len(ret) == 1, ret
        return next(iter(ret.values()))

    def sls(self, name, text, test=False):
        (self.srv / f"{name}.sls").write_text(text)
        ret = self.call("state.apply", name, test=test)
        assert isinstance(ret, dict), ret
        return {v["__id__"]: v for v in ret.values()}

    def everything_written(self):
        return "\n".join(self.outputs) + (self.log.read_text(errors="replace") if self.log.exists() else "")

    def assert_no_secret(self):
        text = self.everything_written()
        for s in SECRETS:
            assert s not in text, f"secret {s!r} leaked into salt output or the minion log"


@pytest.fixture
def minion(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("the mail states need root (chattr, mount): run the suite as root")
    return Minion(tmp_path, copy.deepcopy(EXAMPLE))


@pytest.fixture
def live_minion(tmp_path):
    """The same scratch root with minion config mailha_live: True, so the (fake) installer runs:
    a rehearsal alone never runs it."""
    return Minion(tmp_path, copy.deepcopy(EXAMPLE), live=True)


def _fake_installer(directory, rc=0):
    directory.mkdir(parents=True, exist_ok=True)
    script = directory / "iRedMail.sh"
    script.write_text(FAKE_INSTALLER)
    script.chmod(0o755)
    if rc:
        (directory / "FAKE_RC").write_text(str(rc))
    return directory


def _record(directory):
    rec = directory.parent / "record"
    env = dict(line.split("=", 1) for line in (rec / "env").read_text().splitlines() if "=" in line)
    return {"count": int((rec / "count").read_text()), "argv": (rec / "argv").read_text().strip(), "env": env,
            "config_mode": (rec / "config_mode").read_text().strip(), "cwd": (rec / "cwd").read_text().strip()}


def test_iredmail_installed_runs_once_unattended(live_minion, tmp_path):
    minion = live_minion
    inst = _fake_installer(tmp_path / "inst" / "iRedMail-1.6.8")
    marker = minion.root / "var/lib/mailha/iredmail.installed"

    ret = minion.single("mailha_mail.iredmail_installed", test=True, installer_dir=inst)
    assert ret["result"] is None and "would install iRedMail" in ret["comment"]
    assert not marker.exists() and not (inst / "config").exists() and not (inst.parent / "record").exists()

    ret = minion.single("mailha_mail.iredmail_installed", installer_dir=inst)
    assert ret["result"] is True, ret["comment"]
    assert ret["changes"]["iredmail"]["new"]["MYSQL_SERVER"] == "db.example.net"
    rec = _record(inst)
    assert rec["count"] == 1 and rec["argv"] == "iRedMail.sh" and rec["cwd"] == str(inst)
    assert rec["config_mode"] == "600"
    env = rec["env"]
    assert env["MYSQL_SERVER"] == env["MYSQL_SERVER_ADDRESS"] == "db.example.net"
    assert env["MYSQL_ROOT_USER"] == "admin_iredmail" and env["MYSQL_GRANT_HOST"] == "%"
    assert env["AUTO_USE_EXISTING_CONFIG_FILE"] == env["AUTO_INSTALL_WITHOUT_CONFIRM"] == "y"
    assert env["INITIALIZE_SQL_DATA"] == "YES"  # mail1 is the first mail node
    for s in SECRETS:  # passwords only in the 0600 config, never in the environment
        assert s not in "\n".join(f"{k}={v}" for k, v in env.items())
    config = (inst / "config").read_text()
    assert "export MYSQL_ROOT_PASSWD='CHANGE-ME-iredmail-admin'" in config
    assert stat.S_IMODE(os.stat(inst / "config").st_mode) == 0o600
    assert marker.exists()

    ret = minion.single("mailha_mail.iredmail_installed", installer_dir=inst)
    assert ret["result"] is True and ret["changes"] == {} and "already installed" in ret["comment"]
    assert _record(inst)["count"] == 1  # not run again
    minion.assert_no_secret()


def test_iredmail_failure_is_reported_redacted_and_retried(live_minion, tmp_path):
    minion = live_minion
    inst = _fake_installer(tmp_path / "inst" / "iRedMail-1.6.8", rc=3)
    ret = minion.single("mailha_mail.iredmail_installed", installer_dir=inst)
    assert ret["result"] is False
    assert "rc 3" in ret["comment"] and "installation aborted" in ret["comment"]
    assert "<redacted>" in ret["comment"]  # the installer printed a password: it is scrubbed
    assert not (minion.root / "var/lib/mailha/iredmail.installed").exists()
    (inst / "FAKE_RC").unlink()
    ret = minion.single("mailha_mail.iredmail_installed", installer_dir=inst)
    assert ret["result"] is True and _record(inst)["count"] == 2
    minion.assert_no_secret()


def _tarball(path, rc=0):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        data = FAKE_INSTALLER.encode()
        info = tarfile.TarInfo("iRedMail-1.6.8/iRedMail.sh")
        info.size, info.mode = len(data), 0o755
        tf.addfile(info, io.BytesIO(data))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.getvalue())
    return hashlib.sha256(buf.getvalue()).hexdigest()


def test_iredmail_tarball_from_fileserver_checked_and_unpacked(live_minion):
    minion = live_minion
    for test in (True, False):  # test mode predicts the failure too
        ret = minion.single("mailha_mail.iredmail_installed", test=test)
        assert ret["result"] is False
        assert "salt://iredmail/iRedMail-1.6.8.tar.gz is missing" in ret["comment"]

    digest = _tarball(minion.srv / "iredmail" / "iRedMail-1.6.8.tar.gz")
    pillar = copy.deepcopy(EXAMPLE)
    pillar["mailha"]["mail"]["iredmail"]["source_hash"] = "sha256=" + "0" * 64
    (minion.base / "pillar" / "mailha.sls").write_text(yaml.safe_dump(pillar))
    ret = minion.single("mailha_mail.iredmail_installed")
    assert ret["result"] is False and "not the pillar's mail:iredmail:source_hash" in ret["comment"]

    pillar["mailha"]["mail"]["iredmail"]["source_hash"] = "sha256=" + digest
    (minion.base / "pillar" / "mailha.sls").write_text(yaml.safe_dump(pillar))
    ret = minion.single("mailha_mail.iredmail_installed")
    assert ret["result"] is True, ret["comment"]
    unpacked = minion.root / "root" / "iRedMail-1.6.8"  # mail:iredmail:workdir /root, under mailha_root
    assert _record(unpacked)["count"] == 1 and (unpacked / "config").exists()
    minion.assert_no_secret()


def test_iredmail_tarball_with_an_escaping_symlink_chain_is_refused(live_minion):
    """Each link alone points inside the tarball; together they lead out of it (the old check
    resolved links before the earlier ones existed). Refused by name, nothing unpacked."""
    minion = live_minion
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, link in (("iRedMail-1.6.8/a", "."), ("iRedMail-1.6.8/b", "a/a/a/../.."),
                           ("iRedMail-1.6.8/c", "b/b/etc")):
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, link
            tf.addfile(info)
        data = FAKE_INSTALLER.encode()
        info = tarfile.TarInfo("iRedMail-1.6.8/iRedMail.sh")
        info.size, info.mode = len(data), 0o755
        tf.addfile(info, io.BytesIO(data))
    path = minion.srv / "iredmail" / "iRedMail-1.6.8.tar.gz"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.getvalue())
    pillar = copy.deepcopy(EXAMPLE)
    pillar["mailha"]["mail"]["iredmail"]["source_hash"] = "sha256=" + hashlib.sha256(buf.getvalue()).hexdigest()
    (minion.base / "pillar" / "mailha.sls").write_text(yaml.safe_dump(pillar))
    ret = minion.single("mailha_mail.iredmail_installed")
    assert ret["result"] is False and "unsafe member 'iRedMail-1.6.8/b'" in ret["comment"], ret["comment"]
    workdir = minion.root / "root"
    assert not workdir.exists() or os.listdir(workdir) == [], os.listdir(workdir)
    assert not (minion.root / "var/lib/mailha/iredmail.installed").exists()


def _lsattr(path):
    out = subprocess.run(["lsattr", "-d", str(path)], capture_output=True, text=True, check=True).stdout
    return out.split()[0]


def test_vmail_share_fstab_line_and_immutable_mountpoint(minion):
    mp = minion.root / "var" / "vmail"
    fstab = minion.root / "etc" / "fstab"
    fstab.parent.mkdir(parents=True)
    fstab.write_text("# <file system> <mount point> <type> <options> <dump> <pass>\n"
                     "UUID=1234-abcd / ext4 errors=remount-ro 0 1\n"
                     f"10.9.9.9:/old {mp} nfs vers=4 0 0\n")
    try:
        ret = minion.single("mailha_mail.vmail_share", test=True, mount=False)
        assert ret["result"] is None
        assert set(ret["changes"]) == {"mountpoint", "immutable", "fstab"}
        assert not mp.exists() and f"10.9.9.9:/old {mp}" in fstab.read_text()

        ret = minion.single("mailha_mail.vmail_share", mount=False)
        assert ret["result"] is True, ret["comment"]
        assert "i" in _lsattr(mp)
        lines = fstab.read_text().splitlines()
        assert lines == ["# <file system> <mount point> <type> <options> <dump> <pass>",
                         "UUID=1234-abcd / ext4 errors=remount-ro 0 1",
                         f"10.1.1.11:/srv/var/vmail {mp} nfs vers=3,noatime,nodiratime,noexec,_netdev,nofail 0 0"]
        with pytest.raises(PermissionError):  # mail can never land on the local disk
            (mp / "example.net").mkdir()

        ret = minion.single("mailha_mail.vmail_share")  # a scratch root mounts nothing by default
        assert ret["result"] is True and ret["changes"] == {}

        if not (shutil.which("mount.nfs") or os.path.exists("/sbin/mount.nfs")):
            # no NFS client here: the mount fails at once (nothing leaves the machine) and says so
            ret = minion.single("mailha_mail.vmail_share", mount=True)
            assert ret["result"] is False
            assert f"mount {mp} (10.1.1.11:/srv/var/vmail) failed" in ret["comment"]
            assert "mail services stay stopped" in ret["comment"]
        status = minion.call("mailha_mail.share_status")
        assert status["mounted"] is False and status["immutable"] is True and status["fstab_line"] == "present"

        fstab.write_text(fstab.read_text() + "garbage-line\n")
        ret = minion.single("mailha_mail.vmail_share")
        assert ret["result"] is False and "fix that line by hand" in ret["comment"]
    finally:
        if mp.exists():
            subprocess.run(["chattr", "-i", str(mp)], check=False)
    minion.assert_no_secret()


def test_configured_writes_mail_files_once(minion):
    ret = minion.single("mailha_mail.configured", test=True)
    assert ret["result"] is None and len(ret["changes"]) == 5
    assert not (minion.root / "etc/postfix/main.cf").exists()
    diffs = "\n".join(c["diff"] for c in ret["changes"].values())
    assert "bind_pw = <redacted>" in diffs and 'dnpass = "<redacted>"' in diffs  # Dovecot's is quoted

    ret = minion.single("mailha_mail.configured")
    assert ret["result"] is True, ret["comment"]
    ldap_map = minion.root / "etc/postfix/ldap/virtual_mailbox_maps.cf"
    assert stat.S_IMODE(os.stat(ldap_map).st_mode) == 0o640
    assert stat.S_IMODE(os.stat(minion.root / "etc/dovecot/dovecot-ldap.conf.ext").st_mode) == 0o600
    assert "bind_pw = CHANGE-ME-ldap-root" in ldap_map.read_text()  # the file itself needs it

    ret = minion.single("mailha_mail.configured")
    assert ret["result"] is True and ret["changes"] == {}

    ret = minion.single("mailha_mail.health_page")
    assert ret["result"] is True
    assert (minion.root / "var/www/html/ldirectord.txt").read_text() == "ldirectord\n"
    minion.assert_no_secret()


def test_mail_formula_native_rehearsal_writes_files_and_touches_no_service(minion):
    """``mailha.mail`` on the native path under a scratch root: files are written and the share is
    prepared (immutable mountpoint, not mounted: a rehearsal mounts nothing); the guard, Postfix,
    Dovecot and slapd are this host's, so a rehearsal leaves them out (the guard holding real
    services is tested in test_mail_flow)."""
    assert minion.call("mailha_mail.web_listeners") == []  # iRedMail's own nginx serves the page
    pillar = copy.deepcopy(EXAMPLE)
    del pillar["mailha"]["mail"]["iredmail"]
    (minion.base / "pillar" / "mailha.sls").write_text(yaml.safe_dump(pillar))
    assert minion.call("mailha_mail.web_listeners") == [
        {"service": "http", "check": "http", "port": 80, "listen": "80", "tls": False},
        {"service": "https", "check": "https", "port": 443, "listen": "443", "tls": True}]
    mp = minion.root / "var" / "vmail"
    try:
        ret = minion.call("state.apply", "mailha.mail", test=True, grains=True)
        ids = {v["__id__"]: v for v in ret.values()}
        for sid in ("mailha-vmail-share", "mailha-mail-files", "mailha-health-page", "mailha-file-slapd",
                    "mailha-file-nginx"):
            assert ids[sid]["result"] is None, (sid, ids[sid]["comment"])
        assert ids["mailha-nginx-default-site"]["result"] is True  # no Debian default site in the root
        assert not set(ids) & {"mailha-iredmail", "mailha-vmail-guard", "mailha-service-postfix",
                               "mailha-service-dovecot", "mailha-service-slapd", "mailha-service-nginx"}
        assert not (minion.root / "etc/postfix").exists() and not mp.exists()
        assert not (minion.root / "etc/nginx").exists()

        ret = minion.call("state.apply", "mailha.mail", grains=True)
        ids = {v["__id__"]: v for v in ret.values()}
        assert all(v["result"] is True for v in ids.values()), ids
        assert "mounted" not in ids["mailha-vmail-share"]["changes"]
        assert (minion.root / "etc/ldap/slapd.conf").exists()
        assert "listen 443 ssl default_server;" in (minion.root / "etc/nginx/conf.d/mailha.conf").read_text()
        assert "i" in _lsattr(mp)
    finally:
        if mp.exists():
            subprocess.run(["chattr", "-i", str(mp)], check=False)
    minion.assert_no_secret()


def test_default_site_disabled_removes_only_the_package_link(minion):
    enabled = minion.root / "etc/nginx/sites-enabled/default"
    ret = minion.single("mailha_mail.default_site_disabled")
    assert ret["result"] is True and ret["changes"] == {} and "not enabled" in ret["comment"]

    enabled.parent.mkdir(parents=True)
    enabled.symlink_to("/etc/nginx/sites-available/default")
    ret = minion.single("mailha_mail.default_site_disabled", test=True)
    assert ret["result"] is None and "would remove the link" in ret["comment"]
    assert ret["changes"] == {"/etc/nginx/sites-enabled/default": {"old": "/etc/nginx/sites-available/default",
                                                                   "new": None}}
    assert enabled.is_symlink()
    ret = minion.single("mailha_mail.default_site_disabled")
    assert ret["result"] is True and ret["changes"]["/etc/nginx/sites-enabled/default"]["new"] is None
    assert not enabled.is_symlink()
    ret = minion.single("mailha_mail.default_site_disabled")
    assert ret["result"] is True and ret["changes"] == {}

    # an operator's own file there is not ours to delete: fail (nginx stays as it is) and say why
    enabled.write_text("server { listen 80 default_server; }\n")
    for test in (True, False):
        ret = minion.single("mailha_mail.default_site_disabled", test=test)
        assert ret["result"] is False and "move it to sites-available" in ret["comment"]
        assert enabled.read_text() == "server { listen 80 default_server; }\n"
    ret = minion.single("mailha_mail.default_site_disabled", path="etc/nginx/x")
    assert ret["result"] is False and "must be an absolute path" in ret["comment"]


@pytest.mark.parametrize("name, kind, link", [
    ("../evil.sh", tarfile.REGTYPE, ""),
    ("iRedMail-1.6.8/link", tarfile.SYMTYPE, "/etc/passwd"),
    ("iRedMail-1.6.8/up", tarfile.SYMTYPE, "../../outside"),
    ("iRedMail-1.6.8/hard", tarfile.LNKTYPE, "../x"),
], ids=["dotdot-member", "absolute-symlink", "escaping-symlink", "escaping-hardlink"])
def test_unsafe_tarball_is_refused(tmp_path, name, kind, link):
    from salt_mailha.core.errors import MailhaError
    from salt_mailha.states import mailha_mail

    tb = tmp_path / "t.tar.gz"
    with tarfile.open(tb, "w:gz") as tf:
        info = tarfile.TarInfo(name)
        info.type, info.linkname = kind, link
        tf.addfile(info, io.BytesIO(b""))
    (tmp_path / "dest").mkdir()
    with pytest.raises(MailhaError, match="unsafe member"):
        mailha_mail._extract(str(tb), str(tmp_path / "dest"), str(tmp_path / "dest" / "iRedMail-1.6.8"))
    assert os.listdir(tmp_path / "dest") == []


def test_filer_exports_the_vmail_share_to_the_mail_nodes(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("chown to the vmail uid needs root")
    filer = Minion(tmp_path / "filer", copy.deepcopy(EXAMPLE), node="filer1")
    exports = filer.root / "etc" / "exports"
    exports.parent.mkdir(parents=True)
    exports.write_text("/srv/backup 10.1.1.0/24(ro)\n")
    ret = filer.single("mailha_mail.vmail_export", test=True)
    assert ret["result"] is None and set(ret["changes"]) == {"export_dir", "exports"}
    assert not (filer.root / "srv/var/vmail").exists()

    ret = filer.single("mailha_mail.vmail_export")
    assert ret["result"] is True, ret["comment"]
    st = os.stat(filer.root / "srv/var/vmail")
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (2000, 2000, 0o770)
    assert exports.read_text() == ("/srv/backup 10.1.1.0/24(ro)\n/srv/var/vmail 10.1.1.17(rw,sync,no_subtree_check)"
                                   " 10.1.1.18(rw,sync,no_subtree_check)\n")
    ret = filer.single("mailha_mail.vmail_export")
    assert ret["result"] is True and ret["changes"] == {}
    filer.assert_no_secret()


def test_iredmail_tarball_from_a_url_with_checksum(live_minion, tmp_path):
    """``source: http://...``: fetched by Salt (cp.cache_file), checked, unpacked, run (a loopback
    HTTP server stands for the download site)."""
    minion = live_minion
    import functools
    import http.server
    import threading

    web = tmp_path / "web"
    digest = _tarball(web / "iRedMail-1.6.8.tar.gz")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(web))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        pillar = copy.deepcopy(EXAMPLE)
        im = pillar["mailha"]["mail"]["iredmail"]
        im["source"] = f"http://127.0.0.1:{server.server_address[1]}/iRedMail-1.6.8.tar.gz"
        im["source_hash"] = "sha256=" + digest
        (minion.base / "pillar" / "mailha.sls").write_text(yaml.safe_dump(pillar))
        ret = minion.single("mailha_mail.iredmail_installed")
    finally:
        server.shutdown()
        server.server_close()
    assert ret["result"] is True, ret["comment"]
    assert _record(minion.root / "root" / "iRedMail-1.6.8")["count"] == 1
    minion.assert_no_secret()


def test_iredmail_in_a_rehearsal_is_neither_fetched_nor_run(minion, tmp_path):
    """A plain rehearsal (no mailha_live): the installer would act on this host, so it is not run,
    in either mode, and no marker is written; the comment says what would be installed."""
    inst = _fake_installer(tmp_path / "inst" / "iRedMail-1.6.8")
    for test in (True, False):
        ret = minion.single("mailha_mail.iredmail_installed", installer_dir=inst, test=test)
        assert ret["result"] is True and ret["changes"] == {}, ret
        assert ret["comment"].startswith("REHEARSAL, nothing done: would install iRedMail on mail1"), ret
        assert f"mailha_root {minion.root}" in ret["comment"]
    assert not (inst.parent / "record").exists(), "the installer ran in a rehearsal"
    assert not (inst / "config").exists()
    assert not (minion.root / "var/lib/mailha/iredmail.installed").exists()
    minion.assert_no_secret()
