"""Salt-side helpers shared by our execution, state and runner modules (Salt does not load an
extension's ``utils/`` into ``__utils__``, so this is a plain module they import).

The one place that turns the pillar into a ``Site``, finds which node this minion is, maps
model paths under the ``mailha_root`` scratch root, writes files atomically and unpacks archives
safely.
"""

from __future__ import annotations

import difflib
import grp
import inspect
import os
import posixpath
import re
import shutil
import stat
import tarfile
import tempfile

import salt.modules.pillar
from salt.exceptions import CommandExecutionError

from salt_mailha.core.errors import MailhaError
from salt_mailha.core.model import load_site
from salt_mailha.core.secret import REDACTED, redact_diff

# Salt 3008.0 masks secrets in what ``pillar.get`` returns (``**********``) unless it is called
# with ``unmask=True``; 3006 and 3007 neither mask nor accept that argument (TypeError). Decided
# once, from the signature of the very function the loader will call.
PILLAR_GET_MASKS = "unmask" in inspect.signature(salt.modules.pillar.get).parameters


def pillar_get(salt_funcs, key, default=None):
    """``pillar.get(key, default)`` with the real (unmasked) values on every supported Salt.

    ``salt_funcs`` is the caller's ``__salt__``. Salt 3008 masks pillar values returned by
    ``pillar.get`` unless asked not to; 3006 and 3007 return them as they are and refuse the
    ``unmask`` keyword."""
    if PILLAR_GET_MASKS:
        return salt_funcs["pillar.get"](key, default, unmask=True)
    return salt_funcs["pillar.get"](key, default)


def site_from_pillar(pillar, opts, node=None):
    """The validated ``Site`` of this minion's pillar, with the secrets of the node it acts as
    (``node_id``) required and no other: each node receives only the secrets its roles use.
    Every problem becomes one CommandExecutionError."""
    try:
        return load_site(pillar, node=node_id(opts, node))
    except MailhaError as exc:
        raise CommandExecutionError(str(exc)) from None


def node_id(opts, node=None):
    """The model node this minion is: ``node`` if given, else minion config ``mailha_node``, else its id."""
    return node or opts.get("mailha_node") or opts["id"]


def this_node(site, opts, node=None):
    nid = node_id(opts, node)
    if not site.has_node(nid):
        raise CommandExecutionError(
            f"minion {nid!r} is not a node of site {site.name!r} (mailha:nodes has "
            f"{', '.join(n.id for n in site.nodes)}); set minion config mailha_node or fix the pillar"
        )
    return site.node(nid)


def site_and_node(pillar, opts, node=None):
    """``(Site, Node)`` of this minion (or ``node``); errors as CommandExecutionError."""
    site = site_from_pillar(pillar, opts, node)
    return site, this_node(site, opts, node)


def root(opts, pillar=None):
    """Prefix for every file we write: ``/`` in production, a scratch dir in tests and rehearsals.

    Minion config ``mailha_root`` wins over a pillar ``mailha_root`` (handy on the command line:
    ``pillar='{"mailha_root": "/tmp/x"}'``)."""
    return opts.get("mailha_root") or (pillar or {}).get("mailha_root") or "/"


def under_root(path, opts, pillar=None):
    return os.path.join(root(opts, pillar), path.lstrip("/"))


def read_text(path):
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except FileNotFoundError:
        return None


def file_mode(path):
    try:
        return f"{os.stat(path).st_mode & 0o7777:04o}"
    except FileNotFoundError:
        return None


def group_id(name):
    """The gid of group ``name``, or None when it does not exist (its package is not installed)."""
    try:
        return grp.getgrnam(name).gr_gid if name else None
    except KeyError:
        return None


def file_gid(path):
    try:
        return os.stat(path).st_gid
    except FileNotFoundError:
        return None


