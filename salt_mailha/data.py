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
