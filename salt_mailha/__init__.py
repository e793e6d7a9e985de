"""salt-mailha: a Salt extension for an HA multi-master mail cluster.

Salt finds our loader folders through the ``salt.loader`` entry point, which names this package;
the functions below tell the loader where each kind of module lives.
"""
import pathlib

PACKAGE_ROOT = pathlib.Path(__file__).resolve().parent


def _dirs(kind):
    return [str(PACKAGE_ROOT / kind)]


def get_modules_dirs():
    return _dirs("modules")


def get_states_dirs():
    return _dirs("states")


def get_beacons_dirs():
    return _dirs("beacons")


def get_runners_dirs():
    return _dirs("runners")
