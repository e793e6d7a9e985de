"""The Salt-version matrix from README's test command: every supported Salt line other than the
one this run is on (which the rest of the suite covers) runs the unit and functional tiers and a
real master/minion remediation test in its own venv (tests/compat/matrix.py; ``python -m
tests.compat.matrix <line>`` runs the same by hand).

This directory sorts before tests/functional and tests/integration on purpose: the inner
remediation test binds the fixed loopback ports of the remediation site, which the outer
run's session-scoped remediation fixtures would still hold if they ran first."""

import concurrent.futures
import os

import pytest

from tests.compat import matrix
from tests.support import saltvenv

OTHER_LINES = [line for line in saltvenv.LINES if line != saltvenv.running_line()]
# README's test command (CI) runs every other line; MAILHA_MATRIX_LINES=3006 (or `python -m
# tests.compat.matrix 3007`) runs fewer.
RUN_LINES = [line for line in os.environ.get("MAILHA_MATRIX_LINES", ",".join(OTHER_LINES)).split(",")
             if line in OTHER_LINES]

pytestmark = pytest.mark.integration


def test_matrix_covers_every_supported_line():
    assert saltvenv.running_line() in saltvenv.LINES, "CI must run on a supported Salt line"
    assert len(OTHER_LINES) == len(saltvenv.LINES) - 1
    for line in saltvenv.LINES:  # one exact release per line, of that line
        assert saltvenv.salt_version(line).startswith(f"{line}.")


@pytest.fixture(scope="module")
def line_results():
    """Every line's run, all at once: each mostly waits on its own daemons and pip, so two lines
    side by side cost far less than two in a row. The venvs are built one after the other first
    (each installs this checkout editable, which writes into it)."""
    for line in RUN_LINES:
        matrix.venv_for(line)
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, len(RUN_LINES))) as pool:
        futures = {line: pool.submit(matrix.run_line, line) for line in RUN_LINES}
        concurrent.futures.wait(futures.values())
    return futures


@pytest.mark.timeout(2400)
@pytest.mark.parametrize("line", RUN_LINES, ids=[f"salt-{line}" for line in RUN_LINES])
def test_tiers_pass_on_salt_line(line, line_results):
    result = line_results[line].result()
    assert result.salt == saltvenv.salt_version(line)
    failing = {n: v for n, v in result.testcases.items() if v != "passed"}
    assert result.ok, f"{result.summary()}\nnot passed: {failing}\n{result.log.read_text()[-3000:]}"
    # the tiers really ran there: the beacon test through Salt's loader, the formula through
    # salt-call, and the remediation through real daemons of that line
    names = "\n".join(result.testcases)
    for needle in ("test_health_beacon", "test_formula",
                   "test_stopped_service_drains_and_withdraws_mx_then_restores"):
        assert needle in names, f"{needle} did not run on Salt {line}"
    assert result.passed >= 100, result.summary()
