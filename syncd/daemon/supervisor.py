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

import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog

from syncd import events
from syncd.config import Config
from syncd.daemon.control import ReconcileRequest
from syncd.daemon.endpoints import Endpoints
from syncd.daemon.live_status import Sources, live_status, status_line
from syncd.daemon.metrics import (
    Recorder,
    instrument,
)
from syncd.daemon.notify import Notifier
from syncd.daemon.phase import Phase
from syncd.daemon.protocols import SyncerLike
from syncd.daemon.reach import reachable
from syncd.daemon.reload import Verdict, judge
from syncd.daemon.schedule import ReconcileScheduler, describe
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
# Whether the remote is reachable at all is probed (a TCP connect) every PROBE_EVERY_S,
# so STATUS, `syncd status` and the metrics say so within seconds, even while idle or
# while a call sits in its retries.
PROBE_EVERY_S = 4.0
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
        self.started_at = time.time()
        self.recorder = Recorder()
        # The engine's requests are counted where they leave: the client's transport.
        instrument(syncer.client, self.recorder)
        self._endpoints = Endpoints()
        self.worker = Worker(
            config,
            syncer,
            stop=self._stop,
            wake=self._wake.set,
            watcher_factory=watcher_factory,
            probe=probe,
            batch_size=batch_size,
            recorder=self.recorder,
        )
        self._overflow = OverflowMonitor(self._on_overflow)
        self._scheduler = ReconcileScheduler(lambda: self.queue.request_rescan("scheduled"))
        # The last reload that could not be applied (invalid, or waiting for a restart),
        # shown in the status until a reload applies or the daemon restarts.
        self.reload_pending: Verdict | None = None
        self._sources = Sources(config_path, syncer, self.worker, self.recorder,
                                self._scheduler, self.started_at)  # fmt: skip

    @property
    def queue(self) -> SettleQueue:
        return self.worker.queue

    @property
    def watcher(self) -> Watcher:
        return self.worker.watcher

    @property
    def ready(self) -> threading.Event:
        return self.worker.ready

    @property
    def caught_up(self) -> threading.Event:
        return self.worker.caught_up

    # ------------------------------------------------------------ control

    def request_stop(self, reason: str = "stop requested") -> None:
        """Safe from signal handlers and other threads."""
        if not self._stop_reason:
            self._stop_reason = reason
        self._stop.set()
        self._wake.set()
        self.worker.nudge()

    def request_reconcile(self, reason: str = "requested") -> None:
        """A full reconcile as soon as the worker is free (SIGUSR1). Signal-safe."""
        self.queue.request_rescan(reason)
        self.worker.nudge()

    def submit(self, request: ReconcileRequest) -> None:
        """The control socket's reconcile: run by the worker, outcome in the request."""
        self.worker.submit(request)

    def status(self) -> dict[str, Any]:
        """The live status the control socket answers and the metrics export."""
        return live_status(self._sources, self.config, self.reload_pending)

    def request_reload(self) -> None:
        self._reload.set()
        self._wake.set()

    # ------------------------------------------------------------ main thread

    def run(self) -> int:
        """Run until a stop is requested; returns the process exit code."""
        self._overflow.install()
        self._endpoints.open(self, self.recorder, self.status, lambda: self.config)
        self.worker.start()
        self.notifier.status("starting: watching and catching up")
        self.notifier.extend_timeout(30.0)
        watchdog_every = self.notifier.watchdog_interval_s
        next_status = 0.0
        next_ping = 0.0
        next_probe = 0.0
        announced = caught_up = False
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
                if now >= next_probe:
                    next_probe = now + PROBE_EVERY_S
                    self._probe_remote()
                if not announced and self.worker.ready.is_set():
                    announced = True
                    self._scheduler.start(self.config.reconcile)
                    self.notifier.ready(self.status_text())
                    log.info("ready", status=self.status_text(),
                             mapping=str(self.config.mapping_file))  # fmt: skip
                    next_status = now + self._status_interval_s
                elif not announced:
                    # The catch-up of a large folder can outlast TimeoutStartSec; it is
                    # making progress (or bounded by HTTP timeouts), so ask for more.
                    self.notifier.extend_timeout(max(30.0, 3 * tick))
                if announced and not caught_up and self.worker.caught_up.is_set():
                    caught_up = True
                    log.info(events.CAUGHT_UP, status=self.status_text())
                    next_status = now  # systemd's line says so at once
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
        return status_line(self.worker, self.reload_pending)

    def reload(self) -> bool:
        """Re-read the configuration and apply it whole, or not at all (see
        :mod:`syncd.daemon.reload`). True when it applied (or changed nothing)."""
        from syncd import logs

        # A SIGHUP is also logrotate's "reopen your log file", whatever the file says.
        try:
            logs.reopen()
        except OSError as exc:
            print(f"syncd: cannot reopen the log file: {exc}", file=sys.stderr, flush=True)
        verdict = judge(self.config, self.config_path, self._load_config)
        if verdict.outcome == "invalid":
            log.error(verdict.message)
        elif verdict.outcome == "restart":
            log.warning(
                verdict.message,
                keys=list(verdict.restart),
                where=list(verdict.where),
                running_root=str(self.config.root),
            )
        if not verdict.applies:
            self.reload_pending = verdict
            self.notifier.status(self.status_text())
            return False
        assert verdict.config is not None
        new, old = verdict.config, self.config
        try:
            self._apply(old, new)
        except Exception as exc:
            # Checked beforehand, so not expected: put back what was applied.
            log.exception("configuration not reloaded: applying it failed", error=str(exc))
            try:
                self._apply(new, old)
            except Exception:
                log.exception("could not restore the running configuration")
            self.reload_pending = Verdict(
                "invalid", None, message=f"configuration not reloaded: {exc}", at=time.time()
            )
            self.notifier.status(self.status_text())
            return False
        self.config = new
        self.worker.reconfigure(new)
        self.reload_pending = None
        log.info(verdict.message, changed=list(verdict.changed), reconcile=describe(new.reconcile))
        self.notifier.status(self.status_text())
        return True

    def _apply(self, old: Config, new: Config) -> None:
        """The supervisor's part of a reload (the worker takes rules and watching
        between engine calls). Every key here is reloadable; the rest are equal."""
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

            logs.configure_from(new.logging)

    def _shutdown(self, code: int) -> int:
        timeout = self.config.daemon.shutdown_timeout_s
        self.worker.phase = Phase.STOPPING
        self.notifier.stopping(f"stopping: {self._stop_reason or 'exiting'}")
        self.notifier.extend_timeout(timeout + 15.0)
        log.info("stopping", reason=self._stop_reason, timeout_s=timeout)
        self._stop.set()
        # What the run in progress has not started, it leaves to the next start.
        self.syncer.stop_soon()
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
        self._endpoints.close()
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
        """Main thread: a failed connect marks the remote down; a connect that opens
        again after that clears it and asks for a reconcile, which retries what
        waited. Failed calls (a 5xx, say) are the worker's to clear, by a call that
        succeeds."""
        reach = self.worker.reach
        if reachable(self.syncer.base_url, PROBE_TIMEOUT_S):
            if reach.probed_down:
                reach.ok()
                log.info("the remote is reachable again", base_url=self.syncer.base_url)
                self.request_reconcile("the remote is reachable again")
                self.notifier.status(self.status_text())
            return
        if not reach.probed_down:
            reach.failed(probed=True)
            self.recorder.error(f"the remote is unreachable ({self.syncer.base_url})")
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
