"""``syncd run``: the long-running service.

Threads and who owns what:

* the main thread handles signals, reloads the configuration, and talks to
  systemd (STATUS, WATCHDOG). It never calls the engine, so a slow upload can
  never delay a watchdog ping or a shutdown request.
* watchdog's threads run :class:`QueueingHandler`, which only enqueues.
* APScheduler's thread only raises the rescan flag.
* one worker thread makes every engine call, one at a time: it starts watching,
  runs the catch-up reconcile, then drains settled paths into ``sync_paths``
  and runs rescans when asked. Shutdown therefore waits for exactly one
  in-flight call.

Watching starts before the catch-up scan, so a file written while the scan runs
is queued and synced right after it; the engine finds nothing to do for the
files the scan already handled.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Protocol

import structlog

from syncd.daemon.notify import Notifier
from syncd.daemon.reach import Reachability, reachable
from syncd.daemon.root_watch import RootReturn, tree_signature
from syncd.daemon.schedule import ReconcileScheduler, ScheduleError, build_trigger, describe
from syncd.daemon.settle import Kind, Probe, SettleQueue, stat_probe
from syncd.daemon.watch import OverflowMonitor, QueueingHandler, Watcher

if TYPE_CHECKING:
    from syncd.config import Config

log = structlog.get_logger("syncd.daemon")

EXIT_OK = 0
EXIT_FAILED = 1
# A configuration error or an API key the provider refuses: restarting will not
# help, so the unit lists this in RestartPreventExitStatus=.
EXIT_REFUSED = 2
# Another syncd holds the state_dir (a one-off reconcile, say): worth a restart later.
EXIT_LOCKED = 4

BATCH_SIZE = 128
STATUS_INTERVAL_S = 5.0
TICK_S = 1.0
MAX_BACKOFF_S = 60.0
# How long past the first due path the worker waits before taking a batch.
GATHER_S = 0.25
# A call running this long may be a retry loop against a remote that is down: probe it
# (a TCP connect) at most every PROBE_EVERY_S, so STATUS can say so before the call ends.
PROBE_AFTER_S = 3.0
PROBE_EVERY_S = 5.0
PROBE_TIMEOUT_S = 1.0
# On a stop while the remote is down, how long to give the call in progress: it is
# retrying something that cannot succeed, and the next start's catch-up redoes it.
UNREACHABLE_GRACE_S = 0.5


class Report(Protocol):
    @property
    def changed_during_upload(self) -> list[str]: ...

    @property
    def errors(self) -> list[str]: ...

    @property
    def exit_code(self) -> int: ...

    @property
    def root_unavailable(self) -> bool: ...

    @property
    def remote_unavailable(self) -> bool: ...

    @property
    def aborted(self) -> str | None:
        """Why the run stopped short; the engine aborts only when the key is refused."""
        ...


class SyncerLike(Protocol):
    """The part of ``syncd.engine.Syncer`` the daemon uses."""

    base_url: str

    def reconcile(self, dry_run: bool = False) -> Report: ...

    def sync_paths(self, paths: Iterable[str]) -> Report: ...

    def publish_mapping(self) -> None: ...

    def is_candidate(self, rel_path: str) -> bool: ...

    def stats(self) -> dict[str, int]: ...

    def close(self) -> None: ...


WatcherFactory = Callable[["Config", QueueingHandler], Watcher]


def default_watcher(config: Config, handler: QueueingHandler) -> Watcher:
    return Watcher(
        config.root,
        handler,
        mode=config.watch.mode,
        poll_interval_s=config.watch.poll_interval_s,
    )


# SIGHUP applies sync.settle_s/max_settle_s, watch, reconcile, daemon and logging
# live. These need a restart: the engine (client, rules, state) was built from them.
_RESTART_SECTIONS = ("project", "root", "state_dir", "mapping_file", "api", "limits", "rules")


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
        self._batch_size = batch_size
        self._status_interval_s = status_interval_s
        self._probe = probe or stat_probe(str(config.root))
        self.queue = SettleQueue(
            settle_s=config.sync.settle_s,
            max_settle_s=config.sync.max_settle_s,
            max_pending=config.daemon.max_pending,
        )
        self.handler = QueueingHandler(config.root, self.queue, syncer.is_candidate)
        self.watcher = watcher_factory(config, self.handler)
        self._watcher_factory = watcher_factory
        self._overflow = OverflowMonitor(self._on_overflow)
        self._scheduler = ReconcileScheduler(lambda: self.queue.request_rescan("scheduled"))

        self.ready = threading.Event()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._reload = threading.Event()
        self._rewatch = threading.Event()
        self._worker: threading.Thread | None = None
        self._worker_error: BaseException | None = None
        self._stop_reason = ""
        self._stats: dict[str, int] = {}
        self._phase = "starting"
        # Set by the worker when the provider refused the key: the run cannot go on.
        self.refused: str | None = None
        self.reach = Reachability()
        # When the worker's current engine call began (monotonic), None between calls.
        self._busy_since: float | None = None
        self.synced_batches = 0
        self.rescans = 0

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
        self._worker = threading.Thread(target=self._work, name="syncd-worker", daemon=True)
        self._worker.start()
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
                if not self._worker.is_alive():
                    if self.refused is not None:
                        self.request_stop("the API key was refused")
                        self.notifier.status(f"failed: {self.refused}")
                        return self._shutdown(EXIT_REFUSED)
                    log.error("the worker stopped unexpectedly", error=repr(self._worker_error))
                    self.notifier.status("failed: worker stopped")
                    return self._shutdown(EXIT_FAILED)
                now = time.monotonic()
                if now >= next_probe and self._call_outlasted(PROBE_AFTER_S):
                    next_probe = now + PROBE_EVERY_S
                    self._probe_remote()
                if not announced and self.ready.is_set():
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
        stats = self._stats
        synced = stats.get("synced", 0)
        failed = sum(stats.get(k, 0) for k in ("error", "invalid", "quota"))
        watching = self.watcher.kind or "not yet"
        parts = [
            self.reach.describe() or self._phase,
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
        needs_restart = [name for name in _RESTART_SECTIONS if _get(old, name) != _get(new, name)]
        old_sync = (old.sync.delete_remote, old.sync.max_delete, old.sync.marker)
        if old_sync != (new.sync.delete_remote, new.sync.max_delete, new.sync.marker):
            needs_restart.append("sync")
        if needs_restart:
            log.warning(
                "some changes take effect only after a restart",
                sections=needs_restart,
            )
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
        if new.watch != old.watch:
            self._rewatch.set()
            self.queue.wake()
        self.config = new
        log.info("configuration reloaded", reconcile=describe(new.reconcile))
        self.notifier.status(self.status_text())
        return True

    def _shutdown(self, code: int) -> int:
        timeout = self.config.daemon.shutdown_timeout_s
        self._phase = "stopping"
        self.notifier.stopping(f"stopping: {self._stop_reason or 'exiting'}")
        self.notifier.extend_timeout(timeout + 15.0)
        log.info("stopping", reason=self._stop_reason, timeout_s=timeout)
        self._stop.set()
        self.queue.wake()
        self._scheduler.shutdown()
        self.watcher.stop()
        worker = self._worker
        if worker is not None:
            grace = timeout
            if worker.is_alive() and self._call_outlasted(0.0):
                if not self.reach.down:
                    self._probe_remote()
                if self.reach.down:
                    grace = min(timeout, UNREACHABLE_GRACE_S)
            worker.join(grace)
            if worker.is_alive() and grace < timeout:
                # Safe to leave: every outcome is committed to the state as it happens,
                # like after a crash, and the mapping was published after the last call.
                log.warning(
                    "the remote is unreachable; not waiting for the call retrying it, the "
                    "next start's catch-up reconcile will redo it",
                    base_url=self.syncer.base_url,
                )
                self._overflow.uninstall()
                log.info("stopped", exit_code=code)
                return code
            if worker.is_alive():
                log.error(
                    "in-flight work did not finish in time; exiting without it, the next "
                    "start's catch-up reconcile will redo it",
                    timeout_s=timeout,
                )
                self._overflow.uninstall()
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

    def _call_outlasted(self, seconds: float) -> bool:
        began = self._busy_since
        return began is not None and time.monotonic() - began >= seconds

    def _probe_remote(self) -> None:
        """Main thread: only a failed connect is news (calls that complete clear it)."""
        if not self.reach.down and not reachable(self.syncer.base_url, PROBE_TIMEOUT_S):
            self.reach.failed()
            log.error(
                "the remote is unreachable; retrying with backoff",
                base_url=self.syncer.base_url,
            )
            self.notifier.status(self.status_text())

    # ------------------------------------------------------------ worker thread

    def _work(self) -> None:
        try:
            self._phase = "catching up"
            if not self._await_root(returning=False):
                return
            caught_up = self._run_reconcile("catch-up")
            if self.refused is not None:
                return  # never READY: the main thread exits with EXIT_REFUSED
            # Ready even if the catch-up failed (provider unreachable, say): watching
            # and queueing work, and the loop retries the reconcile with backoff.
            self._phase = "idle"
            self._announce_ready()
            if not caught_up:
                self.queue.request_rescan("catch-up retry")
            self._loop(backoff=0.0 if caught_up else 1.0)
        except BaseException as exc:
            self._worker_error = exc
            log.exception("worker failed")
        finally:
            self._wake.set()

    def _announce_ready(self) -> None:
        self.ready.set()
        self._wake.set()

    def _loop(self, backoff: float) -> None:
        last_sync = -1e9
        last_full = False
        while not self._stop.is_set() and self.refused is None:
            if backoff and self._stop.wait(backoff):
                return
            if self._rewatch.is_set():
                self._restart_watching()
                continue
            if not self.watcher.is_alive:
                # Watching stops on its own when the root goes away (or is replaced).
                if not self._await_root(returning=True):
                    return
                self.queue.request_rescan("the folder is back")
                continue
            reason = self.queue.take_rescan()
            if reason is not None:
                ok = self._run_reconcile(reason)
                backoff = 0.0 if ok else _next_backoff(backoff)
                if not ok:
                    self.queue.request_rescan(reason)
                continue
            dirs = self.queue.take_dirs()
            if dirs:
                self._expand(dirs)
                continue
            # Each sync_paths call rewrites the mapping file, so calls are spaced
            # publish_interval_s apart and what settles meanwhile rides along; a full
            # batch means a backlog, which goes out at once.
            gap = last_sync + self.config.daemon.publish_interval_s - time.monotonic()
            if gap > 0 and not last_full:
                self.queue.wait(min(gap, TICK_S))
                continue
            # A burst (rm -r, a copy, an unpacked archive) becomes due over a few
            # milliseconds; releasing only what is due at the first instant would split
            # it into batches, and each batch is judged alone by the deletion guard
            # (max_delete), so hold the first release briefly to take the burst whole.
            due = self.queue.next_due()
            hold = 0.0 if due is None or last_full else due + GATHER_S - time.monotonic()
            if hold > 0:
                self.queue.wait(min(hold, TICK_S))
                continue
            batch = self.queue.pop_ready(self._probe, limit=self._batch_size)
            if batch:
                ok = self._sync(batch)
                backoff = 0.0 if ok else _next_backoff(backoff)
                last_sync = time.monotonic()
                last_full = len(batch) >= self._batch_size
                continue
            self._phase = "idle"
            due = self.queue.next_due()
            wait = TICK_S if due is None else min(TICK_S, max(0.01, due - time.monotonic()))
            self.queue.wait(wait)

    def _await_root(self, *, returning: bool) -> bool:
        """Until the root is there and watched; False when a stop came first.

        At start a root that is there is used at once. A root that was missing, or
        whose watch stopped (it went away, or was replaced), must also settle (see
        :mod:`syncd.daemon.root_watch`): a reconcile of a half-restored folder would
        delete what the copy has not reached yet.
        """
        root = self.config.root
        gate = RootReturn(self.config.sync.settle_s, self.config.sync.max_settle_s)
        settle = returning
        missing = False
        back = False
        while not self._stop.is_set():
            if not settle:
                if root.is_dir():
                    if self._watch():
                        return True
                    continue
                settle = True
            signature = tree_signature(root, self.syncer.is_candidate)
            if signature is None:
                back = False
                if not missing:
                    missing = True
                    self.watcher.stop()
                    self._phase = f"waiting for root {root}"
                    log.error(
                        "the folder is unavailable; nothing will be synced or deleted until it "
                        "is back",
                        root=str(root),
                    )
                    # Up and doing its job, which for now is waiting.
                    self._announce_ready()
                gate.step(time.monotonic(), None, None)
                self._stop.wait(TICK_S)
                continue
            if not back:
                back, missing = True, False
                self._phase = f"root {root} is back; waiting for it to settle"
                log.info("the folder is there; waiting for it to settle", root=str(root))
            if not self.watcher.is_alive and not self._watch():
                continue
            wait = gate.step(time.monotonic(), signature, self.queue.last_event())
            if wait is None:
                log.info("the folder has settled", root=str(root))
                return True
            self._stop.wait(wait)
        return False

    def _watch(self) -> bool:
        """(Re)start watching; on failure say why and wait a little before the next try."""
        self.watcher.stop()
        try:
            self._start_watching()
        except OSError as exc:  # the root went away again, or the watch cannot be set
            log.error("cannot watch; retrying", root=str(self.config.root), error=str(exc))
            self._stop.wait(min(MAX_BACKOFF_S, 5.0))
            return False
        return True

    def _start_watching(self) -> None:
        kind = self.watcher.start()
        log.info("watching", root=str(self.config.root), mode=kind)

    def _restart_watching(self) -> None:
        """Apply a reloaded watch section."""
        self._rewatch.clear()
        self.watcher.stop()
        self.watcher = self._watcher_factory(self.config, self.handler)
        if self._watch():
            # Changes made while nothing was watching are only found by a scan.
            self.queue.request_rescan("watching restarted")

    def _call(self, fn: Callable[[], Report]) -> Report:
        self._busy_since = time.monotonic()
        try:
            return fn()
        finally:
            self._busy_since = None

    def _run_reconcile(self, reason: str) -> bool:
        self._phase = "reconciling" if reason != "catch-up" else "catching up"
        self.rescans += 1
        log.info("reconcile", reason=reason)
        try:
            report = self._call(self.syncer.reconcile)
        except Exception as exc:
            log.exception("reconcile failed", reason=reason, error=str(exc))
            return False
        outcome = getattr(report, "outcome", None)
        log.info(
            "reconciled",
            reason=reason,
            hashed=getattr(report, "hashed", None),
            uploaded=getattr(outcome, "uploaded", None),
            deleted=getattr(outcome, "deleted", None),
            duration_s=round(float(getattr(report, "duration_s", 0.0)), 3),
            exit_code=report.exit_code,
        )
        self._after(report, what=reason)
        if report.aborted is not None:
            return False
        # Nothing was planned without a listing: retry like a failed reconcile.
        if report.remote_unavailable:
            self.reach.failed()
            return False
        self._reachable()
        return True

    def _sync(self, batch: list[str]) -> bool:
        self._phase = "syncing"
        try:
            report = self._call(lambda: self.syncer.sync_paths(batch))
        except Exception as exc:
            log.exception("sync failed; will retry", paths=len(batch), error=str(exc))
            self.queue.requeue(batch)
            return False
        self._after(report, what="sync")
        if report.aborted is not None:
            return False
        if report.remote_unavailable:
            self.reach.failed()
        if report.remote_unavailable or (self.reach.down and report.errors):
            # Failed for want of a remote (the supervisor's probe may have found it down
            # while the call retried): keep the paths and retry with backoff.
            self.queue.requeue(batch)
            return False
        if not report.errors:
            self._reachable()
        self.synced_batches += 1
        return True

    def _reachable(self) -> None:
        if self.reach.down:
            log.info("the remote is reachable again", base_url=self.syncer.base_url)
        self.reach.ok()

    def _after(self, report: Report, *, what: str) -> None:
        if report.aborted is not None:
            self.refused = self._refused_message(report.aborted)
            log.error(self.refused)
            self._wake.set()
            return
        if report.root_unavailable:
            log.error("the folder is unavailable; nothing was deleted", root=str(self.config.root))
        for error in report.errors[:20]:
            log.warning("not synced", during=what, error=error)
        changed = report.changed_during_upload
        if changed:
            log.info("files changed while uploading; queued again", count=len(changed))
            self.queue.requeue(changed)
        try:
            self._stats = dict(self.syncer.stats())
        except Exception:
            log.debug("stats unavailable", exc_info=True)

    def _refused_message(self, error: str) -> str:
        api = self.config.api
        if api.api_key_file is not None:
            source = f"the file {api.api_key_file} (api.api_key_file)"
        elif api.embedded and not os.environ.get(api.api_key_env or ""):
            source = "the embedded emulator's built-in key"
        else:
            source = f"${api.api_key_env} (api.api_key_env)"
        return (
            f"the provider refused the API key from {source}: {error}; "
            "fix the key, then start syncd again"
        )

    def _expand(self, dirs: list[str]) -> None:
        """Queue the files of folders that appeared (created, or moved in from outside)."""
        root = self.config.root
        is_candidate = self.syncer.is_candidate
        for rel_dir in dirs:
            for dirpath, dirnames, filenames in os.walk(root / rel_dir):
                if self._stop.is_set():
                    return
                dirnames[:] = [d for d in dirnames if not os.path.islink(os.path.join(dirpath, d))]
                rel_base = os.path.relpath(dirpath, root).replace(os.sep, "/")
                for name in filenames:
                    rel = f"{rel_base}/{name}"
                    if is_candidate(rel):
                        self.queue.touch(rel, Kind.CREATED)

    def _on_overflow(self, message: str) -> None:
        log.warning("filesystem events were lost; scheduling a rescan", detail=message)
        self.queue.request_rescan("inotify queue overflowed")


def _next_backoff(current: float) -> float:
    return min(MAX_BACKOFF_S, max(1.0, current * 2))


def _get(config: Config, name: str) -> object:
    return getattr(config, name)


def _default_load_config(path: Path) -> Config:
    from syncd.config import load_config

    return load_config(path)


@contextlib.contextmanager
def _signals(daemon: Daemon) -> Iterator[None]:
    def on_stop(signum: int, _frame: FrameType | None) -> None:
        daemon.request_stop(signal.Signals(signum).name)

    def on_hup(_signum: int, _frame: FrameType | None) -> None:
        daemon.request_reload()

    previous = {
        sig: signal.signal(sig, handler)
        for sig, handler in (
            (signal.SIGTERM, on_stop),
            (signal.SIGINT, on_stop),
            (signal.SIGHUP, on_hup),
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
    except (ConfigError, ScheduleError) as exc:
        print(f"syncd: config error: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    logs.configure(config.logging.format, config.logging.level)

    from syncd.engine.state import LockHeld
    from syncd.engine.sync import open_syncer

    try:
        syncer = open_syncer(config)
    except LockHeld as exc:
        print(f"syncd: refusing to start: {exc}", file=sys.stderr)
        return EXIT_LOCKED
    except ValueError as exc:  # the API key could not be loaded
        print(f"syncd: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    daemon = Daemon(config_path, config, syncer, notifier=Notifier.from_env())
    with _signals(daemon):
        return daemon.run()