def write_atomic(path, content, mode, gid=None):
    """Write ``content`` to ``path`` with ``mode`` (octal string) and group ``gid`` (owner root)
    without a moment of wrong mode or owner."""
    directory = os.path.dirname(path)
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".mailha-")
    try:
        if gid is not None:
            os.fchown(fd, 0, gid)
        os.fchmod(fd, int(mode, 8))
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(content)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _unsafe(root, m):
    """Why tar member ``m`` may not be unpacked under ``root`` (None: it may). Decided on the
    member's own name and link, then on what the disk holds so far (earlier members included):
    nothing is ever written through a symlink."""
    name = m.name
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if name.startswith("/") or ".." in parts or not parts:
        return "an absolute path or a path with '..'"
    if not (m.isfile() or m.isdir() or m.issym() or m.islnk()):
        return "a device, FIFO or other special file"
    if m.issym() or m.islnk():
        link = m.linkname
        base = posixpath.dirname(name) if m.issym() else ""
        if link.startswith("/") or posixpath.normpath(posixpath.join(base, link)).split("/")[0] == "..":
            return f"a link to {link!r}, outside the archive"
    path = root
    for i, part in enumerate(parts):  # every existing component a real directory, the target no symlink
        path = os.path.join(path, part)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            break
        if stat.S_ISLNK(st.st_mode):
            return "a path through a symlink" if i < len(parts) - 1 else "a replacement for a symlink"
        if i < len(parts) - 1 and not stat.S_ISDIR(st.st_mode):
            return "a path through a file"
    if m.islnk():  # the hard link's source: an earlier regular member, reached without a symlink
        src = os.path.join(root, *[p for p in m.linkname.split("/") if p not in ("", ".")])
        if _unsafe(root, tarfile.TarInfo(m.linkname)) or not os.path.isfile(src) or os.path.islink(src):
            return f"a hard link to {m.linkname!r}, not a regular file of the archive"
    return None


def extract_tar(tarball, dest_parent):
    """Unpack ``tarball`` into ``dest_parent`` without trusting it (Debian 12's Python has no
    ``tarfile`` extraction filters): no absolute or ``..`` names, no devices, nothing written
    through a symlink, links only to inside the archive (every symlink is resolved once all are
    in place), modes without setuid/setgid or group/other write, no ownership from the archive.
    It unpacks into a scratch directory beside the destination and moves the top-level entries in
    only when all of it passed: a refused archive leaves nothing behind. Returns the names moved
    in; raises MailhaError naming the first unsafe member."""
    os.makedirs(dest_parent, exist_ok=True)
    scratch = tempfile.mkdtemp(dir=dest_parent, prefix=".mailha-unpack-")
    root = os.path.realpath(scratch)
    # a Python with PEP 706 filters adds its own "data" filter behind these checks
    extra = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
    try:
        with tarfile.open(tarball) as tf:
            for m in tf:
                why = _unsafe(root, m)
                if why:
                    raise MailhaError(f"the archive {tarball} has an unsafe member {m.name!r} ({why}); refusing it")
                tf.extract(m, root, set_attrs=False, **extra)
                if m.isfile() or m.isdir():
                    mode = (0o755 if m.isdir() or m.mode & 0o111 else 0o644) & (m.mode | 0o700)
                    os.chmod(os.path.join(root, m.name), mode)
        for dirpath, dirnames, filenames in os.walk(root):
            for entry in sorted(dirnames + filenames):
                path = os.path.join(dirpath, entry)
                real = os.path.realpath(path)
                if os.path.islink(path) and not (real == root or real.startswith(root + os.sep)):
                    rel = os.path.relpath(path, root)
                    raise MailhaError(f"the archive {tarball} has an unsafe member {rel!r} (a chain of "
                                      f"symlinks leading outside the archive); refusing it")
        names = sorted(os.listdir(root))
        for entry in names:
            if os.path.lexists(os.path.join(dest_parent, entry)):
                raise MailhaError(f"{os.path.join(dest_parent, entry)} already exists; remove it to "
                                  f"unpack {tarball} again")
        for entry in names:
            os.rename(os.path.join(root, entry), os.path.join(dest_parent, entry))
        return names
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


# The settings of the files we write that hold a secret (keepalived, ldirectord, galera.cnf,
# slapd, Postfix/Dovecot lookups, the TSIG key, iRedMail's config).
_SECRET_SETTING = re.compile(r"auth_pass|passw|rootpw|sst_auth|secret|credentials|bind_?pw|dnpass", re.I)


def redacted_diff(old, new, path, secrets):
    """Unified diff of old -> new with every secret value replaced by ``<redacted>``, the secrets
    the file held before included: once a secret is rotated the old value is no pillar secret any
    more, yet the removed line still shows it. ``redact_diff`` rewrites such a line after its new
    counterpart; a removed line that still names a secret setting (the new file dropped it) is
    withheld."""
    lines = difflib.unified_diff(
        (old or "").splitlines(keepends=True), new.splitlines(keepends=True),
        fromfile=path if old is not None else "/dev/null", tofile=path,
    )
    out, in_hunk = [], False
    for line in redact_diff("".join(lines), secrets).splitlines(keepends=True):
        in_hunk = in_hunk or line.startswith("@@")
        if in_hunk and line.startswith("-") and REDACTED not in line and _SECRET_SETTING.search(line):
            line = "-<a line that held a secret: withheld>\n"
        out.append(line)
    return "".join(out)


def state_ret(name):
    """A state return that starts as 'already as specified' (STYLE rule 4)."""
    return {"name": name, "result": True, "changes": {}, "comment": ""}
