"""The mail tier: iRedMail installed once, or the native Postfix/Dovecot files; the vmail NFS
share (fstab line, immutable mountpoint, mount) and the guard that keeps the mail services
stopped while the share is not mounted; the ldirectord health page and Debian's default nginx
site out of its way; the filer's export.

.. code-block:: yaml

    mailha-vmail-share:
      mailha_mail.vmail_share: []          # fstab line, chattr +i while unmounted, mount

    mailha-vmail-guard:
      mailha_mail.share_guard:             # fails while the share is not mounted
        - require:
          - mailha_mail: mailha-vmail-share

    mailha-health-page:
      mailha_mail.health_page: []

    # native path: nginx serves the health page (file from mailha_site.rendered, artifact nginx)
    mailha-nginx-default-site:
      mailha_mail.default_site_disabled: []

    # iRedMail path (pillar mail:iredmail) ...
    mailha-iredmail:
      mailha_mail.iredmail_installed:
        - require:
          - mailha_mail: mailha-vmail-guard

    # ... or the native path: Debian's Postfix and Dovecot from the model
    mailha-mail-files:
      mailha_mail.configured: []

    postfix:
      service.running:
        - require:
          - mailha_mail: mailha-vmail-guard   # never start on the local disk
        - watch:
          - mailha_mail: mailha-mail-files

    # on the filer
    mailha-vmail-export:
      mailha_mail.vmail_export: []

Paths are prefixed by minion config ``mailha_root`` when set (a scratch root for rehearsals and
tests); the mount table is always the real one (``/proc/self/mounts``). Rehearsals are offline
(see ``salt_mailha.rehearsal``): nothing is mounted, no exports are reloaded and the iRedMail
installer is neither fetched nor run (``iredmail_installed`` returns ``result`` True, no changes
and a comment starting ``REHEARSAL, nothing done``), unless minion config ``mailha_live: True``. Secrets (the LDAP bind password in the maps, every password of the
installer ``config``) never reach a return, a comment, a log line, a command line or a command's
environment.
"""

import datetime
import grp
import hashlib
import logging
import os
import shutil
import stat
import tarfile

from salt_mailha import glue, rehearsal
from salt_mailha.core import mail as core
from salt_mailha.core.errors import MailhaError, ParseError
from salt_mailha.core.secret import redact

log = logging.getLogger(__name__)

__virtualname__ = "mailha_mail"

MOUNTS = "/proc/self/mounts"
MOUNT_TIMEOUT = 120  # seconds


def __virtual__():
    return __virtualname__


def _fail(ret, message, secrets=()):
    ret["result"] = False
    ret["changes"] = {}
    ret["comment"] = redact(message, secrets)
    return ret


def _rooted(path):
    return glue.under_root(path, __opts__, __pillar__)


def _site_node(node):
    return glue.site_and_node(__pillar__, __opts__, node)


def _run(argv, **kwargs):
    """argv only, never a shell; output is not logged (an installer may print what it set up)."""
    return __salt__["cmd.run_all"](argv, python_shell=False, output_loglevel="quiet",
                                   ignore_retcode=True, **kwargs)


def _mounts():
    with open(MOUNTS, encoding="utf-8", errors="surrogateescape") as f:
        return core.parse_mounts(f.read())


def _immutable(path):
    out = _run(["lsattr", "-d", path])
    if out["retcode"] != 0:
        raise MailhaError(f"lsattr -d {path} failed: {out['stderr'].strip()}")
    return "i" in core.parse_lsattr(out["stdout"], path)


# ----------------------------------------------------------------------------------- files


def configured(name, node=None):
    """Ensure this mail node's Postfix (main.cf, master.cf, LDAP map) and Dovecot (dovecot.conf,
    LDAP passdb/userdb) files hold what the model renders, with their modes; diffs are redacted.

    name
        A label; not used.
    node
        The model node (default: minion config ``mailha_node`` or the minion id).
    """
    ret = glue.state_ret(name)
    try:
        site, n = _site_node(node)
        files = core.mail_files(site, n)
    except (MailhaError, glue.CommandExecutionError) as exc:
        return _fail(ret, str(exc))
    secrets = site.secrets()
    todo = []
    for f in files:
        path = _rooted(f.path)
        old, old_mode = glue.read_text(path), glue.file_mode(path)
        if old == f.content and old_mode == f.mode and _group_ok(path, f.group):
            continue
        change = {"old": None if old is None else {"mode": old_mode}, "new": {"mode": f.mode, "group": f.group}}
        if old != f.content:
            change["diff"] = glue.redacted_diff(old, f.content, f.path, secrets)
        ret["changes"][f.path] = change
        todo.append((path, f))
    if not todo:
        ret["comment"] = f"{len(files)} mail files of {n.id} are already as rendered"
        return ret
    if __opts__["test"]:
        ret["result"] = None
        ret["comment"] = f"would write {len(todo)} mail file(s): {', '.join(f.path for _, f in todo)}"
        return ret
    written = []
    for path, f in todo:
        try:
            glue.write_atomic(path, f.content, f.mode)
            if f.group != "root":
                shutil.chown(path, group=f.group)
        except (OSError, LookupError) as exc:
            ret["result"] = False
            ret["changes"] = {p: c for p, c in ret["changes"].items() if p in written}
            ret["comment"] = redact(f"could not write {path}: {exc}; wrote only {', '.join(written) or 'nothing'}",
                                    secrets)
            return ret
        written.append(f.path)
    ret["comment"] = f"wrote {len(todo)} mail file(s): {', '.join(f.path for _, f in todo)}"
    return ret


