"""The Salt-version matrix from README's test command: every supported Salt line other than the
one this run is on (which the rest of the suite covers) runs the unit and functional tiers and a
real master/minion remediation test in its own venv (tests/compat/matrix.py; ``python -m
tests.compat.matrix <line>`` runs the same by hand).

This directory sorts before tests/functional and tests/integration on purpose: the inner
remediation test binds the fixed loopback ports of the remediation site, which the outer
run's session-scoped remediation fixtures would still hold if they ran first."""

import os

import pytest

from tests.compat import matrix
from tests.support import saltvenv

OTHER_LINES = [line for line in saltvenv.LINES if line != saltvenv.running_line()]
# README's test command (CI) runs the LTS line beside its own: with both other lines the suite
# measured 41 of CI's 45 minutes. MAILHA_MATRIX_LINES=3006,3007 (or `python -m
# tests.compat.matrix 3007`) runs the others.
RUN_LINES = [line for line in os.environ.get("MAILHA_MATRIX_LINES", "3006").split(",") if line in OTHER_LINES]

pytestmark = pytest.mark.integration


def test_matrix_covers_every_supported_line():
    assert saltvenv.running_line() in saltvenv.LINES, "CI must run on a supported Salt line"
    assert len(OTHER_LINES) == len(saltvenv.LINES) - 1
    for line in saltvenv.LINES:  # one exact release per line, of that line
        assert saltvenv.salt_version(line).startswith(f"{line}.")


@pytest.mark.timeout(2400)
@pytest.mark.parametrize("line", RUN_LINES, ids=[f"salt-{line}" for line in RUN_LINES])
def test_tiers_pass_on_salt_line(line):
    result = matrix.run_line(line)
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
