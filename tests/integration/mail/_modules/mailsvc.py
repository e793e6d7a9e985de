"""Test-only Salt ``service`` provider for the mail tier's foreground Postfix and Dovecot.

There is no systemd here, and Debian's init scripts run one system-wide instance, so a test
node's minion config sets ``providers: {service: mailsvc}`` and
``mailha_test_mail_services: {<name>: {argv, pidfile, log, check}}``: ``start`` does what the
init script does (``check`` first, e.g. ``postfix check`` which creates the queue directories,
then the daemon in its own session), ``status`` reads the daemon's own pidfile. Only the
functions ``service.running`` calls are here.
"""
import os
import signal
import subprocess
import time


def __virtual__():
    return "service"


def _spec(name):
    services = __opts__.get("mailha_test_mail_services") or {}  # noqa: F821
    if name not in services:
        raise KeyError(f"service {name!r} is not one of this test node's services {sorted(services)}")
    return services[name]


def _pid(spec):
    try:
        pid = int(open(spec["pidfile"]).read().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    try:
        with open(f"/proc/{pid}/stat") as f:
            return pid if f.read().split(") ", 1)[1][0] != "Z" else None
    except (OSError, IndexError):
        return None


def available(name):
    return name in (__opts__.get("mailha_test_mail_services") or {})  # noqa: F821


def get_all():
    return sorted(__opts__.get("mailha_test_mail_services") or {})  # noqa: F821


def offline():
    return False


def enabled(name, **kwargs):
    return True


def status(name, sig=None, **kwargs):
    return _pid(_spec(name)) is not None


def start(name, **kwargs):
    spec = _spec(name)
    if spec.get("check"):
        subprocess.run(spec["check"], check=True, capture_output=True, timeout=60)
    with open(spec["log"], "ab") as log:
        subprocess.Popen(spec["argv"], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                         start_new_session=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if _pid(spec):
            return True
        time.sleep(0.05)
    return False


def stop(name, **kwargs):
    spec = _spec(name)
    pid = _pid(spec)
    if pid is None:
        return True
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if _pid(spec) is None:
            return True
        time.sleep(0.05)
    return False


def restart(name, **kwargs):
    return stop(name) and start(name)
