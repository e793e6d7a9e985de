"""Sphinx configuration: the reference pages are built from the modules' docstrings
(reStructuredText, STYLE rule 11). Built in CI with warnings as errors (tests/packaging/test_docs.py):
``.venv/bin/python -m sphinx -W --keep-going -b html docs docs/_build/html``."""

import pathlib
import sys
from importlib import metadata

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

project = "salt-mailha"
author = "salt-mailha contributors"
copyright = "salt-mailha contributors, Apache-2.0"  # noqa: A001 - Sphinx's name
try:
    release = metadata.version("salt-mailha")
except metadata.PackageNotFoundError:  # building from a checkout that is not installed
    release = "unreleased"
version = release

extensions = ["sphinx.ext.autodoc", "sphinx.ext.napoleon", "sphinx.ext.viewcode"]
autodoc_default_options = {"members": True, "undoc-members": False, "show-inheritance": False}
autodoc_member_order = "bysource"
# Loader dunders (__salt__, __opts__ ...) exist only inside Salt; the modules import fine without.
exclude_patterns = ["_build"]
html_theme = "alabaster"
nitpicky = False