def _group_ok(path, group):
    if group == "root":
        return True
    try:
        return os.stat(path).st_gid == grp.getgrnam(group).gr_gid
    except (OSError, KeyError):
        return False


def health_page(name, node=None):
    """Ensure the page ldirectord's http/https checks request (``ldirectord:health_page``) holds
    ``ldirectord:health_content`` under ``mail:web_root``.

    name
        A label; not used.
    """
    ret = glue.state_ret(name)
    try:
        site, _ = _site_node(node)
        page, content = core.health_page(site)
    except (MailhaError, glue.CommandExecutionError) as exc:
        return _fail(ret, str(exc))
    path = _rooted(page)
    old = glue.read_text(path)
    if old == content and glue.file_mode(path) == "0644":
        ret["comment"] = f"health page {path} is already in place"
        return ret
    ret["changes"] = {page: {"old": old, "new": content}}
    if __opts__["test"]:
        ret["result"] = None
        ret["comment"] = f"would write health page {path}"
        return ret
    try:
        glue.write_atomic(path, content, "0644")
    except OSError as exc:
        return _fail(ret, f"could not write {path}: {exc.strerror}")
    ret["comment"] = f"wrote health page {path}"
    return ret


def default_site_disabled(name, path=core.NGINX_DEFAULT_SITE):
    """Ensure Debian's default nginx site is not enabled: it claims port 80 as ``default_server``
    too, so nginx would refuse to start beside the health page server (or answer in its place).
    Removes only the link the package installs; a regular file there is the operator's and makes
    this state fail instead (move it to sites-available, or change its ports, and re-apply).

    .. code-block:: yaml

        mailha-nginx-default-site:
          mailha_mail.default_site_disabled: []

    name
        A label; not used.
    path
        The enabled site to remove (default ``/etc/nginx/sites-enabled/default``).
    """
    ret = glue.state_ret(name)
    if not isinstance(path, str) or not path.startswith("/") or ".." in path.split("/"):
        return _fail(ret, f"path {path!r} must be an absolute path such as {core.NGINX_DEFAULT_SITE}")
    site_path, path = path, _rooted(path)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        ret["comment"] = f"{path} is not enabled"
        return ret
    except OSError as exc:
        return _fail(ret, f"cannot read {path}: {exc.strerror}")
    if not stat.S_ISLNK(st.st_mode):
        return _fail(ret, f"{path} is not the package's link but a file of its own: it would compete with the "
                          f"health page server for port 80; move it to sites-available (or drop its "
                          f"default_server) and re-apply")
    target = os.readlink(path)
    ret["changes"] = {site_path: {"old": target, "new": None}}
    if __opts__["test"]:
        ret["result"] = None
        ret["comment"] = f"would remove the link {path} -> {target}"
        return ret
    try:
        os.unlink(path)
    except OSError as exc:
        return _fail(ret, f"could not remove {path}: {exc.strerror}")
    ret["comment"] = f"removed the link {path} -> {target}"
    return ret


# ----------------------------------------------------------------------------------- vmail share


