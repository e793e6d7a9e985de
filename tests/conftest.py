"""Suite-wide hooks."""
import logging


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
