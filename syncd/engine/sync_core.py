"""What the Syncer's parts share: its config, client, state, claims and remote view,
the lock that serializes its operations, publishing the mapping, and closing.
:class:`~syncd.engine.sync.Syncer` is built from this, :mod:`.sync_listing` (what a
listing proves) and :mod:`.sync_steps` (the batch and attach steps after a full run)."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import structlog

from syncd.config import Config, RulesConfig
from syncd.engine import publish
from syncd.engine.changes import MOST_KEYS
from syncd.engine.claims import Claims
from syncd.engine.ledger import Ledger, LocalLedger
from syncd.engine.remote import RemoteFiles, RemoteView
from syncd.engine.rules import Rules
from syncd.engine.state import State, StateLock

if TYPE_CHECKING:
    # The batch and vector store steps are imported only by a project that uses them:
    # a run without them does not pay for their modules.
    from syncd.engine import attach as vector_attach
    from syncd.engine import batches as batch_jobs

log = structlog.get_logger("syncd.engine")


def batches_config(config: Config) -> batch_jobs.BatchesConfig | None:
    """The config's ``pull`` and ``batch`` sections as the batch step takes them; None
    when neither is on."""
    if config.pull.outbox is None and not config.batch.submit:
        return None
    from syncd.engine import batches as batch_jobs
    from syncd.engine.pull import PullConfig

    pull = (
        PullConfig(config.pull.outbox, tuple(config.pull.purposes),
                   config.pull.delete_remote_after_pull)
        if config.pull.outbox is not None
        else None
    )  # fmt: skip
    b = config.batch
    rules = (
        (batch_jobs.SubmitRule(b.submit, b.endpoint, b.completion_window, b.max_per_day),)
        if b.submit
        else ()
    )
    if pull is None and not rules:
        return None
    return batch_jobs.BatchesConfig(pull=pull, submit=rules, cancel_superseded=b.cancel_superseded)


def _bounded(state: State, config: Config) -> State:
    """The state, keeping its journal within the config's bounds."""
    state.journal_rows = config.journal.max_entries
    state.journal_age_s = config.journal.max_age_days * 86_400.0
    return state


