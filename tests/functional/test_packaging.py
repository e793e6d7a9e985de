"""``pip install .`` ships what Salt needs: the loader entry point naming the package, every
template, every loader folder. (The editable install the tests run under proves the loader finds
our modules through that entry point: see test_formula.test_loader_lists_our_modules.)"""

import pathlib
import subprocess
import sys
import zipfile

REPO = pathlib.Path(__file__).resolve().parents[2]


def test_wheel_has_entry_point_templates_and_loader_dirs(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
                    "-w", str(tmp_path), str(REPO)], check=True, timeout=300)
    wheel = next(tmp_path.glob("salt_mailha-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    entry_points = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "[salt.loader]" in entry_points and "salt_mailha = salt_mailha" in entry_points
    templates = {p.name for p in (REPO / "salt_mailha" / "templates").glob("*.j2")}
    assert templates and templates <= {pathlib.PurePath(n).name for n in names if "/templates/" in n}
    for kind in ("modules", "states", "beacons", "runners"):
        assert any(n.startswith(f"salt_mailha/{kind}/mailha") for n in names), kind
