"""Salt-side helpers shared by our execution, state and runner modules (Salt does not load an
extension's ``utils/`` into ``__utils__``, so this is a plain module they import).

The one place that turns the pillar into a ``Site``, finds which node this minion is, maps
model paths under the ``mailha_root`` scratch root, and writes files atomically.
"""

from __future__ import annotations

import difflib
import grp
import inspect
import os
import tempfile

import salt.modules.pillar
from salt.exceptions import CommandExecutionError

from salt_mailha.core.errors import MailhaError
from salt_mailha.core.model import load_site
from salt_mailha.core.secret import redact

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


def site_from_pillar(pillar):
    """The validated ``Site`` of this pillar; every problem becomes one CommandExecutionError."""
    try:
        return load_site(pillar)
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
    site = site_from_pillar(pillar)
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


def redacted_diff(old, new, path, secrets):
    """Unified diff of old -> new with every secret value replaced by ``<redacted>``."""
    lines = difflib.unified_diff(
        (old or "").splitlines(keepends=True), new.splitlines(keepends=True),
        fromfile=path if old is not None else "/dev/null", tofile=path,
    )
    return redact("".join(lines), secrets)


def state_ret(name):
    """A state return that starts as 'already as specified' (STYLE rule 4)."""
    return {"name": name, "result": True, "changes": {}, "comment": ""}
