"""The worker thread: the only thread that calls the engine, one call at a time.

It starts watching, checks the key, says READY, runs the catch-up reconcile, then
drains settled paths into ``sync_paths`` in batches and runs rescans when asked,
backing off while calls fail. When the root goes away it stops, waits for the root
to come back and settle (:mod:`syncd.daemon.root_watch`), and only then reconciles
again. The supervisor (main thread) reads its ``phase``, ``reach``, ``refused`` and
queue for STATUS, and ends it by setting the shared stop event.

Watching starts before the catch-up scan, so a file written while the scan runs
is queued and synced right after it; the engine finds nothing to do for the
files the scan already handled.
"""

from __future__ import annotations

import time

from syncd.daemon.phase import Phase
from syncd.daemon.worker_core import (
    BATCH_SIZE,
    GATHER_S,
    MAX_BACKOFF_S,
    MIN_SPACING_S,
    PUBLISH_COST_FACTOR,
    TICK_S,
    WatcherFactory,
    default_watcher,
    log,
)
from syncd.daemon.worker_runs import RunHandling
from syncd.daemon.worker_watch import WatchLifecycle

__all__ = ["BATCH_SIZE", "TICK_S", "WatcherFactory", "Worker", "default_watcher"]


class Worker(WatchLifecycle, RunHandling):
    """The worker thread's loop over the queue, the requests and the schedule."""

    def _work(self) -> None:
        try:
            self.phase = Phase.CATCHING_UP
            if not self._await_root(returning=False):
                return
            refused = self._call(self.syncer.key_refused)
            if refused is not None:
                self._refuse(refused)
                return  # never READY: the main thread exits with EXIT_REFUSED
            # READY once watching with a key the provider takes, before the catch-up: its
            # listing is as long as the account, and what changes meanwhile is queued
            # anyway. Status says "catching up" until it is done (``caught_up``); a
            # failed one (provider unreachable, say) is retried with backoff.
            self._announce_ready()
            caught_up = self._run_reconcile("catch-up")
            if self.refused is not None:
                return  # the key was refused mid-run: the main thread exits with EXIT_REFUSED
            self.phase = Phase.IDLE
            if not caught_up:
                self.queue.request_rescan("catch-up retry")
            self._loop(backoff=0.0 if caught_up else 1.0)
        except BaseException as exc:
            self.error = exc
            log.exception("worker failed")
        finally:
            self._fail_requests("the daemon is stopping")
            self._wake()

    def _loop(self, backoff: float) -> None:
        self._backoff = backoff
        # When the last targeted sync ran (monotonic), and whether it took a full batch.
        self._last_sync, self._last_full = -1e9, False
        while not self._stop.is_set() and self.refused is None:
            if self._backoff and self._pause(self._backoff):
                return
            chore = self._chore()
            if chore is None:
                return  # a stop came while the root was away
            if chore or self._batch():
                continue
            if self.syncer.batches_config is not None and time.monotonic() >= self._batches_at:
                self._step_batches()
                continue
            if self.syncer.attacher is not None and time.monotonic() >= self._attach_at:
                self._step_attach()
                continue
            self._idle()
            due = self.queue.next_due()
            wait = TICK_S if due is None else min(TICK_S, max(0.01, due - time.monotonic()))
            self.queue.wait(wait)

    def _chore(self) -> bool | None:
        """What comes before the queue's paths: requests, a reload, the root's return,
        a rescan, new folders. True when one was done, None when a stop came."""
        if self._serve_requests():
            return True
        if self.reach.probed_down:
            # A TCP probe finds the remote down: a call now would only sit in its
            # retries. Changes stay queued; the supervisor nudges when it is back.
            self._pause(TICK_S)
            return True
        if self._reloaded is not None:
            self._apply_reloaded()
            return True
        if not self.watcher.is_alive:
            # Watching stops on its own when the root goes away (or is replaced).
            if not self._await_root(returning=True):
                return None
            self.queue.request_rescan("the folder is back")
            return True
        if self.space.is_due(time.monotonic()):
            self.space = self.space.taken()  # armed again by the reconcile's outcome
            self.queue.request_rescan("files wait for account space: listing it again")
        reason = self.queue.take_rescan()
        if reason is not None:
            ok = self._run_reconcile(reason)
            self._backoff = 0.0 if ok else _next_backoff(self._backoff)
            if not ok:
                self.queue.request_rescan(reason)
            return True
        dirs = self.queue.take_dirs()
        if dirs:
            self._expand(dirs)
            return True
        return False

    def _batch(self) -> bool:
        """Sync the paths that settled, or wait for more to; False when none is due."""
        # Each sync_paths call may rewrite the mapping file, so calls are spaced by
        # ten times what that costs (a small mapping: a batch goes as soon as it
        # settles; a 100,000-file one: seconds apart, a tenth of the time at most
        # spent writing it), and what settles meanwhile rides along; a full batch
        # means a backlog, which goes out at once.
        gap = self._last_sync + self._spacing() - time.monotonic()
        if gap > 0 and not self._last_full:
            self.queue.wait(min(gap, TICK_S))
            return True
        # A burst (rm -r, a copy, an unpacked archive) becomes due over a few
        # milliseconds; releasing only what is due at the first instant would split
        # it into batches, and each batch is judged alone by the deletion guard
        # (max_delete), so hold the first release briefly to take the burst whole.
        due = self.queue.next_due()
        hold = 0.0 if due is None or self._last_full else due + GATHER_S - time.monotonic()
        if hold > 0:
            self.queue.wait(min(hold, TICK_S))
            return True
        first_events: dict[str, float] = {}
        batch = self.queue.pop_ready(self._probe, limit=self._batch_size, first_seen=first_events)
        if not batch:
            return False
        ok = self._sync(batch, first_events)
        self._backoff = 0.0 if ok else _next_backoff(self._backoff)
        self._last_sync = time.monotonic()
        self._last_full = len(batch) >= self._batch_size
        return True

    def _spacing(self) -> float:
        return max(MIN_SPACING_S, PUBLISH_COST_FACTOR * self.syncer.publish_cost_s)

    def _pause(self, seconds: float) -> bool:
        """Wait up to ``seconds`` or until nudged; True when a stop was requested."""
        self._nudge.wait(seconds)
        self._nudge.clear()
        return self._stop.is_set()


def _next_backoff(current: float) -> float:
    return min(MAX_BACKOFF_S, max(1.0, current * 2))
