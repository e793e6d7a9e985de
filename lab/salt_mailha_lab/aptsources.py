"""Find the Debian mirror this machine's apt already uses, at run time (never hard-coded).

Reads deb822 ``*.sources`` files and one-line ``sources.list`` files; picks the first ``deb``
entry that serves the wanted suite with component ``main`` (security and -updates suites do not
count: debootstrap needs the release suite itself).
"""
import glob
import os

from salt_mailha.core.errors import ParseError


def _deb822_stanzas(text):
    stanza, key = {}, None
    for raw in text.splitlines():
        line = raw.rstrip()
        if line.startswith("#"):
            continue
        if not line.strip():
            if stanza:
                yield stanza
            stanza, key = {}, None
            continue
        if line[0] in " \t" and key:  # continuation line
            stanza[key] += " " + line.strip()
            continue
        if ":" not in line:
            raise ParseError(f"deb822 line without 'Field:': {line!r}")
        key, _, value = line.partition(":")
        key = key.strip().lower()
        stanza[key] = value.strip()
    if stanza:
        yield stanza


def parse_deb822(text):
    """Entries of a deb822 sources file as dicts: types, uris, suites, components, enabled."""
    out = []
    for st in _deb822_stanzas(text):
        if st.get("enabled", "yes").lower() == "no":
            continue
        out.append({
            "types": st.get("types", "").split(),
            "uris": st.get("uris", "").split(),
            "suites": st.get("suites", "").split(),
            "components": st.get("components", "").split(),
        })
    return out


def parse_one_line(text):
    """Entries of a one-line-style ``sources.list`` (``deb [opts] URI suite comp...``)."""
    out = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        words = line.split()
        kind, words = words[0], words[1:]
        if words and words[0].startswith("["):  # options: [arch=amd64 signed-by=...]
            while words and not words[0].endswith("]"):
                words = words[1:]
            words = words[1:]
        if len(words) < 2:
            raise ParseError(f"sources.list line needs 'URI suite [components]': {raw!r}")
        out.append({"types": [kind], "uris": [words[0]], "suites": [words[1]],
                    "components": words[2:]})
    return out


def pick_mirror(entries, suite):
    """The URI of the first ``deb`` entry serving ``suite`` with component ``main``."""
    for e in entries:
        if "deb" in e["types"] and suite in e["suites"] and "main" in e["components"] and e["uris"]:
            return e["uris"][0].rstrip("/")
    raise ParseError(
        f"no 'deb' apt source serves suite {suite!r} with component 'main'; add one to "
        "/etc/apt/sources.list.d/debian.sources (the lab uses the machine's own mirror)")


def read_entries(root="/"):
    entries = []
    listfile = os.path.join(root, "etc/apt/sources.list")
    files = ([listfile] if os.path.exists(listfile) else []) + sorted(
        glob.glob(os.path.join(root, "etc/apt/sources.list.d/*.list"))
        + glob.glob(os.path.join(root, "etc/apt/sources.list.d/*.sources")))
    for path in files:
        with open(path) as fh:
            text = fh.read()
        entries += parse_deb822(text) if path.endswith(".sources") else parse_one_line(text)
    return entries


def host_codename(root="/"):
    with open(os.path.join(root, "etc/os-release")) as fh:
        for line in fh:
            if line.startswith("VERSION_CODENAME="):
                return line.split("=", 1)[1].strip().strip('"')
    raise ParseError("/etc/os-release has no VERSION_CODENAME; the lab needs a Debian host")


def host_mirror(root="/"):
    """``(codename, mirror_uri)`` of this machine, read from its apt configuration now."""
    suite = host_codename(root)
    return suite, pick_mirror(read_entries(root), suite)