def vmail_share(name, node=None, mount=None):
    """The guide's NFS share of Maildirs, made safe: the fstab line (the filer's address on
    ``mail:vmail:network``, ``mail:vmail:options``), the mountpoint created and made immutable
    (``chattr +i``) while nothing is mounted on it, so nothing can write mail to the local disk,
    then ``mount``.

    name
        A label; not used.
    mount
        Mount the share when it is not mounted (``mount -T <fstab> <path>``). False only writes
        the fstab line and protects the mountpoint. Default: True, except in a rehearsal
        (scratch ``mailha_root`` without minion config ``mailha_live``: it mounts nothing).
    """
    ret = glue.state_ret(name)
    try:
        site, n = _site_node(node)
        want = core.vmail_fstab_entry(site, n)
        mounts = _mounts()
    except (MailhaError, glue.CommandExecutionError, OSError) as exc:
        return _fail(ret, str(exc))
    mountpoint = _rooted(want.file)
    fstab = _rooted("/etc/fstab")
    # Under a scratch root the line names the scratch mountpoint, so ``mount -T`` finds it.
    entry = core.FstabEntry(want.spec, mountpoint, want.vfstype, want.options, want.freq, want.passno)
    try:  # read and plan everything before changing anything
        new_text, action, old_line = core.plan_fstab(glue.read_text(fstab) or "", entry)
    except ParseError as exc:
        return _fail(ret, f"{fstab}: {exc}; fix that line by hand, then re-apply")
    test = __opts__["test"]
    if mount is None:
        mount = rehearsal.live(__opts__, __pillar__)
    done, would = [], []

    mounted = core.mount_at(mounts, mountpoint) is not None
    if not os.path.isdir(mountpoint):
        ret["changes"]["mountpoint"] = {"old": None, "new": mountpoint}
        would.append(f"create {mountpoint}")
        if not test:
            os.makedirs(mountpoint, mode=0o755)
            done.append(f"created {mountpoint}")
    if not mounted:
        try:
            immutable = os.path.isdir(mountpoint) and _immutable(mountpoint)
        except (MailhaError, ParseError) as exc:
            return _fail(ret, str(exc))
        if not immutable:
            ret["changes"]["immutable"] = {"old": False, "new": True}
            would.append(f"chattr +i {mountpoint}")
            if not test:
                out = _run(["chattr", "+i", mountpoint])
                if out["retcode"] != 0:
                    return _fail(ret, f"chattr +i {mountpoint} failed: {out['stderr'].strip()}; the "
                                      f"filesystem must support the immutable flag (ext4, xfs)")
                done.append(f"made {mountpoint} immutable")

    if action != "present":
        ret["changes"]["fstab"] = {"old": old_line, "new": entry.line()}
        would.append(f"{action} the {fstab} line for {mountpoint}")
        if not test:
            mode = glue.file_mode(fstab) or "0644"
            glue.write_atomic(fstab, new_text, mode)
            done.append(f"{'added' if action == 'add' else 'replaced'} the {fstab} line")

    if not mounted and mount:
        ret["changes"]["mounted"] = {"old": False, "new": entry.spec}
        would.append(f"mount {mountpoint}")
        if not test:
            # bounded: an unreachable filer must fail this state, not hang the whole run
            out = _run(["mount", "-T", fstab, mountpoint], timeout=MOUNT_TIMEOUT)
            if out["retcode"] != 0:
                ret["result"] = False
                ret["changes"].pop("mounted")
                ret["comment"] = (f"{'; '.join(done) + '; ' if done else ''}mount {mountpoint} ({entry.spec}) failed "
                                  f"(rc {out['retcode']}): {(out['stderr'] or out['stdout']).strip()[-300:]}; the "
                                  f"mountpoint stays immutable and the mail services stay stopped until it mounts")
                return ret
            done.append(f"mounted {entry.spec} on {mountpoint}")

    if not would:
        state = "mounted" if mounted else "not mounted (mount: False)"
        ret["comment"] = f"vmail share {mountpoint} is {state}, its fstab line is in place"
        return ret
    if test:
        ret["result"] = None
        ret["comment"] = "would " + "; ".join(would)
        return ret
    ret["comment"] = "; ".join(done)
    return ret


