"""Search every output of a run for a site's secrets and each of their derived forms.

``needles(site)`` names what to look for: each secret by its pillar key, and each form
``secret.derived_secrets`` registers (hashes, derived passwords, encodings), described by what it
derives from. ``Finder`` then searches texts, Python data, files and whole directory trees (bytes,
and msgpack files decoded as well) and records every hit by where and what, never by value.
"""

import json
import pathlib

import msgpack

from salt_mailha.core import secret
from salt_mailha.core.model import secret_fields


def needles(site):
    """``{value: description}``: every secret of ``site`` and every derived form of them."""
    found = {}
    base = []
    for key, value, _ in secret_fields(site):
        if value is not None and value.reveal() not in found:
            found[value.reveal()] = key
            base.append(value)
    for form in secret.derived_secrets(site, base):
        found.setdefault(form.reveal(), _describe(site, base, form.reveal()))
    for value in site.secrets():  # anything else the model holds as a Secret
        found.setdefault(value.reveal(), "a secret of the site (Site.secrets)")
    return found


def _describe(site, base, form):
    for value in base:
        key = next((k for k, v, _ in secret_fields(site) if v is not None and v.reveal() == value.reveal()),
                   "a secret")
        if form in secret.encoded_forms(value):
            return f"{key}, encoded"
        if form in secret.keepalived_auth_pass_forms(value):
            return f"{key}, as keepalived keeps it (8 characters)"
        if form in secret.tsig_forms(value):
            return f"{key}, the key bytes"
    if site.ldap is not None and site.ldap.rootpw is not None:
        for n in site.nodes_with("mail"):
            if form == secret.slapd_rootpw_hash(site.ldap.rootpw, site.name, n.id):
                return f"mailha:ldap:rootpw, hashed in {n.id}'s slapd.conf"
    return "a form derived from a secret (iRedMail service password, or an encoding of one)"


class Finder:
    """Collects every place where a needle was found; counts what it searched."""

    def __init__(self, needles):
        self.needles = needles
        self._bytes = [(v.encode(), d) for v, d in needles.items()]
        self.hits = []
        self.counts = {}

    def count(self, kind, n=1):
        self.counts[kind] = self.counts.get(kind, 0) + n

    def text(self, where, text, kind=None):
        if kind:
            self.count(kind)
        if isinstance(text, bytes):
            for value, desc in self._bytes:
                if value in text:
                    self.hits.append((where, desc))
            return
        for value, desc in self.needles.items():
            if value in text:
                self.hits.append((where, desc))

    def data(self, where, data, kind=None):
        """Python data (a return, an event payload): its repr and its JSON both searched (the
        two escape differently), keys included."""
        self.text(where, repr(data), kind)
        self.text(where, json.dumps(data, default=repr, ensure_ascii=False))

    def file(self, path, kind=None):
        path = pathlib.Path(path)
        raw = path.read_bytes()
        self.text(str(path), raw, kind)
        if path.suffix == ".p":  # Salt's msgpack (job cache, minion data cache)
            for i, obj in enumerate(_unpack_all(raw)):
                self.data(f"{path} (decoded #{i})", obj)

    def tree(self, root, exclude=(), kind="file"):
        """Every regular file under ``root``, except those under an ``exclude`` path; returns the
        files searched."""
        root = pathlib.Path(root)
        excluded = [pathlib.Path(e) for e in exclude]
        searched = []
        for path in sorted(root.rglob("*")):
            if not path.is_file() or path.is_symlink() or any(path.is_relative_to(e) for e in excluded):
                continue
            self.file(path, kind)
            searched.append(path)
        return searched

    def report(self):
        return "\n".join(f"{desc} found in {where}" for where, desc in self.hits)


def _unpack_all(raw):
    """Every object of a msgpack stream (a job cache file holds one; some hold several)."""
    try:
        unpacker = msgpack.Unpacker(raw=False, strict_map_key=False, unicode_errors="surrogateescape")
        unpacker.feed(raw)
        return list(unpacker)
    except Exception:  # noqa: BLE001 - not msgpack after all: its bytes were searched already
        return []


class ProcessSampler:
    """Samples the argv and environment of every process on the host while a run goes on (a
    thread, every ``interval`` seconds), so that a secret passed in argv or an environment
    variable is searched too. A sample, not a trace: a process that lives less than ``interval``
    can be missed."""

    def __init__(self, interval=0.05):
        import threading

        self.interval = interval
        self.seen = {}  # (pid, kind) -> bytes
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=10)

    def _loop(self):
        own = str(__import__("os").getpid())
        while not self._stop.is_set():
            for proc in pathlib.Path("/proc").iterdir():
                if not proc.name.isdigit() or proc.name == own:
                    continue
                for kind in ("cmdline", "environ"):
                    try:
                        data = (proc / kind).read_bytes()
                    except OSError:
                        continue
                    if data:
                        self.seen.setdefault((proc.name, kind, data), data)
            self._stop.wait(self.interval)

    def search(self, finder):
        for (pid, kind, _), data in list(self.seen.items()):
            finder.text(f"{kind} of process {pid}", data, kind="process argv/environ samples")
