"""The ``syncd`` command and ``python -m syncd``."""

from __future__ import annotations


def trim_start_up() -> None:
    """What the command does before it imports anything: packages load without the
    optional parts syncd never uses (see :mod:`syncd._startup`), and dataclasses take
    their methods compiled (see :mod:`syncd._dataclass_cache`)."""
    from syncd._dataclass_cache import cache_dataclass_methods
    from syncd._startup import load_on_use, load_without

    cache_dataclass_methods()
    # Only the command, which owns its process, trims what packages import for nothing.
    load_without("httpx", "httpx._main")
    load_without("structlog", "rich")
    # httpcore loads trio and anyio, where installed, for its async backends and locks;
    # syncd's calls are synchronous. trio's import alone runs ldconfig (ctypes'
    # find_library): a tenth of a second of a one-off reconcile.
    load_without("httpcore", "trio")
    load_without("httpcore", "anyio")
    load_on_use("asyncio")
    # structlog imports uuid (and with it platform) for its deprecated thread-local
    # module; httpcore imports certifi (and with it importlib.resources) for the CA
    # bundle, which only an https endpoint reads.
    load_on_use("uuid")
    load_on_use("certifi")


def leave(code: int) -> None:
    """End the command's process now, as the interpreter's own exit would but without
    taking down every module and object it loaded: that teardown is about 0.01 s of a
    one-off run (a 1 KB reconcile: 0.34 s with it, 0.33 s without), spent on memory the
    system frees anyway.

    What the normal exit does that matters happens first: the exit handlers run
    (logging closes its files, finalizers remove temporary files), then stdout and
    stderr are flushed. It returns, leaving the normal exit to run, while a thread that
    is not a daemon runs (the normal exit waits for it), or when a flush fails (the
    normal exit reports that as it always has)."""
    import atexit
    import os
    import sys
    import threading

    if any(t.is_alive() and not t.daemon for t in threading.enumerate()
           if t is not threading.current_thread()):  # fmt: skip
        return
    if threading.current_thread() is not threading.main_thread():
        return
    atexit._run_exitfuncs()  # what the interpreter's exit runs; atexit has no public name for it
    try:
        for stream in (sys.stdout, sys.stderr):
            if stream is not None:
                stream.flush()
    except (OSError, ValueError):
        return
    os._exit(code)


def main() -> int:
    import gc

    # What loading the command creates lives until exit: the collector, which would
    # walk it some 30 times while it loads (0.01 s), waits, and then leaves it out of
    # every later walk.
    gc.disable()
    trim_start_up()
    from syncd.cli import main as cli

    gc.freeze()
    gc.enable()
    code = cli()
    leave(code)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
