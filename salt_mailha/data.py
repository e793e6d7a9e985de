"""Where the formula, the reactor files and the example configs are, in a wheel or a checkout.

The wheel carries them as package data under ``salt_mailha/_data/`` (copied there by
``setup.py``'s build step from the repository's ``states/``, ``reactor/``, ``examples/`` and
``pillar.example/``); a source checkout (editable install, tests) has them at the top of the
repository. Both have the same layout, so every consumer (the ``mailha`` fileserver backend, the
tests) resolves paths through :func:`root` and never guesses.

``python -m salt_mailha.data`` prints the paths, for an operator who prefers ``file_roots`` and
plain reactor paths to the fileserver backend, or who wants the example configs.
"""

import pathlib
import sys

import yaml

PACKAGE = pathlib.Path(__file__).resolve().parent
PARTS = ("states", "reactor", "examples", "pillar.example")


def root():
    """The directory holding ``states/``, ``reactor/``, ``examples/`` and ``pillar.example/``."""
    packaged = PACKAGE / "_data"
    if (packaged / "states" / "mailha" / "init.sls").is_file():
        return packaged
    checkout = PACKAGE.parent
    if (checkout / "states" / "mailha" / "init.sls").is_file():
        return checkout
    raise FileNotFoundError(
        f"salt-mailha's formula is neither in {packaged} (a built wheel) nor in {checkout}/states "
        "(a source checkout): reinstall the package from a wheel built by pip or build")


def paths():
    """``{"file_roots": ..., "reactor": ..., "examples": ..., "pillar_example": ...}``."""
    base = root()
    return {"file_roots": str(base / "states"), "reactor": str(base / "reactor"),
            "examples": str(base / "examples"), "pillar_example": str(base / "pillar.example")}


SITE_SLS = "mailha"  # the topology: no secret
SECRETS_DIR = "mailha_secrets"  # one file per group of secrets, assigned by role in top.sls


def pillar_files(pillar_dir):
    """``{sls name: data}`` of a site's pillar tree laid out as ``pillar.example/``: ``mailha.sls``
    and every ``mailha_secrets/*.sls``."""
    base = pathlib.Path(pillar_dir)
    files = {SITE_SLS: base / f"{SITE_SLS}.sls"}
    files.update({f"{SECRETS_DIR}.{p.stem}": p for p in sorted((base / SECRETS_DIR).glob("*.sls"))})
    return {name: yaml.safe_load(path.read_text()) or {} for name, path in files.items()}


def merge(into, data):
    """Merge the mapping ``data`` into ``into`` key by key, as Salt merges pillar files."""
    for key, value in data.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            merge(into[key], value)
        else:
            into[key] = value
    return into


def whole_pillar(pillar_dir):
    """Every file of a site's pillar tree merged: the pillar of a node holding every role."""
    out = {}
    for data in pillar_files(pillar_dir).values():
        merge(out, data)
    return out


def example_pillar():
    """The example site's whole pillar (``pillar.example/``, every secret file merged in)."""
    return whole_pillar(pathlib.Path(paths()["pillar_example"]))


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    found = paths()
    if argv:
        unknown = [a for a in argv if a not in found]
        if unknown:
            print(f"unknown name(s) {', '.join(unknown)}; choose from {', '.join(found)}",
                  file=sys.stderr)
            return 2
        print("\n".join(found[a] for a in argv))
        return 0
    for key, value in found.items():
        print(f"{key}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