def vmail_export(name, node=None, reload=None):
    """On the filer (``mail:vmail:nfs_server``): the export directory, owned by the vmail uid/gid
    (the same on every mail node) with mode 0770, and its ``/etc/exports`` line for the mail
    nodes' addresses on ``mail:vmail:network``; ``exportfs -ra`` after a change.

    .. code-block:: yaml

        mailha-vmail-export:
          mailha_mail.vmail_export: []

    name
        A label; not used.
    reload
        Run ``exportfs -ra`` after changing the line. Default: True, except in a rehearsal
        (scratch ``mailha_root`` without minion config ``mailha_live``).
    """
    ret = glue.state_ret(name)
    try:
        site, n = _site_node(node)
        line = core.vmail_exports_line(site, n)
    except (MailhaError, glue.CommandExecutionError) as exc:
        return _fail(ret, str(exc))
    v = site.mail.vmail
    test = __opts__["test"]
    if reload is None:
        reload = rehearsal.live(__opts__, __pillar__)
    export_dir = _rooted(v.export)
    exports = _rooted("/etc/exports")
    done, would = [], []
    try:
        st = os.stat(export_dir)
        owner = (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode))
    except FileNotFoundError:
        owner = None
    if owner != (v.uid, v.gid, 0o770):
        ret["changes"]["export_dir"] = {"old": None if owner is None else
                                        {"uid": owner[0], "gid": owner[1], "mode": f"{owner[2]:04o}"},
                                        "new": {"uid": v.uid, "gid": v.gid, "mode": "0770"}}
        would.append(f"{'create' if owner is None else 'fix'} {export_dir} ({v.uid}:{v.gid} 0770)")
        if not test:
            os.makedirs(export_dir, exist_ok=True)
            os.chown(export_dir, v.uid, v.gid)
            os.chmod(export_dir, 0o770)
            done.append(f"{'created' if owner is None else 'fixed'} {export_dir}")
    new_text, action, old_line = core.plan_exports(glue.read_text(exports) or "", line)
    if action != "present":
        ret["changes"]["exports"] = {"old": old_line, "new": line}
        would.append(f"{action} the {exports} line for {v.export}")
        if not test:
            glue.write_atomic(exports, new_text, glue.file_mode(exports) or "0644")
            done.append(f"{'added' if action == 'add' else 'replaced'} the {exports} line")
            if reload:
                out = _run(["exportfs", "-ra"])
                if out["retcode"] != 0:
                    ret["result"] = False
                    ret["comment"] = "; ".join(done) + f"; exportfs -ra failed: {out['stderr'].strip()[-300:]}"
                    return ret
                done.append("reloaded the exports")
    if not would:
        ret["comment"] = f"{v.export} is exported to the mail nodes as specified"
    elif test:
        ret["result"] = None
        ret["comment"] = "would " + "; ".join(would)
    else:
        ret["comment"] = "; ".join(done)
    return ret


def share_guard(name, node=None):
    """Succeed only when the vmail share is mounted, so that states requiring this one (the mail
    services) never start on the local disk. Changes nothing.

    name
        A label; not used.
    """
    ret = glue.state_ret(name)
    try:
        site, n = _site_node(node)
        mountpoint = _rooted(core.vmail_fstab_entry(site, n).file)
        decision = core.share_guard(_mounts(), mountpoint)
    except (MailhaError, glue.CommandExecutionError, OSError) as exc:
        return _fail(ret, str(exc))
    ret["comment"] = decision.reason
    if not decision.allowed:
        # In test mode an earlier state may still mount it: say what would happen, change nothing.
        ret["result"] = None if __opts__["test"] else False
    return ret


# ----------------------------------------------------------------------------------- iRedMail


def _hash_ok(path, source_hash):
    algo, _, want = source_hash.partition("=")
    if algo not in ("sha256", "sha512") or not want or any(c not in "0123456789abcdefABCDEF" for c in want):
        raise MailhaError(f"mail:iredmail:source_hash {source_hash!r} is not <sha256|sha512>=<hex>: "
                          f"put the sha256sum of the tarball in the pillar")
    h = hashlib.new(algo)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    if h.hexdigest().lower() != want.lower():
        raise MailhaError(f"the installer tarball {path} has {algo} {h.hexdigest()}, not the pillar's "
                          f"mail:iredmail:source_hash: fix the hash or the file")


def _extract(tarball, dest_parent, expect_dir):
    """Unpack the installer tarball (glue.extract_tar: nothing may land outside ``dest_parent``)."""
    glue.extract_tar(tarball, dest_parent)
    if not os.path.isfile(os.path.join(expect_dir, core.INSTALLER)):
        raise MailhaError(f"{tarball} did not unpack {expect_dir}/{core.INSTALLER}; is it an iRedMail tarball?")


