"""Virtual environments holding one Salt line, for the Salt-version matrix (tests/compat) and the
packaging tests (tests/packaging).

The Salt lines and their exact versions are the constraints files ``constraints/salt-<line>.txt``
(the newest release of each line that installs here; the CI/lab venv uses ``salt-3008.txt``).
Long-lived venvs (the matrix's) are kept under ``$MAILHA_TEST_CACHE`` (default
``~/.cache/salt-mailha-tests``) and rebuilt when their inputs change; throwaway ones (a fresh
venv for a wheel) live under the test's tmp_path. Packages come through pip as configured on the
host (its cache makes a rebuild take seconds, not minutes).
"""

import fcntl
import hashlib
import os
import pathlib
import re
import shutil
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[2]
CONSTRAINTS = REPO / "constraints"
LINES = ("3006", "3007", "3008")
# what a cached venv's contents depend on (dependencies, entry points, build step): rebuilt when
# one of these changes. Not setup.cfg: it holds the pytest config, which changes often.
PACKAGING_INPUTS = ("pyproject.toml", "setup.py", "lab/pyproject.toml")


def constraints(line):
    path = CONSTRAINTS / f"salt-{line}.txt"
    if not path.is_file():
        raise ValueError(f"unknown Salt line {line!r}: no {path} (lines: {', '.join(LINES)})")
    return path


def salt_version(line):
    """The exact Salt release of ``line``, from its constraints file."""
    m = re.search(r"^salt==(\S+)$", constraints(line).read_text(), re.M)
    if not m:
        raise ValueError(f"{constraints(line)} pins no salt==<version>")
    return m.group(1)


def running_line():
    """The Salt line of the interpreter running this code (the CI venv's)."""
    import salt.version

    return str(salt.version.__saltstack_version__.major)


def cache_dir():
    path = pathlib.Path(os.environ.get("MAILHA_TEST_CACHE") or
                        pathlib.Path.home() / ".cache" / "salt-mailha-tests")
    path.mkdir(parents=True, exist_ok=True)
    return path


def clean_env(venv=None):
    """The environment for a child that must see only ``venv`` (or no venv): none of this
    process's virtualenv or pytest variables leak into it."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "PYTEST_ADDOPTS",
                        "PYTEST_CURRENT_TEST", "PYTEST_XDIST_WORKER")
           and not k.startswith("SALT_")}
    path = [p for p in env.get("PATH", "/usr/bin:/bin").split(":")
            if not p.startswith(str(pathlib.Path(sys.prefix)))]
    if venv is not None:
        path.insert(0, str(pathlib.Path(venv) / "bin"))
        env["VIRTUAL_ENV"] = str(venv)
    env["PATH"] = ":".join(path)
    return env


def run(argv, timeout, venv=None, cwd=None, check=True, env=None):
    proc = subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=timeout,
                          env={**clean_env(venv), **(env or {})}, cwd=cwd)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, argv))} failed ({proc.returncode}):\n"
                           f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def base_python():
    """The system interpreter this test venv was made from (venvs are made from it, never from
    a venv's own python)."""
    return getattr(sys, "_base_executable", None) or shutil.which("python3")


def create(path, line=None, *requirements, constrained=True, timeout=900):
    """A new venv at ``path`` with ``requirements`` installed (under ``line``'s constraints
    unless ``constrained`` is False). Returns the venv path."""
    path = pathlib.Path(path)
    if path.exists():
        shutil.rmtree(path)
    run([base_python(), "-m", "venv", path], timeout=120)
    if requirements:
        argv = [path / "bin" / "python", "-m", "pip", "install", "-q", "--disable-pip-version-check"]
        if constrained and line is not None:
            argv += ["-c", constraints(line)]
        run(argv + list(requirements), timeout=timeout, venv=path)
    return path


def python(venv):
    return pathlib.Path(venv) / "bin" / "python"


def installed_version(venv, dist):
    proc = run([python(venv), "-c",
                f"from importlib.metadata import version; print(version({dist!r}))"],
               timeout=60, venv=venv, check=False)
    return proc.stdout.strip() if proc.returncode == 0 else None


def _stamp(line, requirements):
    h = hashlib.sha256()
    h.update(constraints(line).read_bytes())
    for name in PACKAGING_INPUTS:
        h.update((REPO / name).read_bytes())
    h.update("\0".join(map(str, requirements)).encode())
    h.update(sys.version.encode())
    return h.hexdigest()


def cached(name, line, *requirements, timeout=1200):
    """A venv kept in the cache dir under ``name``; (re)built when the constraints, the
    packaging files or ``requirements`` changed, or a previous build did not finish. Concurrent
    callers wait on a lock instead of building twice."""
    root = cache_dir()
    venv = root / name
    stamp_file = venv / ".mailha-stamp"
    stamp = _stamp(line, requirements)
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if stamp_file.is_file() and stamp_file.read_text() == stamp and python(venv).exists():
            return venv
        create(venv, line, *requirements, timeout=timeout)
        stamp_file.write_text(stamp)
    return venv


def build_wheel(dest, timeout=600, project=REPO, dist="salt_mailha"):
    """``pip wheel`` of this checkout (what an operator builds or downloads) or of another
    ``project`` in it (``REPO / "lab"``: the lab's own distribution); returns its path."""
    dest = pathlib.Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", dest, project]
    # one build at a time: setuptools builds in the checkout's build/, and the matrix runs its
    # Salt lines side by side ("File exists: build/bdist...")
    with open(cache_dir() / "build-wheel.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        proc = run(argv, timeout=timeout, check=False)
        if proc.returncode != 0 and "Wheel has unexpected file name" in proc.stderr:
            # setuptools-scm read the version twice (metadata, then wheel) and a commit landed in
            # between (several people commit to one working tree): the next build sees one version
            proc = run(argv, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"pip wheel {project} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    (wheel,) = dest.glob(f"{dist}-*.whl")
    return wheel
