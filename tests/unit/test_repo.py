"""Promises the repository makes to a new user: README opens with the two commands, and CI runs
exactly README's test command after the project's own setup script."""

import pathlib
import re

REPO = pathlib.Path(__file__).resolve().parents[2]


def readme_commands():
    text = (REPO / "README.md").read_text()
    block = re.search(r"```bash\n(.*?)```", text, re.S).group(1)
    return [line for line in block.splitlines() if line.strip()]


def test_readme_opens_with_setup_and_test_commands():
    setup, test = readme_commands()[:2]
    assert setup.startswith("scripts/setup-host.sh && ")
    assert "mailha-lab up" in setup
    assert "pytest" in test


def test_ci_runs_setup_then_readmes_test_command():
    lines = [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines()
             if line.strip() and not line.lstrip().startswith("#")]
    test = readme_commands()[1]
    assert "scripts/setup-host.sh" in lines
    assert lines[-1] == test or lines[-1].startswith(test), f"CI's last command {lines[-1]!r} is not README's {test!r}"
    assert lines.index("scripts/setup-host.sh") < len(lines) - 1
