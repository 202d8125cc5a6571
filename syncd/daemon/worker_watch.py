"""The worker's root and watch: wait for the root (and for it to settle when it comes
back), start and restart watching, take a reloaded configuration, queue the files of
folders that appear."""

from __future__ import annotations

import time

import structlog

from syncd.config import Config
from syncd.daemon.phase import Phase
from syncd.daemon.root_watch import RootReturn, tree_signature
from syncd.daemon.settle import Kind
from syncd.daemon.worker_core import MAX_BACKOFF_S, TICK_S, WorkerCore
from syncd.engine.walk import walk_candidates

log = structlog.get_logger("syncd.daemon")


class WatchLifecycle(WorkerCore):
    """The root and its watch, for the worker thread."""

    def reconfigure(self, config: Config) -> None:
        """Take a reloaded configuration. The worker thread applies it between engine
        calls: new rules must not change under a plan being carried out."""
        with self._reload_lock:
            self._reloaded = config
        self.queue.wake()

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
