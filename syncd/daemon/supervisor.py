"""The supervisor: the main thread of ``syncd run``.

It handles signals, reloads the configuration, and talks to systemd (READY,
STATUS, WATCHDOG, STOPPING). It never calls the engine, so a slow upload can
never delay a watchdog ping or a shutdown request; the engine is the worker's
(:mod:`syncd.daemon.worker`). Around them, watchdog's threads run
:class:`~syncd.daemon.watch.QueueingHandler`, which only enqueues, and
APScheduler's thread only raises the rescan flag.

Shutdown waits for the worker's one in-flight call, up to
``daemon.shutdown_timeout_s`` -- unless the remote is unreachable: that call is a
retry loop that cannot succeed, and the next start's catch-up redoes it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import structlog

from syncd.config import Config
from syncd.daemon.notify import Notifier
from syncd.daemon.protocols import SyncerLike
from syncd.daemon.reach import reachable
from syncd.daemon.reload import needs_restart
from syncd.daemon.schedule import ReconcileScheduler, build_trigger, describe
from syncd.daemon.settle import Probe, SettleQueue
from syncd.daemon.watch import OverflowMonitor, Watcher
from syncd.daemon.worker import BATCH_SIZE, TICK_S, WatcherFactory, Worker, default_watcher
from syncd.exitcodes import ExitCode

log = structlog.get_logger("syncd.daemon")

EXIT_OK = ExitCode.OK
EXIT_FAILED = ExitCode.UNSYNCED
# A configuration error or an API key the provider refuses: restarting will not
# help, so the unit lists this in RestartPreventExitStatus=.
EXIT_REFUSED = ExitCode.USAGE
# Another syncd holds the state_dir (a one-off reconcile, say): worth a restart later.
EXIT_LOCKED = ExitCode.LOCKED

STATUS_INTERVAL_S = 5.0
# A call running this long may be a retry loop against a remote that is down: probe it
# (a TCP connect) at most every PROBE_EVERY_S, so STATUS can say so before the call ends.
PROBE_AFTER_S = 3.0
PROBE_EVERY_S = 5.0
PROBE_TIMEOUT_S = 1.0
# On a stop while the remote is down, how long to give the call in progress.
UNREACHABLE_GRACE_S = 0.5


class Daemon:
    def __init__(
        self,
        config_path: Path,
        config: Config,
        syncer: SyncerLike,
        *,
        notifier: Notifier | None = None,
        load_config: Callable[[Path], Config] | None = None,
        watcher_factory: WatcherFactory = default_watcher,
        probe: Probe | None = None,
        batch_size: int = BATCH_SIZE,
        status_interval_s: float = STATUS_INTERVAL_S,
    ) -> None:
        self.config_path = config_path
        self.config = config
        self.syncer = syncer
        self.notifier = notifier or Notifier(None)
        self._load_config = load_config or _default_load_config
        self._status_interval_s = status_interval_s
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._reload = threading.Event()
        self._stop_reason = ""
        self.worker = Worker(
            config,
            syncer,
            stop=self._stop,
            wake=self._wake.set,
            watcher_factory=watcher_factory,
            probe=probe,
            batch_size=batch_size,
        )
        self._overflow = OverflowMonitor(self._on_overflow)
        self._scheduler = ReconcileScheduler(lambda: self.queue.request_rescan("scheduled"))

    @property
    def queue(self) -> SettleQueue:
        return self.worker.queue

    @property
    def watcher(self) -> Watcher:
        return self.worker.watcher

    @property
    def ready(self) -> threading.Event:
        return self.worker.ready

    # ------------------------------------------------------------ control

    def request_stop(self, reason: str = "stop requested") -> None:
        """Safe from signal handlers and other threads."""
        if not self._stop_reason:
            self._stop_reason = reason
        self._stop.set()
        self._wake.set()
        self.queue.wake()

    def request_reload(self) -> None:
        self._reload.set()
        self._wake.set()

    # ------------------------------------------------------------ main thread

    def run(self) -> int:
        """Run until a stop is requested; returns the process exit code."""
        self._overflow.install()
        self.worker.start()
        self.notifier.status("starting: watching and catching up")
        self.notifier.extend_timeout(30.0)
        watchdog_every = self.notifier.watchdog_interval_s
        next_status = 0.0
        next_ping = 0.0
        next_probe = 0.0
        announced = False
        try:
            while not self._stop.is_set():
                tick = TICK_S if watchdog_every is None else min(TICK_S, watchdog_every)
                self._wake.wait(tick)
                self._wake.clear()
                if self._stop.is_set():
                    break
                if self._reload.is_set():
                    self._reload.clear()
                    self.reload()
                if not self.worker.is_alive():
                    if self.worker.refused is not None:
                        self.request_stop("the API key was refused")
                        self.notifier.status(f"failed: {self.worker.refused}")
                        return self._shutdown(EXIT_REFUSED)
                    log.error("the worker stopped unexpectedly", error=repr(self.worker.error))
                    self.notifier.status("failed: worker stopped")
                    return self._shutdown(EXIT_FAILED)
                now = time.monotonic()
                if now >= next_probe and self.worker.call_outlasted(PROBE_AFTER_S):
                    next_probe = now + PROBE_EVERY_S
                    self._probe_remote()
                if not announced and self.worker.ready.is_set():
                    announced = True
                    self._scheduler.start(self.config.reconcile)
                    self.notifier.ready(self.status_text())
                    log.info("ready", status=self.status_text())
                    next_status = now + self._status_interval_s
                elif not announced:
                    # The catch-up of a large folder can outlast TimeoutStartSec; it is
                    # making progress (or bounded by HTTP timeouts), so ask for more.
                    self.notifier.extend_timeout(max(30.0, 3 * tick))
                if now >= next_status:
                    self.notifier.status(self.status_text())
                    next_status = now + self._status_interval_s
                if watchdog_every is not None and now >= next_ping:
                    self.notifier.watchdog()
                    next_ping = now + watchdog_every
            return self._shutdown(EXIT_OK)
        except BaseException:
            self.request_stop("internal error")
            self._shutdown(EXIT_FAILED)
            raise

    def status_text(self) -> str:
        stats = self.worker.stats
        synced = stats.get("synced", 0)
        failed = sum(stats.get(k, 0) for k in ("error", "invalid", "quota"))
        watching = self.watcher.kind or "not yet"
        parts = [
            self.worker.reach.describe() or self.worker.phase,
            f"queue {len(self.queue)}",
            f"synced {synced}",
        ]
        if failed:
            parts.append(f"failed {failed}")
        parts.append(f"watching: {watching}")
        return "; ".join(parts)

    def reload(self) -> bool:
        """Re-read the configuration; an invalid one is logged and the old one kept."""
        try:
            new = self._load_config(self.config_path)
            build_trigger(new.reconcile)
        except Exception as exc:  # ConfigError, ScheduleError and anything unexpected alike
            log.error("reload failed; keeping the running configuration", error=str(exc))
            return False
        old = self.config
        restart = needs_restart(old, new)
        if restart:
            log.warning("some changes take effect only after a restart", sections=restart)
        self.queue.reconfigure(
            settle_s=new.sync.settle_s,
            max_settle_s=new.sync.max_settle_s,
            max_pending=new.daemon.max_pending,
        )
        if new.reconcile != old.reconcile:
            # Re-adding an unchanged job would restart its interval from now.
            self._scheduler.apply(new.reconcile)
        if new.logging != old.logging:
            from syncd import logs

            logs.configure(new.logging.format, new.logging.level)
        self.config = new
        self.worker.config = new
        if new.watch != old.watch:
            self.worker.rewatch()
        log.info("configuration reloaded", reconcile=describe(new.reconcile))
        self.notifier.status(self.status_text())
        return True

    def _shutdown(self, code: int) -> int:
        timeout = self.config.daemon.shutdown_timeout_s
        self.worker.phase = "stopping"
        self.notifier.stopping(f"stopping: {self._stop_reason or 'exiting'}")
        self.notifier.extend_timeout(timeout + 15.0)
        log.info("stopping", reason=self._stop_reason, timeout_s=timeout)
        self._stop.set()
        self.queue.wake()
        self._scheduler.shutdown()
        self.watcher.stop()
        worker = self.worker
        grace = timeout
        if worker.is_alive() and worker.call_outlasted(0.0):
            self._probe_remote()
            if worker.reach.down:
                grace = min(timeout, UNREACHABLE_GRACE_S)
        worker.join(grace)
        if worker.is_alive():
            self._overflow.uninstall()
            if grace < timeout:
                # Safe to leave: every outcome is committed to the state as it happens,
                # like after a crash, and the mapping was published after the last call.
                log.warning(
                    "the remote is unreachable; not waiting for the call retrying it, the "
                    "next start's catch-up reconcile will redo it",
                    base_url=self.syncer.base_url,
                )
                log.info("stopped", exit_code=code)
                return code
            log.error(
                "in-flight work did not finish in time; exiting without it, the next "
                "start's catch-up reconcile will redo it",
                timeout_s=timeout,
            )
            return EXIT_FAILED
        self.watcher.stop()
        self._overflow.uninstall()
        try:
            self.syncer.publish_mapping()
        except Exception:
            log.exception("could not publish the mapping on shutdown")
            code = EXIT_FAILED
        finally:
            try:
                self.syncer.close()
            except Exception:
                log.exception("could not close the engine cleanly")
                code = EXIT_FAILED
        log.info("stopped", exit_code=code)
        return code

    def _probe_remote(self) -> None:
        """Main thread: only a failed connect is news (calls that complete clear it)."""
        if not self.worker.reach.down and not reachable(self.syncer.base_url, PROBE_TIMEOUT_S):
            self.worker.reach.failed()
            log.error(
                "the remote is unreachable; retrying with backoff",
                base_url=self.syncer.base_url,
            )
            self.notifier.status(self.status_text())

    def _on_overflow(self, message: str) -> None:
        log.warning("filesystem events were lost; scheduling a rescan", detail=message)
        self.queue.request_rescan("inotify queue overflowed")


def _default_load_config(path: Path) -> Config:
    from syncd.config import load_config

    return load_config(path)
