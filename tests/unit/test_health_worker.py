"""The probe worker's failure text reaches a job return: it is redacted first. The real worker
runs in the integration tests (tests/integration/remediation); here its process is replaced by
one that fails with the pillar's secret in its traceback."""
import subprocess

import pytest
from salt.exceptions import CommandExecutionError

from salt_mailha.core.model import load_site
from salt_mailha.modules import mailha_health
from tests.support.example import example_pillar


def test_worker_stderr_is_redacted(monkeypatch):
    pillar = example_pillar()
    secret = next(s.reveal() for s in load_site(pillar).secrets() if s.reveal().startswith("CHANGE-ME"))

    def crashed(argv, **kwargs):
        assert secret in kwargs["input"]  # the worker is handed the pillar on stdin, never in argv
        assert not any(secret in str(a) for a in argv)
        return subprocess.CompletedProcess(argv, 1, "", f"Traceback ...\nValueError: bad value {secret!r}\n")

    monkeypatch.setattr(mailha_health, "__pillar__", pillar, raising=False)
    monkeypatch.setattr(mailha_health, "__opts__", {"id": "lb1"}, raising=False)
    monkeypatch.setattr(mailha_health.subprocess, "run", crashed)
    with pytest.raises(CommandExecutionError) as err:
        mailha_health._probe_isolated("mail1", 1.0, 1, 0)
    assert secret not in str(err.value) and "bad value '<redacted>'" in str(err.value)
