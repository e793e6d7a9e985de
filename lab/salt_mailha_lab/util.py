"""Shared plumbing of the lab: paths, progress lines with elapsed time, logged commands."""
import contextlib
import os
import pathlib
import subprocess
import sys
import threading
import time

from salt_mailha.core.errors import CommandFailed

CACHE_DIR = pathlib.Path(os.environ.get("MAILHA_LAB_CACHE", "/var/cache/salt-mailha/lab"))
RUN_DIR = pathlib.Path(os.environ.get("MAILHA_LAB_DIR", "/var/lib/salt-mailha/lab"))
HEARTBEAT = 30.0  # seconds between "still running" lines of a long step
PREFIX = "mhlab"  # every namespace, bridge and machine name the lab creates starts with this


class StepFailed(CommandFailed):
    """A step of the lab failed; carries the step name and the log to read."""

    def __init__(self, step, log, detail):
        self.step, self.log, self.detail = step, log, detail
        super().__init__(f"step '{step}' failed: {detail}\n  log: {log}")


class Progress:
    """Prints one line per step with the elapsed time since the command began, and keeps the log
    of each step under ``log_dir`` so a failure can say where to look."""

    def __init__(self, log_dir, out=None):
        self.t0 = time.monotonic()
        self.log_dir = pathlib.Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.out = out or sys.stdout
        self.current = None

    def elapsed(self):
        return time.monotonic() - self.t0

    def say(self, text):
        print(f"[{self.elapsed():7.1f}s] {text}", file=self.out, flush=True)

    def _heartbeat(self, name, started, done):
        """A line every ``HEARTBEAT`` seconds, so a long step never looks hung."""
        while not done.wait(HEARTBEAT):
            self.say(f"{name}: still running ({time.monotonic() - started:.0f}s)")

    @contextlib.contextmanager
    def step(self, name):
        slug = "-".join("".join(c if c.isalnum() else " " for c in name.lower()).split())
        log = self.log_dir / f"{slug}.log"
        prev, self.current = self.current, (name, log)
        started = time.monotonic()
        self.say(f"{name} ...")
        done = threading.Event()
        beat = threading.Thread(target=self._heartbeat, args=(name, started, done), daemon=True)
        beat.start()
        try:
            with open(log, "a") as fh:
                fh.write(f"\n=== {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} {name}\n")
            yield log
        except StepFailed:
            raise
        except Exception as exc:  # noqa: BLE001 - turned into a failure naming the step and log
            raise StepFailed(name, log, str(exc) or type(exc).__name__) from exc
        finally:
            done.set()
            self.current = prev
        self.say(f"{name}: done in {time.monotonic() - started:.1f}s")


def run(argv, log=None, check=True, timeout=900, env=None, input=None, capture=False, cwd=None):
    """Run ``argv`` (a list, never a shell). Output goes to ``log`` (appended) unless
    ``capture``; a non-zero exit raises :class:`CommandFailed` naming the command and log."""
    argv = [str(a) for a in argv]
    full_env = None if env is None else {**os.environ, **env}
    if capture:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=full_env,
                              input=input, check=False, cwd=cwd)
        if log:
            with open(log, "a") as fh:
                fh.write(f"$ {' '.join(argv)}\n{proc.stdout}{proc.stderr}")
    else:
        with open(log or os.devnull, "a") as fh:
            fh.write(f"$ {' '.join(argv)}\n")
            fh.flush()
            proc = subprocess.run(argv, stdout=fh, stderr=subprocess.STDOUT, timeout=timeout,
                                  env=full_env, input=input, text=True, check=False, cwd=cwd)
    if check and proc.returncode != 0:
        where = f"; see {log}" if log else ""
        tail = (proc.stderr or "").strip().splitlines()[-3:] if capture else []
        raise CommandFailed(f"{argv[0]} exited {proc.returncode} ({' '.join(argv[:6])}...)"
                            f"{where}{': ' + ' | '.join(tail) if tail else ''}")
    return proc


def pid_from_file(path):
    """The PID in ``path`` if that process is alive, else None."""
    try:
        pid = int(pathlib.Path(path).read_text())
    except (OSError, ValueError):
        return None
    return pid if pid_alive(pid) else None


def pid_alive(pid):
    try:
        os.kill(int(pid), 0)
    except (ProcessLookupError, ValueError, TypeError):
        return False
    except PermissionError:
        return True
    return True


def mounted(path):
    path = os.path.realpath(path)
    with open("/proc/self/mountinfo") as fh:
        return any(line.split()[4] == path for line in fh)