def iredmail_installed(name, node=None, installer_dir=None, timeout=7200):
    """Run iRedMail's installer unattended, once per node, with the site's ``config``.

    The tarball comes from ``mail:iredmail:source`` (``salt://`` or ``http(s)://``, checked
    against ``source_hash``) and is unpacked under ``mail:iredmail:workdir``; ``installer_dir``
    instead names an already unpacked installer. The ``config`` (mode 0600, identical on every
    mail node: the passwords are the pillar's) goes beside ``iRedMail.sh``, which then runs as
    ``bash iRedMail.sh`` with the AUTO_* answers and MYSQL_SERVER = the db VIP's name in its
    environment (no password there: they are only in ``config``). Success writes a marker
    (``/var/lib/mailha/iredmail.installed``): a re-apply does not reinstall. Failure writes none.

    name
        A label; not used.
    installer_dir
        A directory holding ``iRedMail.sh`` (skips the download and unpacking).
    timeout
        Seconds the installer may run.
    """
    ret = glue.state_ret(name)
    try:
        site, n = _site_node(node)
        im = site.mail.iredmail if site.mail else None
        if im is None:
            raise MailhaError("pillar mailha:mail:iredmail is missing: add source, source_hash, admin_password ...")
        config_text = core.render_iredmail_config(site, n)
        env = core.iredmail_environment(site, n)
        secrets = tuple(site.secrets()) + core.iredmail_secrets(site, n)
    except (MailhaError, glue.CommandExecutionError) as exc:
        return _fail(ret, str(exc))
    marker = _rooted(core.IREDMAIL_MARKER)
    if os.path.exists(marker):
        ret["comment"] = f"iRedMail is already installed on {n.id} (marker {marker}); remove it to reinstall"
        return ret

    if installer_dir:
        directory = installer_dir
    else:
        directory = _rooted(core.iredmail_dir(site, im.source))
    plan = {"installer": os.path.join(directory, core.INSTALLER), "config": os.path.join(directory, "config"),
            "marker": marker, "MYSQL_SERVER": env["MYSQL_SERVER"], "INITIALIZE_SQL_DATA": env["INITIALIZE_SQL_DATA"]}
    if not rehearsal.live(__opts__, __pillar__):
        src = directory if installer_dir else im.source
        ret["comment"] = (f"REHEARSAL, nothing done: would install iRedMail on {n.id} from {src} (unattended, "
                          f"MYSQL_SERVER={env['MYSQL_SERVER']}); the installer was neither fetched nor run; "
                          f"{rehearsal.why(__opts__, __pillar__)}")
        return ret
    if __opts__["test"]:
        if (not installer_dir and not os.path.isfile(plan["installer"]) and im.source.startswith("salt://")
                and not __salt__["cp.hash_file"](im.source)):
            return _fail(ret, f"the iRedMail tarball {im.source} is missing (mail:iredmail:source): put "
                              f"{os.path.basename(im.source)} on the Salt fileserver or fix the URL")
        ret["result"] = None
        ret["changes"] = {"iredmail": {"old": None, "new": plan}}
        src = directory if installer_dir else im.source
        ret["comment"] = f"would install iRedMail on {n.id} from {src} (unattended, MYSQL_SERVER={env['MYSQL_SERVER']})"
        return ret

    try:
        if not installer_dir and not os.path.isfile(plan["installer"]):
            cached = __salt__["cp.cache_file"](im.source)
            if not cached:
                raise MailhaError(f"the iRedMail tarball {im.source} is missing (mail:iredmail:source): put "
                                  f"{os.path.basename(im.source)} on the Salt fileserver or fix the URL")
            _hash_ok(cached, im.source_hash)
            os.makedirs(os.path.dirname(directory), exist_ok=True)
            _extract(cached, os.path.dirname(directory), directory)
        if not os.path.isfile(plan["installer"]):
            raise MailhaError(f"{plan['installer']} does not exist: unpack the iRedMail tarball there or fix "
                              f"installer_dir")
        glue.write_atomic(plan["config"], config_text, core.IREDMAIL_CONFIG_MODE)
    except (MailhaError, OSError, tarfile.TarError) as exc:
        return _fail(ret, str(exc), secrets)

    log.info("running iRedMail.sh unattended in %s (MYSQL_SERVER=%s)", directory, env["MYSQL_SERVER"])
    out = _run(["bash", core.INSTALLER], cwd=directory, env=env, clean_env=True, timeout=timeout)
    if out["retcode"] != 0:
        tail = "\n".join((out["stdout"] + "\n" + out["stderr"]).strip().splitlines()[-5:])
        return _fail(ret, f"iRedMail.sh failed on {n.id} (rc {out['retcode']}) in {directory}; no marker written, "
                          f"the next apply runs it again. Last lines:\n{tail}", secrets)
    stamp = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    try:
        glue.write_atomic(marker, f"iRedMail installed from {directory} at {stamp}\n", "0644")
    except OSError as exc:
        return _fail(ret, f"iRedMail.sh succeeded but the marker {marker} could not be written "
                          f"({exc.strerror}): the next apply would run it again")
    ret["changes"] = {"iredmail": {"old": None, "new": plan}}
    ret["comment"] = f"installed iRedMail on {n.id} (MYSQL_SERVER={env['MYSQL_SERVER']}); marker {marker}"
    return ret
