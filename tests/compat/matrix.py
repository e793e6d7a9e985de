"""The Salt-version matrix: the unit and functional tiers and one real master/minion remediation
test, run inside a venv holding one Salt line (``constraints/salt-<line>.txt``) with this checkout
installed editable, so the code under test is the working tree's.

One command per line (CONTRIBUTING.md)::

    .venv/bin/python -m tests.compat.matrix 3006
    .venv/bin/python -m tests.compat.matrix 3007
    .venv/bin/python -m tests.compat.matrix 3008
    .venv/bin/python -m tests.compat.matrix 3006 3007 3008     # all, one after the other

README's test command runs it too (tests/compat/test_salt_lines.py), for every line other than
the one that command itself runs on (the CI venv's, which runs the whole suite).

The remediation test starts a real salt-master and four salt-minions of that Salt line, a real
named, and stops a mail service: the beacons (real loader, real minion), the reactor and the
runner drain the node and withdraw its MX, then restore both.
"""

import argparse
import dataclasses
import pathlib
import sys
import time
import xml.etree.ElementTree as ET

from tests.support import saltvenv
from tests.support.named import free_port

REPO = saltvenv.REPO
TIERS = ("tests/unit", "tests/functional")
REMEDIATION = ("tests/integration/remediation/test_remediation_flow.py::"
               "test_stopped_service_drains_and_withdraws_mx_then_restores")
# Left to the main run (once, on the CI venv's Salt): a stress test of OpenSSL locks across
# fork() (60 forked probes while threads hammer TLS), the same on every Salt line, and a few
# minutes of the matrix's time on a loaded host.
# The no-secret search of a whole site (a master and five minions, ~2 min) runs there too: two
# lines side by side on 2 cores starved it (a 10-minute setup); the remediation flow keeps real
# daemons of each line in the matrix.
DESELECT = ("tests/functional/test_health_probe_fork.py::test_forked_jobs_never_hang_on_tls",
            "tests/functional/test_no_secret_anywhere.py::test_no_secret_nor_derived_form_in_any_output",
            "tests/functional/test_no_secret_anywhere.py::test_the_search_finds_a_canary_in_every_channel")


@dataclasses.dataclass
class LineResult:
    line: str
    salt: str
    returncode: int
    passed: int
    failed: int
    errors: int
    skipped: int
    seconds: float
    log: pathlib.Path
    testcases: dict  # "file::name" -> "passed" | "failed" | "error" | "skipped"

    @property
    def ok(self):
        return self.returncode == 0 and not (self.failed or self.errors or self.skipped)

    def summary(self):
        return (f"Salt {self.line} ({self.salt}): {self.passed} passed, {self.failed} failed, "
                f"{self.errors} errors, {self.skipped} skipped in {self.seconds:.0f} s "
                f"(log {self.log})")


def venv_for(line):
    """The cached venv of ``line``: that Salt, the test tools, this checkout editable (and its
    lab, its own distribution: tests/unit covers the lab's pure parts)."""
    return saltvenv.cached(f"matrix-{line}", line, "-e", f"{REPO}[tests]", "-e", f"{REPO}/lab")


def _junit(path):
    cases = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        name = f"{case.get('classname', '')}::{case.get('name')}"
        kinds = {child.tag for child in case}
        cases[name] = ("failed" if "failure" in kinds else "error" if "error" in kinds
                       else "skipped" if "skipped" in kinds else "passed")
    return cases


def run_line(line, extra=(), timeout=1800):
    """Build (or reuse) the venv of ``line`` and run the tiers in it; a LineResult."""
    started = time.monotonic()
    venv = venv_for(line)
    want = saltvenv.salt_version(line)
    got = saltvenv.installed_version(venv, "salt")
    if got != want:
        raise RuntimeError(f"the Salt {line} venv {venv} holds salt {got}, not {want}: "
                           f"delete it and run again")
    out = saltvenv.cache_dir() / f"matrix-{line}"
    out.mkdir(exist_ok=True)
    junit, log = out / "junit.xml", out / "pytest.log"
    junit.unlink(missing_ok=True)
    # its own basetemp: pytest prunes all but the last few runs' dirs under /tmp/pytest-of-<user>
    argv = [saltvenv.python(venv), "-m", "pytest", "-p", "no:cacheprovider", "-q",
            f"--basetemp={out / 'tmp'}", f"--junitxml={junit}", *TIERS, REMEDIATION,
            *(f"--deselect={d}" for d in DESELECT), *extra]
    # ports of its own for the remediation site's stand-in services (cluster.py): another run
    # on this host may hold the default ones
    imap = free_port("127.0.0.17")
    smtp = next(p for p in iter(lambda: free_port("127.0.0.17"), None) if p != imap)
    ports = {"MAILHA_REMTEST_IMAP_PORT": str(imap), "MAILHA_REMTEST_SMTP_PORT": str(smtp)}
    proc = saltvenv.run(argv, timeout=timeout, venv=venv, cwd=REPO, check=False, env=ports)
    log.write_text(proc.stdout + proc.stderr)
    cases = _junit(junit) if junit.exists() else {}
    counts = {k: sum(1 for v in cases.values() if v == k)
              for k in ("passed", "failed", "error", "skipped")}
    return LineResult(line, got, proc.returncode, counts["passed"], counts["failed"],
                      counts["error"], counts["skipped"], time.monotonic() - started, log, cases)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m tests.compat.matrix", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("lines", nargs="+", choices=saltvenv.LINES, metavar="LINE",
                        help=f"Salt line(s): {', '.join(saltvenv.LINES)}")
    args = parser.parse_args(argv)
    ok = True
    for line in args.lines:
        print(f"Salt {line}: preparing the venv and running the tiers ...", flush=True)
        result = run_line(line)
        print(result.summary(), flush=True)
        for name, verdict in sorted(result.testcases.items()):
            if verdict != "passed":
                print(f"  {verdict}: {name}")
        if not result.ok:
            print(result.log.read_text()[-4000:])
        ok &= result.ok
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
