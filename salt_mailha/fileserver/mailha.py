"""The ``mailha`` fileserver backend: the formula, the reactor files and the example configs of
the installed salt-mailha package, served as ``salt://mailha/...`` with no file to copy.

Why a fileserver backend: the formula must match the execution and state modules it calls, and
the package is the one thing an operator installs on the master (``salt-pip install`` on onedir,
``pip`` in a venv). Served from the package, the formula is upgraded with the modules, works on a
master whose other files come from gitfs only, and needs no path into site-packages (which
differs between onedir, venvs and Python versions) in the master's config. Salt finds this module
through the package's ``salt.loader`` entry point, like the modules and states.

Enable it on the master (and on a masterless minion) next to the backends already in use::

    fileserver_backend:
      - roots        # or gitfs, ...: keep what you have, in your order of precedence
      - mailha

What it serves (in the ``base`` environment; minion/master option ``mailha_saltenvs`` lists
others)::

    salt://mailha/init.sls, lb.sls, ..., orch/*.sls       the formula: state.apply mailha
    salt://mailha/reactor/health.sls, presence.sls       for the master's reactor config
    salt://mailha/examples/master.d/mailha.conf, minion.d/mailha.conf

A backend listed earlier in ``fileserver_backend`` that has a ``mailha/`` directory wins, file by
file, as with any two backends: list ``mailha`` first to be sure the formula matches the package,
or last to override files of it from your own roots.
"""

import logging
import os

import salt.utils.files
import salt.utils.gzip_util
import salt.utils.hashutils

from salt_mailha import data

log = logging.getLogger(__name__)

__virtualname__ = "mailha"

PREFIX = "mailha"
# served prefix -> directory under salt_mailha.data.root(); the longest prefix wins
TREES = (("mailha/reactor", "reactor"), ("mailha/examples", "examples"), ("mailha", "states/mailha"))


def __virtual__():
    try:
        data.root()
    except FileNotFoundError as exc:
        return False, f"mailha fileserver backend disabled: {exc}"
    return __virtualname__


def envs():
    """The environments the package's files are served in (option ``mailha_saltenvs``)."""
    wanted = __opts__.get("mailha_saltenvs") or ["base"]  # noqa: F821
    return sorted({str(e) for e in (wanted if isinstance(wanted, list) else [wanted])})


def _walk():
    """``{served relative path: absolute path}`` of every file, and the set of served dirs."""
    base = data.root()
    files, dirs = {}, set()
    for prefix, sub in TREES:
        top = base / sub
        for dirpath, dirnames, filenames in os.walk(top):
            dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
            rel_dir = os.path.relpath(dirpath, top)
            served_dir = prefix if rel_dir == "." else f"{prefix}/{rel_dir}"
            dirs.add(served_dir)
            for name in filenames:
                files.setdefault(f"{served_dir}/{name}", os.path.join(dirpath, name))
    # a served directory shadowed by a longer prefix (mailha/reactor) lists its own tree only
    dirs.update(p for p, _ in TREES)
    return files, dirs


def _served(path):
    """The absolute file for served relative ``path``, or None."""
    path = os.path.normpath(path).replace(os.sep, "/")
    if os.path.isabs(path) or path.startswith("../") or path == "..":
        return None
    if path != PREFIX and not path.startswith(PREFIX + "/"):
        return None
    base = data.root()
    for prefix, sub in TREES:
        if path == prefix or path.startswith(prefix + "/"):
            top = (base / sub).resolve()
            full = (top / path[len(prefix):].lstrip("/")).resolve()
            if top not in full.parents or not full.is_file():
                return None
            return str(full)
    return None


def find_file(path, saltenv="base", **kwargs):
    """Where ``path`` is, in Salt's ``fnd`` form (empty when this backend does not serve it)."""
    fnd = {"path": "", "rel": ""}
    if saltenv not in envs():
        return fnd
    full = _served(path)
    if full is None:
        return fnd
    fnd["path"], fnd["rel"] = full, os.path.normpath(path).replace(os.sep, "/")
    try:
        fnd["stat"] = list(os.stat(full))
    except OSError as exc:
        log.error("mailha fileserver: cannot stat %s: %s", full, exc)
    return fnd


def serve_file(load, fnd):
    """One chunk of a file found by :func:`find_file`."""
    ret = {"data": "", "dest": ""}
    if not fnd.get("path") or "loc" not in load or load.get("saltenv") not in envs():
        return ret
    if _served(fnd["rel"]) != fnd["path"]:  # only what find_file found, never another path
        return ret
    ret["dest"] = fnd["rel"]
    with salt.utils.files.fopen(fnd["path"], "rb") as fp_:
        fp_.seek(load["loc"])
        chunk = fp_.read(__opts__["file_buffer_size"])  # noqa: F821
    gzip = load.get("gzip")
    if gzip and chunk:
        chunk = salt.utils.gzip_util.compress(chunk, gzip)
        ret["gzip"] = gzip
    ret["data"] = chunk
    return ret


def file_hash(load, fnd):
    """``{"hsum": ..., "hash_type": ...}`` of a file found by :func:`find_file`."""
    if not fnd.get("path") or load.get("saltenv") not in envs():
        return ""
    hash_type = __opts__["hash_type"]  # noqa: F821
    return {"hash_type": hash_type, "hsum": salt.utils.hashutils.get_hash(fnd["path"], hash_type)}


def file_list(load):
    """Every served file of ``load["saltenv"]``."""
    if load.get("saltenv") not in envs():
        return []
    return sorted(_walk()[0])


def file_list_emptydirs(load):  # noqa: ARG001 - Salt's backend interface
    return []


def dir_list(load):
    """Every served directory of ``load["saltenv"]``."""
    if load.get("saltenv") not in envs():
        return []
    return sorted(_walk()[1])


def symlink_list(load):  # noqa: ARG001 - Salt's backend interface
    return {}


def update():
    """Nothing to fetch: the files change only when the package is upgraded."""
