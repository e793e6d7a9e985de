"""``mailha_site.boot_enabled`` decides from ``systemctl is-enabled`` and re-checks after enabling.
The systemctl here is a recorded stand-in: this host has no systemd; the real run is the lab's
(tests/integration/lab: services come back after a node is killed and booted again)."""
import pytest

from salt_mailha.states import mailha_site


class Systemctl:
    """Answers ``is-enabled`` from ``state``; ``enable`` flips it unless ``broken``."""

    def __init__(self, state, broken=False):
        self.state, self.broken, self.calls = state, broken, []

    def __call__(self, argv, python_shell, ignore_retcode):
        assert python_shell is False
        self.calls.append(argv[1:])
        if argv[1] == "is-enabled":
            return {"retcode": 0 if self.state == "enabled" else 1, "stdout": self.state, "stderr": ""}
        if not self.broken:
            self.state = "enabled"
        return {"retcode": 0, "stdout": "", "stderr": ""}


@pytest.fixture
def state(monkeypatch):
    def make(answer, test=False, broken=False):
        ctl = Systemctl(answer, broken)
        monkeypatch.setattr(mailha_site, "__salt__", {"cmd.run_all": ctl}, raising=False)
        monkeypatch.setattr(mailha_site, "__opts__", {"test": test}, raising=False)
        return ctl
    return make


def test_disabled_service_is_enabled_and_rechecked(state):
    ctl = state("disabled")
    ret = mailha_site.boot_enabled("slapd")
    assert ret["result"] is True and ret["changes"] == {"slapd": {"old": "disabled", "new": "enabled"}}
    assert ctl.calls == [["is-enabled", "slapd"], ["enable", "slapd"], ["is-enabled", "slapd"]]


def test_runtime_only_enablement_is_made_permanent(state):
    """enabled-runtime lives in /run: gone at the next boot, so it is not "starts at boot"."""
    ctl = state("enabled-runtime")
    ret = mailha_site.boot_enabled("postfix")
    assert ret["result"] is True and ret["changes"] == {"postfix": {"old": "enabled-runtime", "new": "enabled"}}
    assert ["enable", "postfix"] in ctl.calls


def test_enabled_service_is_left_alone(state):
    ctl = state("enabled")
    ret = mailha_site.boot_enabled("mariadb")
    assert ret["result"] is True and ret["changes"] == {} and ctl.calls == [["is-enabled", "mariadb"]]


def test_test_mode_reports_and_changes_nothing(state):
    ctl = state("disabled", test=True)
    ret = mailha_site.boot_enabled("slapd")
    assert ret["result"] is None and "would enable slapd" in ret["comment"]
    assert ctl.calls == [["is-enabled", "slapd"]]


def test_enable_that_does_not_take_is_a_failure(state):
    state("disabled", broken=True)  # what Salt's update-rc.d defaults does to K links
    ret = mailha_site.boot_enabled("slapd")
    assert ret["result"] is False and ret["changes"] == {} and "did not enable" in ret["comment"]


def test_hostile_name_never_reaches_systemctl(state):
    ctl = state("disabled")
    ret = mailha_site.boot_enabled("slapd; rm -rf /")
    assert ret["result"] is False and ctl.calls == []