class SyncerCore:
    """The Syncer's state and its queries; runs are in :class:`~syncd.engine.sync.Syncer`."""

    def __init__(
        self,
        config: Config,
        client: RemoteFiles,
        state: State,
        claims: Claims,
        *,
        ledger: Ledger | None = None,
        base_url: str = "",
        lock: StateLock | None = None,
        closers: Iterable[Callable[[], None]] = (),
    ) -> None:
        self.config = config
        self.base_url = base_url or config.api.base_url
        self.client = client
        self.state = _bounded(state, config)
        self.claims = claims
        # The account's quota as every host on the key sees it (single host: admits all).
        self.ledger: Ledger = ledger or LocalLedger()
        self.rules = Rules(config.rules)
        self.remote = RemoteView()
        self._lock = lock
        self._closers = list(closers)
        self._op = threading.RLock()
        # Who runs this Syncer, for the journal: a one-off command, or the daemon.
        self.origin = "one-off"
        self._publisher = publish.Publisher(config.mapping_file)
        # What writing the mapping last cost (s): the daemon spaces runs by it.
        self.publish_cost_s = 0.0
        # Batch jobs and pulled results (engine/batches.py), when the config asks.
        self.batches_config = batches_config(config)
        self._batch_store: batch_jobs.BatchStore | None = None
        if self.batches_config:
            from syncd.engine.batches import BatchStore

            self._batch_store = BatchStore.open(config.state_dir)
        self._stopping = threading.Event()
        # The last counts by status and the state generation they were counted at.
        self._stats_cache: tuple[State, int, dict[str, int]] | None = None
        # Vector stores (engine/attach.py), when the config has rules for them.
        self.attacher: vector_attach.Attacher | None = None
        if config.vector_stores.rules:
            from syncd.engine.attach import open_for

            self.attacher = open_for(config, claims.owner)

    def _reopen_if_lost(self) -> bool:
        """Open the state anew if its database was deleted or replaced under us (the
        old file is written no more); True when it was. The next full run adopts what
        the claims registry proves ours instead of uploading it again."""
        if not self.state.replaced():
            return False
        log.error(
            "the state database was deleted or replaced while open: opening it anew, "
            "a full reconcile adopts the files this project uploaded",
            state_dir=str(self.config.state_dir),
        )
        # Closed first: its last close removes the -wal and -shm files beside the path,
        # which the new database must not inherit.
        self.state.close()
        self.state = _bounded(State(self.config.state_dir), self.config)
        return True

    def publish_mapping(self) -> None:
        with self._op:
            head = {"project": self.config.project, "owner": self.claims.owner,
                    "base_url": self.base_url}  # fmt: skip
            attacher = self.attacher
            started = time.monotonic()
            wrote = None if attacher else self._publish_changes(head)
            if wrote is None:
                # The state object itself, not its id: one reopened after a loss may
                # reuse the old one's id and start its generation over.
                inputs = (self.state, self.state.generation, self.remote.generation,
                          attacher.store.generation if attacher else 0)  # fmt: skip
                extra = attacher.by_path if attacher else None
                wrote = self._publisher.publish(self.state.synced, self.remote, head, inputs, extra)
            if wrote:
                self.publish_cost_s = time.monotonic() - started

    def _publish_changes(self, head: dict[str, str]) -> bool | None:
        """Publish only what changed since the last publish: the paths the state wrote
        and those holding ids the remote view gained or lost (an edit in a 100,000-file
        tree touches its own lines, not all of them). None when that is not known (a
        full listing came, or no publish yet) and the whole mapping is made again."""
        last = self._publisher.inputs
        if not isinstance(last, tuple) or last[0] is not self.state:
            return None
        # Counted before the changes are read: a write in between is read again next time.
        inputs = (self.state, self.state.generation, self.remote.generation, 0)
        paths = self.state.changed_since(last[1])
        ids = self.remote.changed_since(last[2])
        if paths is None or ids is None:
            return None
        if ids:
            paths |= self.state.paths_holding(ids)
        if len(paths) > MOST_KEYS:
            return None
        return self._publisher.patch(self.state.synced_of(paths), self.remote, head, inputs)

    def waiting_for_space(self) -> list[str]:
        """Paths held back for want of account space (status ``quota``)."""
        return self.state.paths_with_status("quota")

    def stop_soon(self) -> None:
        """Start no more uploads or deletes: the run in progress lets its calls in
        flight finish, publishes what they confirmed and ends as interrupted. Safe from
        any thread (a daemon's signal handling); for good: the process is stopping."""
        self._stopping.set()

    def set_rules(self, rules: RulesConfig) -> None:
        """Judge paths by these rules from the next run on (a reloaded config)."""
        with self._op:
            self.config = dataclasses.replace(self.config, rules=rules)
            self.rules = Rules(rules)

    def is_candidate(self, rel_path: str) -> bool:
        return self.rules.is_candidate(rel_path)

    def can_hold(self, rel_dir: str) -> bool:
        return self.rules.can_hold(rel_dir)

    def stats(self) -> dict[str, int]:
        """Paths by status; one whose delete a guard holds counts as ``held``. Counted
        again only once the state changed (every write bumps its generation): a status
        page polled every second over a big tree costs nothing while nothing happens."""
        # The state object itself, not its id: a state reopened after a loss may reuse
        # the old one's id and start its generation over.
        state, generation = self.state, self.state.generation
        cached = self._stats_cache
        if cached is not None and cached[0] is state and cached[1] == generation:
            return dict(cached[2])
        held = state.held()
        counts: dict[str, int] = {}
        for _, recorded, file_id in state.records().statuses():
            status = "held" if file_id in held else recorded
            counts[status] = counts.get(status, 0) + 1
        self._stats_cache = (state, generation, counts)
        return dict(counts)

    def close(self) -> None:
        closers = [self.client.close, self.state.close, self.claims.close, *self._closers]
        if self._batch_store is not None:
            closers.append(self._batch_store.close)
        if self.attacher is not None:
            closers.append(self.attacher.close)
        for close in closers:
            try:
                close()
            except Exception:  # closing must finish even if one part is broken
                log.exception("close failed")
        if self._lock is not None:
            self._lock.release()
