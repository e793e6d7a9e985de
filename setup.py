"""Build step that pyproject.toml cannot declare: the wheel carries the formula (``states/``), the
reactor files (``reactor/``), the example configs (``examples/``) and the example pillar
(``pillar.example/``) under ``salt_mailha/_data/``, where ``salt_mailha.data.root()`` and the
``mailha`` fileserver backend find them. They stay at the top of the repository, where Salt
users and the tests expect them; an editable install reads them there."""

import pathlib
import shutil

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = pathlib.Path(__file__).resolve().parent
DATA = ("states", "reactor", "examples", "pillar.example")


class BuildWithData(build_py):
    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return  # an editable install reads the checkout (salt_mailha.data.root)
        target = pathlib.Path(self.build_lib) / "salt_mailha" / "_data"
        for name in DATA:
            src = HERE / name
            if not src.is_dir():
                raise SystemExit(f"setup.py: {src} is missing; build from a full checkout or sdist")
            dst = target / name
            if dst.exists():
                shutil.rmtree(dst)
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))


setup(cmdclass={"build_py": BuildWithData})
