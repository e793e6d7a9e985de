"""``pip install`` of the wheel ships what Salt and an operator need: the loader entry point naming
the package, every template and loader folder (modules, states, beacons, runners, fileserver,
output), the formula, the reactor files and the example configs; and the metadata is that of a
Salt extension an index would accept. (The editable install the tests run under proves the loader
finds our modules through that entry point: see test_formula.test_loader_lists_our_modules; the
installed wheel is exercised by tests/packaging.)"""

import configparser
import pathlib
import re
import zipfile
from email.parser import Parser

import pytest
import tomllib
import trove_classifiers

from tests.support import saltvenv

REPO = pathlib.Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    return zipfile.ZipFile(saltvenv.build_wheel(tmp_path_factory.mktemp("wheel")))


def _dist_info(wheel, name):
    return wheel.read(next(n for n in wheel.namelist()
                           if n.endswith(f".dist-info/{name}"))).decode()


def test_wheel_has_entry_point_templates_and_loader_dirs(wheel):
    names = wheel.namelist()
    entry_points = _dist_info(wheel, "entry_points.txt")
    assert "[salt.loader]" in entry_points and "salt_mailha = salt_mailha" in entry_points
    templates = {p.name for p in (REPO / "salt_mailha" / "templates").glob("*.j2")}
    assert templates and templates <= {pathlib.PurePath(n).name for n in names if "/templates/" in n}
    for kind in ("modules", "states", "beacons", "runners", "fileserver", "output"):
        assert any(n.startswith(f"salt_mailha/{kind}/mailha") for n in names), kind


@pytest.mark.parametrize("folder", ["states", "reactor", "examples", "pillar.example"])
def test_wheel_carries_formula_reactor_and_examples(wheel, folder):
    want = {str(p.relative_to(REPO)) for p in (REPO / folder).rglob("*")
            if p.is_file() and "__pycache__" not in p.parts}
    got = {n[len("salt_mailha/_data/"):] for n in wheel.namelist()
           if n.startswith(f"salt_mailha/_data/{folder}/")}
    assert want and got == want


def test_metadata_is_a_valid_salt_extension(wheel):
    meta = Parser().parsestr(_dist_info(wheel, "METADATA"))
    classifiers = meta.get_all("Classifier")
    assert classifiers, "no classifiers"
    invalid = [c for c in classifiers if c not in trove_classifiers.classifiers]
    assert not invalid, f"not trove classifiers (an index refuses the upload): {invalid}"
    assert "salt-extension" in meta["Keywords"].split(",")
    assert meta["License-Expression"] == "Apache-2.0"
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in wheel.namelist())
    requires = meta.get_all("Requires-Dist")
    salt_req = [r for r in requires if re.match(r"salt\b", r) and "extra ==" not in r]
    assert salt_req == ["salt>=3006"], "Salt is a floor, never a pin (pip would replace the " \
                                       f"operator's Salt): {salt_req}"
    # the version comes from git tags, not a number written in a file
    assert "version" in PYPROJECT["project"]["dynamic"] and "version" not in PYPROJECT["project"]
    assert re.match(r"\d+\.\d+", meta["Version"])


def test_license_changelog_and_setup_cfg():
    license_text = (REPO / "LICENSE").read_text()
    assert "Apache License" in license_text and "Version 2.0, January 2004" in license_text
    changelog = (REPO / "CHANGELOG.md").read_text()
    assert re.search(r"^## \[Unreleased\]|^## \[\d+\.\d+\.\d+\]", changelog, re.M)
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    # setup.cfg keeps the build options and the pytest config; metadata lives in pyproject.toml
    assert "metadata" not in cfg and "options" in cfg and "tool:pytest" in cfg


def test_constraints_pin_one_release_per_salt_line():
    for line in ("3006", "3007", "3008"):
        text = (REPO / "constraints" / f"salt-{line}.txt").read_text()
        (pin,) = re.findall(r"^salt==(\S+)$", text, re.M)
        assert pin.startswith(f"{line}."), (line, pin)
        assert not re.search(r"^salt-mailha==", text, re.M)


def test_this_venv_runs_the_constrained_salt_of_its_line():
    import salt.version

    line = str(salt.version.__saltstack_version__.major)
    pin = re.search(r"^salt==(\S+)$", (REPO / "constraints" / f"salt-{line}.txt").read_text(),
                    re.M).group(1)
    assert salt.version.__version__ == pin, (
        f"this venv has Salt {salt.version.__version__}; constraints/salt-{line}.txt says {pin}: "
        "install with pip's -c constraints/salt-<line>.txt")
