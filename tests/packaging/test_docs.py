"""The reference documentation builds from the docstrings with Sphinx, warnings as errors (as
salt-extensions build theirs), and documents every loader module the package ships."""

import html
import pathlib
import re
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[2]
KINDS = ("modules", "states", "beacons", "runners", "fileserver", "output")


def text(page):
    """A built page's text, without markup (code highlighting splits commands into spans)."""
    return html.unescape(re.sub(r"<[^>]+>", "", page.read_text()))


def test_every_loader_module_has_a_reference_page():
    documented = "\n".join(p.read_text() for p in (REPO / "docs" / "ref").glob("*.rst"))
    for kind in KINDS:
        for mod in sorted((REPO / "salt_mailha" / kind).glob("*.py")):
            if mod.name == "__init__.py":
                continue
            assert f".. automodule:: salt_mailha.{kind}.{mod.stem}\n" in documented, \
                f"salt_mailha/{kind}/{mod.name} has no page in docs/ref/"


def test_sphinx_builds_without_warnings(tmp_path):
    out = tmp_path / "html"
    proc = subprocess.run([sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b",
                           "html", str(REPO / "docs"), str(out)], capture_output=True, text=True,
                          timeout=600, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    runner = text(out / "ref" / "runners.html")
    # the docstrings really are in: the runner's functions and their CLI examples
    assert "salt-run mailha.status --out=json" in runner and "galera_recover" in runner
    modules = text(out / "ref" / "modules.html")
    assert modules.count("CLI Example") >= 10
