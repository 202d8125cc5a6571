"""``syncd run``: the long-running service; this module is its entry point.

Where each job lives:

* :mod:`syncd.daemon.supervisor` -- the main thread: signals, sd_notify (READY,
  STATUS, WATCHDOG), SIGHUP reloads, shutdown.
* :mod:`syncd.daemon.worker` -- the one thread that calls the engine: catch-up,
  batches of settled paths, rescans, backoff, waiting for a missing root.
* :mod:`syncd.daemon.root_watch` -- the pure decision of when a returning root may
  be reconciled.
* :mod:`syncd.daemon.reach` -- whether the remote answers at all.
* :mod:`syncd.daemon.reload` -- what a SIGHUP may change: a reload is applied
  whole or not at all, and one that changes a key only a restart applies changes nothing.
* :mod:`syncd.daemon.settle`, :mod:`~syncd.daemon.watch`,
  :mod:`~syncd.daemon.schedule`, :mod:`~syncd.daemon.notify` -- the event queue,
  filesystem watching, the reconcile schedule and the systemd protocol.
"""

from __future__ import annotations

import contextlib
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

from syncd.daemon.notify import Notifier
from syncd.daemon.schedule import ScheduleError, build_trigger
from syncd.daemon.supervisor import EXIT_FAILED, EXIT_LOCKED, EXIT_OK, EXIT_REFUSED, Daemon

__all__ = ["EXIT_FAILED", "EXIT_LOCKED", "EXIT_OK", "EXIT_REFUSED", "Daemon", "run"]


@contextlib.contextmanager
def _signals(daemon: Daemon) -> Iterator[None]:
    def on_stop(signum: int, _frame: FrameType | None) -> None:
        daemon.request_stop(signal.Signals(signum).name)

    def on_hup(_signum: int, _frame: FrameType | None) -> None:
        daemon.request_reload()

    def on_usr1(_signum: int, _frame: FrameType | None) -> None:
        daemon.request_reconcile("SIGUSR1")

    previous = {
        sig: signal.signal(sig, handler)
        for sig, handler in (
            (signal.SIGTERM, on_stop),
            (signal.SIGINT, on_stop),
            (signal.SIGHUP, on_hup),
            (signal.SIGUSR1, on_usr1),
        )
    }
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run(config_path: Path) -> int:
    """Entry point of ``syncd run -c FILE``; returns the exit code."""
    from syncd import logs
    from syncd.config import ConfigError, load_config

    try:
        config = load_config(config_path)
        build_trigger(config.reconcile)
    except (ConfigError, ScheduleError, ValueError) as exc:
        print(f"syncd: config error: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    logs.configure_from(config.logging)

    from syncd.bootstrap import open_syncer
    from syncd.engine.state import LockHeld

    try:
        syncer = open_syncer(config)
    except LockHeld as exc:
        print(f"syncd: refusing to start: {exc}", file=sys.stderr)
        return EXIT_LOCKED
    except ValueError as exc:  # the API key could not be loaded
        print(f"syncd: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    syncer.origin = "daemon"  # the journal's name for the runs it makes
    daemon = Daemon(config_path, config, syncer, notifier=Notifier.from_env())
    with _signals(daemon):
        return daemon.run()
