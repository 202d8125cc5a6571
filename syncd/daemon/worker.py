"""The worker thread: the only thread that calls the engine, one call at a time.

It starts watching, runs the catch-up reconcile, then drains settled paths into
``sync_paths`` in batches and runs rescans when asked, backing off while calls
fail. When the root goes away it stops, waits for the root to come back and
settle (:mod:`syncd.daemon.root_watch`), and only then reconciles again. The
supervisor (main thread) reads its ``phase``, ``reach``, ``refused`` and queue
for STATUS, and ends it by setting the shared stop event.

Watching starts before the catch-up scan, so a file written while the scan runs
is queued and synced right after it; the engine finds nothing to do for the
files the scan already handled.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import structlog

from syncd import events
from syncd.config import Config, MaxDelete
from syncd.daemon.control import ReconcileRequest
from syncd.daemon.metrics import Recorder
from syncd.daemon.phase import Phase
from syncd.daemon.protocols import Report, SyncerLike
from syncd.daemon.reach import Reachability
from syncd.daemon.root_watch import RootReturn, tree_signature
from syncd.daemon.settle import Kind, Probe, SettleQueue, stat_probe
from syncd.daemon.watch import CanHold, QueueingHandler, Watcher, walk_candidates
from syncd.engine.progress import Progress

log = structlog.get_logger("syncd.daemon")

BATCH_SIZE = 128
TICK_S = 1.0
R = TypeVar("R")
MAX_BACKOFF_S = 60.0
# How long past the first due path the worker waits before taking a batch.
GATHER_S = 0.25
# Engine runs are spaced by this many times what the last mapping write cost, at least
# MIN_SPACING_S apart.
PUBLISH_COST_FACTOR = 10
MIN_SPACING_S = 0.05
# While batch jobs run, they are followed at least this often (seconds).
BATCH_FOLLOW_S = 5.0
# While files wait for account space (status ``quota``), how often the account is
# listed again (by a full reconcile) to see space freed by anyone else: another
# project or host on the key, a person, the provider expiring a file. The daemon's
# own deletes re-queue those files at once; only a listing sees the others. A
# minute keeps the wait far below the hourly scheduled reconcile, while one listing
# and one walk of the root a minute stay small next to the read limits (several per
# second) and to the work of a folder big enough to fill an account. Nothing is
# listed while no file waits.
QUOTA_RECHECK_S = 60.0
MAX_SPACE_RECHECK_S = 3600.0

WatcherFactory = Callable[[Config, QueueingHandler, CanHold], Watcher]


def default_watcher(config: Config, handler: QueueingHandler, can_hold: CanHold) -> Watcher:
    return Watcher(
        config.root,
        handler,
        mode=config.watch.mode,
        poll_interval_s=config.watch.poll_interval_s,
        can_hold=can_hold,
    )


class Worker:
    def __init__(
        self,
        config: Config,
        syncer: SyncerLike,
        *,
        stop: threading.Event,
        wake: Callable[[], None],
        watcher_factory: WatcherFactory = default_watcher,
        probe: Probe | None = None,
        batch_size: int = BATCH_SIZE,
        recorder: Recorder | None = None,
        quota_recheck_s: float = QUOTA_RECHECK_S,
    ) -> None:
        self.config = config
        self.syncer = syncer
        self._stop = stop
        # Tells the supervisor something it reports on changed.
        self._wake = wake
        self._watcher_factory = watcher_factory
        self._probe = probe or stat_probe(str(config.root))
        self._batch_size = batch_size
        self.queue = SettleQueue(
            settle_s=config.sync.settle_s,
            max_settle_s=config.sync.max_settle_s,
            max_pending=config.daemon.max_pending,
        )
        self.handler = QueueingHandler(config.root, self.queue, syncer.is_candidate)
        self.watcher = watcher_factory(config, self.handler, syncer.can_hold)
        # A reloaded configuration, applied by the worker thread between engine calls.
        self._reloaded: Config | None = None
        self._thread: threading.Thread | None = None
        # Reconciles asked for over the control socket, run between batches.
        self._requests: queue.SimpleQueue[ReconcileRequest] = queue.SimpleQueue()
        # Cuts a backoff short: a request came, or the remote is back.
        self._nudge = threading.Event()
        self.recorder = recorder or Recorder()

        self.ready = threading.Event()
        self.phase = Phase.STARTING
        # What the phase is about, when it names something (the root being waited for).
        self.phase_about: str | None = None
        self.stats: dict[str, int] = {}
        self.reach = Reachability()
        # Set when the provider refused the key: the run cannot go on.
        self.refused: str | None = None
        self.error: BaseException | None = None
        # When the current engine call began (monotonic), None between calls.
        self._busy_since: float | None = None
        self.synced_batches = 0
        self.rescans = 0
        self._quota_recheck_s = quota_recheck_s
        # When (monotonic) the account is looked at again for files waiting for space;
        # None while none wait. The interval doubles (up to an hour) while a listing
        # frees nothing: a file larger than the account's free space can wait for days.
        self._space_recheck_at: float | None = None
        self._space_every = quota_recheck_s
        self._space_waiting: int | None = None
        self._reload_lock = threading.Lock()
        # When (monotonic) the batch jobs are stepped again; 0: at the next idle moment.
        self._batches_at = 0.0

    # ------------------------------------------------------------ for the supervisor

    def start(self) -> None:
        self._thread = threading.Thread(target=self._work, name="syncd-worker", daemon=True)
        self._thread.start()

    def is_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def join(self, timeout: float) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def reconfigure(self, config: Config) -> None:
        """Take a reloaded configuration. The worker thread applies it between engine
        calls: new rules must not change under a plan being carried out."""
        with self._reload_lock:
            self._reloaded = config
        self.queue.wake()

    def submit(self, request: ReconcileRequest) -> None:
        """Queue a reconcile asked for from outside; its outcome arrives in ``request.result``."""
        self._requests.put(request)
        self.nudge()
        if not self.is_alive():
            self._fail_requests("the daemon is not running its worker")

    def nudge(self) -> None:
        self._nudge.set()
        self.queue.wake()

    @property
    def activity(self) -> str:
        """The phase in words, with what it is about (status's ``activity``)."""
        about = self.phase_about
        if self.phase is Phase.WAITING_FOR_ROOT and about:
            return f"waiting for root {about}"
        if self.phase is Phase.ROOT_SETTLING and about:
            return f"root {about} is back; waiting for it to settle"
        return str(self.phase.value)

    def call_outlasted(self, seconds: float) -> bool:
        began = self._busy_since
        return began is not None and time.monotonic() - began >= seconds

    # ------------------------------------------------------------ worker thread

    def _work(self) -> None:
        try:
            self.phase = Phase.CATCHING_UP
            if not self._await_root(returning=False):
                return
            caught_up = self._run_reconcile("catch-up")
            if self.refused is not None:
                return  # never READY: the main thread exits with EXIT_REFUSED
            # Ready even if the catch-up failed (provider unreachable, say): watching
            # and queueing work, and the loop retries the reconcile with backoff.
            self.phase = Phase.IDLE
            self._announce_ready()
            if not caught_up:
                self.queue.request_rescan("catch-up retry")
            self._loop(backoff=0.0 if caught_up else 1.0)
        except BaseException as exc:
            self.error = exc
            log.exception("worker failed")
        finally:
            self._fail_requests("the daemon is stopping")
            self._wake()

    def _announce_ready(self) -> None:
        self.ready.set()
        self._wake()

    def _loop(self, backoff: float) -> None:
        last_sync = -1e9
        last_full = False
        while not self._stop.is_set() and self.refused is None:
            if backoff and self._pause(backoff):
                return
            if self._serve_requests():
                continue
            if self.reach.probed_down:
                # A TCP probe finds the remote down: a call now would only sit in its
                # retries. Changes stay queued; the supervisor nudges when it is back.
                self._pause(TICK_S)
                continue
            if self._reloaded is not None:
                self._apply_reloaded()
                continue
            if not self.watcher.is_alive:
                # Watching stops on its own when the root goes away (or is replaced).
                if not self._await_root(returning=True):
                    return
                self.queue.request_rescan("the folder is back")
                continue
            recheck = self._space_recheck_at
            if recheck is not None and time.monotonic() >= recheck:
                self._space_recheck_at = None  # armed again by the reconcile's outcome
                self.queue.request_rescan("files wait for account space: listing it again")
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
            # Each sync_paths call may rewrite the mapping file, so calls are spaced by
            # ten times what that costs (a small mapping: a batch goes as soon as it
            # settles; a 100,000-file one: seconds apart, a tenth of the time at most
            # spent writing it), and what settles meanwhile rides along; a full batch
            # means a backlog, which goes out at once.
            gap = last_sync + self._spacing() - time.monotonic()
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
            first_events: dict[str, float] = {}
            batch = self.queue.pop_ready(
                self._probe, limit=self._batch_size, first_seen=first_events
            )
            if batch:
                ok = self._sync(batch, first_events)
                backoff = 0.0 if ok else _next_backoff(backoff)
                last_sync = time.monotonic()
                last_full = len(batch) >= self._batch_size
                continue
            if self.syncer.batches_config is not None and time.monotonic() >= self._batches_at:
                self._step_batches()
                continue
            self.phase = Phase.IDLE
            due = self.queue.next_due()
            wait = TICK_S if due is None else min(TICK_S, max(0.01, due - time.monotonic()))
            self.queue.wait(wait)

    def _spacing(self) -> float:
        return max(MIN_SPACING_S, PUBLISH_COST_FACTOR * self.syncer.publish_cost_s)

    def _step_batches(self) -> None:
        """Create the jobs new inputs need, follow the running ones, pull their results:
        a batch file dropped into the folder comes back as results with no command typed.
        Stepped every batch.poll_interval_s, sooner after a sync of a .jsonl file."""
        self.phase = Phase.BATCHES
        self._batches_at = time.monotonic() + self.config.batch.poll_interval_s
        try:
            report = self._call(lambda: self.syncer.batches_step())
        except Exception as exc:
            log.exception("batch step failed", error=str(exc))
            self.recorder.error(f"batch step failed: {exc}")
            return
        if report is None:
            return
        if report.submitted or report.pulled or report.errors or report.conflicts:
            log.info("batches", submitted=len(report.submitted), pulled=len(report.pulled),
                     conflicts=len(report.conflicts), errors=len(report.errors))  # fmt: skip
        if report.pending:
            # Running jobs are followed sooner than the poll interval while young.
            self._batches_at = min(self._batches_at, time.monotonic() + BATCH_FOLLOW_S)

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
            self._serve_requests()
            if not settle:
                if root.is_dir():
                    if self._watch():
                        return True
                    continue
                settle = True
            signature = tree_signature(root, self.syncer.is_candidate, self.syncer.can_hold)
            if signature is None:
                back = False
                if not missing:
                    missing = True
                    self.watcher.stop()
                    self.phase, self.phase_about = Phase.WAITING_FOR_ROOT, str(root)
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
                self.phase, self.phase_about = Phase.ROOT_SETTLING, str(root)
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

    def _apply_reloaded(self) -> None:
        """New rules change what is a candidate and which folders are watched; new
        rules or a new watch section restart watching, and so a rescan follows."""
        with self._reload_lock:  # a second SIGHUP meanwhile is applied next time round
            new, self._reloaded = self._reloaded, None
        if new is None:
            return
        old, self.config = self.config, new
        if new.rules != old.rules:
            self.syncer.set_rules(new.rules)
            log.info("rules reloaded; rescanning", root=str(new.root))
        if new.rules != old.rules or new.watch != old.watch:
            self._restart_watching()

    def _restart_watching(self) -> None:
        self.watcher.stop()
        self.watcher = self._watcher_factory(self.config, self.handler, self.syncer.can_hold)
        if self._watch():
            # Changes made while nothing was watching are only found by a scan.
            self.queue.request_rescan("watching restarted")

    def _call(self, fn: Callable[[], R]) -> R:
        self._busy_since = time.monotonic()
        try:
            return fn()
        finally:
            self._busy_since = None

    def _pause(self, seconds: float) -> bool:
        """Wait up to ``seconds`` or until nudged; True when a stop was requested."""
        self._nudge.wait(seconds)
        self._nudge.clear()
        return self._stop.is_set()

    def _serve_requests(self) -> bool:
        """Run the reconciles asked for over the control socket; True if there were any."""
        served = False
        while True:
            try:
                request = self._requests.get_nowait()
            except queue.Empty:
                return served
            served = True
            if not request.result.set_running_or_notify_cancel():
                continue
            try:
                request.result.set_result(self._requested(request))
            except Exception as exc:
                log.exception("requested reconcile failed", error=str(exc))
                request.result.set_exception(exc)

    def _requested(self, request: ReconcileRequest) -> dict[str, Any]:
        if self.reach.probed_down:
            return _not_run(request.dry_run, self.reach.describe())
        root = self.config.root
        if not root.is_dir():
            return _not_run(request.dry_run, f"the folder {root} is unavailable")
        if request.paths:
            self.phase = Phase.SYNCING
            paths, cap, yes = list(request.paths), request.max_delete, request.confirm_deletes
            report = self._call(
                lambda: self.syncer.sync_paths(paths, max_delete=cap, confirm_deletes=yes)
            )
            self._after(report, what="sync")
            if not report.remote_unavailable and not report.errors:
                self._reachable()
            return report.as_json()
        what = "requested dry run" if request.dry_run else "requested"
        report = self._reconcile(
            what,
            dry_run=request.dry_run,
            max_delete=request.max_delete,
            confirm_deletes=request.confirm_deletes,
            progress=request.progress,
        )
        return report.as_json()

    def _run_reconcile(self, reason: str) -> bool:
        try:
            report = self._reconcile(reason)
        except Exception as exc:
            log.exception("reconcile failed", reason=reason, error=str(exc))
            return False
        return not (report.aborted is not None or report.remote_unavailable)

    def _reconcile(
        self,
        reason: str,
        *,
        dry_run: bool = False,
        max_delete: MaxDelete | None = None,
        confirm_deletes: bool = False,
        progress: Progress | None = None,
    ) -> Report:
        self.phase = Phase.RECONCILING if reason != "catch-up" else Phase.CATCHING_UP
        self.rescans += 1
        log.info("reconcile", reason=reason, dry_run=dry_run)
        cap, yes = max_delete, confirm_deletes
        if progress is None:  # the daemon's own runs: nobody watches them
            report = self._call(
                lambda: self.syncer.reconcile(dry_run, max_delete=cap, confirm_deletes=yes)
            )
        else:  # asked for over the socket by a client that shows the progress
            shown = progress
            report = self._call(
                lambda: self.syncer.reconcile(dry_run, shown, max_delete=cap, confirm_deletes=yes)
            )
        if dry_run:
            return report
        log.info(
            "reconciled",
            reason=reason,
            hashed=report.hashed,
            uploaded=report.uploaded,
            deleted=report.deleted,
            duration_s=round(report.duration_s, 3),
            exit_code=report.exit_code,
        )
        self._after(report, what=reason)
        if report.aborted is not None:
            return report
        # Nothing was planned without a listing: the caller retries.
        if report.remote_unavailable:
            self.reach.failed()
            return report
        self._reachable()
        return report

    def _sync(self, batch: list[str], first_events: dict[str, float] | None = None) -> bool:
        self.phase = Phase.SYNCING
        try:
            report = self._call(lambda: self.syncer.sync_paths(batch))
        except Exception as exc:
            log.exception("sync failed; will retry", paths=len(batch), error=str(exc))
            self.recorder.error(f"sync failed: {exc}")
            self.queue.requeue(batch)
            return False
        failed = report.remote_unavailable or (self.reach.down and bool(report.errors))
        self._after(report, what="sync", first_events=None if failed else first_events)
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
        if any(p.endswith(".jsonl") for p in batch):
            self._batches_at = 0.0  # a new or changed input: its job without waiting
        self.synced_batches += 1
        return True

    def _fail_requests(self, why: str) -> None:
        while True:
            try:
                request = self._requests.get_nowait()
            except queue.Empty:
                return
            if request.result.set_running_or_notify_cancel():
                request.result.set_exception(RuntimeError(why))

    def _reachable(self) -> None:
        if self.reach.down:
            log.info("the remote is reachable again", base_url=self.syncer.base_url)
        self.reach.ok()

    def _after(
        self, report: Report, *, what: str, first_events: dict[str, float] | None = None
    ) -> None:
        self.recorder.run_finished(
            "sync" if what == "sync" else "reconcile",
            report,
            duration_s=report.duration_s,
            uploaded_bytes=report.uploaded_bytes,
            first_events=first_events,
        )
        if report.aborted is not None:
            self.refused = self._refused_message(report.aborted)
            log.error(self.refused)
            self._wake()
            return
        if report.root_unavailable:
            log.error("the folder is unavailable; nothing was deleted", root=str(self.config.root))
        for error in report.errors[:20]:
            log.warning(events.NOT_SYNCED, during=what, error=error)
        changed = report.changed_during_upload
        if changed:
            log.info("files changed while uploading; queued again", count=len(changed))
            self.queue.requeue(changed)
        if report.deleted:
            # Deletes free account space: what waited for it goes up now, not at the
            # next scheduled reconcile.
            waiting = self.syncer.waiting_for_space()
            if waiting:
                log.info("account space freed; files waiting for it queued", count=len(waiting))
                for path in waiting:
                    self.queue.touch(path, Kind.MODIFIED)
        try:
            self.stats = dict(self.syncer.stats())
        except Exception:
            log.debug("stats unavailable", exc_info=True)
        self._arm_space_recheck(listed=what != "sync")

    def _arm_space_recheck(self, *, listed: bool) -> None:
        """While files wait for account space, look at the account again
        ``quota_recheck_s`` after the last listing (a reconcile's); none waiting, never."""
        waiting = self.stats.get("quota", 0)
        if not waiting:
            self._space_recheck_at, self._space_waiting = None, None
            self._space_every = self._quota_recheck_s
            return
        if listed:
            freed = self._space_waiting is None or waiting < self._space_waiting
            every = self._quota_recheck_s if freed else self._space_every * 2
            self._space_every = min(every, MAX_SPACE_RECHECK_S)
            self._space_waiting = waiting
            self._space_recheck_at = time.monotonic() + self._space_every
        elif self._space_recheck_at is None:
            self._space_recheck_at = time.monotonic() + self._space_every

    def _refused_message(self, error: str) -> str:
        """The same words as ``check-config --online`` and a one-off run use."""
        from syncd.remote_problem import refusal

        key, why = refusal(self.config, None)
        return (
            f"{self.config.origin.at(key)}: {why}; the provider said: {error}; "
            "fix it, then start syncd again"
        )

    def _expand(self, dirs: list[str]) -> None:
        """Queue the files of folders that appeared (created, or moved in from outside)."""
        root = self.config.root
        for rel_dir in dirs:
            if not self.syncer.can_hold(rel_dir):
                continue
            for rel, _entry in walk_candidates(
                root, rel_dir, self.syncer.is_candidate, self.syncer.can_hold
            ):
                if self._stop.is_set():
                    return
                self.queue.touch(rel, Kind.CREATED)



def _not_run(dry_run: bool, why: str) -> dict[str, Any]:
    """The outcome of a requested reconcile that could not start."""
    return {
        "dry_run": dry_run,
        "exit_code": 1,
        "duration_s": 0.0,
        "planned": {"upload": [], "adopt": [], "delete": []},
        "uploaded": 0,
        "adopted": 0,
        "deleted": 0,
        "hashed": 0,
        "refused": None,
        "errors": [why],
        "not_synced": [],
        "skipped": [],
        "notes": [],
    }


def _next_backoff(current: float) -> float:
    return min(MAX_BACKOFF_S, max(1.0, current * 2))
