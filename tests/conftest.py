"""Suite-wide hooks and fixtures."""
import hashlib
import logging
import pathlib
import sys
import tempfile

import pytest


def pytest_unconfigure(config):
    # Importing salt installs a deferred stderr handler that flushes its buffer at exit, into
    # pytest's capture stream, closed by then ("--- Logging error ---"). pytest's own log capture
    # already saw those records when they were emitted.
    try:
        from salt._logging import impl
    except ImportError:
        return
    handler = impl.get_temp_handler()
    if handler is not None:
        logging.root.removeHandler(handler)
        handler.sync_with_handlers(())  # drop the buffer: nothing left for atexit to flush


@pytest.fixture(scope="session")
def salt_factories_default_root_dir():
    """pytest-salt-factories' root, one per venv. Its default (the temp dir) is shared by every run
    on the host, and the daemon launch scripts it writes there once (``scripts/cli_salt_*.py``)
    pin the site-packages of the venv that wrote them first: a Salt-matrix line, or another
    checkout, then ran its daemons on that venv's Salt."""
    tag = hashlib.sha256(sys.prefix.encode()).hexdigest()[:8]
    root = pathlib.Path(tempfile.gettempdir()) / f"mailha-sf-{tag}"  # short: unix socket paths
    root.mkdir(exist_ok=True)
    return root
