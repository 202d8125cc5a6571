"""What the worker's parts share: its state, the supervisor's side of it, and one engine
call at a time. :class:`~syncd.daemon.worker.Worker` is built from this,
:mod:`.worker_watch` (the root and its watch) and :mod:`.worker_runs` (engine runs)."""

from __future__ import annotations

import math
import queue
import threading
import time
from collections.abc import Callable
from typing import TypeVar

import structlog

from syncd.config import Config
from syncd.daemon.control import ReconcileRequest
from syncd.daemon.heap import release_free_memory
from syncd.daemon.metrics import Recorder
from syncd.daemon.phase import Phase
from syncd.daemon.protocols import SyncerLike
from syncd.daemon.reach import Reachability
from syncd.daemon.settle import Probe, SettleQueue, stat_probe
from syncd.daemon.watch import QueueingHandler, Watcher
from syncd.engine.recheck import QUOTA_RECHECK_S, SpaceRecheck
from syncd.engine.walk import CanHold

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
# While files attached to vector stores are processed, the stores are listed again after
# this long, twice as long each time they are still in progress, at most ATTACH_FOLLOW_MAX_S
# apart: a few files are seen ready in a second, a long processing costs few listings.
ATTACH_FOLLOW_S = 1.0
ATTACH_FOLLOW_MAX_S = 30.0

WatcherFactory = Callable[[Config, QueueingHandler, CanHold], Watcher]


def default_watcher(config: Config, handler: QueueingHandler, can_hold: CanHold) -> Watcher:
    return Watcher(
        config.root,
        handler,
        mode=config.watch.mode,
        poll_interval_s=config.watch.poll_interval_s,
        can_hold=can_hold,
    )


class WorkerCore:
    """The worker's state and what the supervisor calls; no loop of its own."""

    def _work(self) -> None:
        raise NotImplementedError  # the thread's body: worker.Worker

    def _serve_requests(self) -> bool:
        raise NotImplementedError  # worker_runs.RunHandling

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
        # READY: watching with a key the provider takes; caught up: a full run reached
        # the remote since (the catch-up, or its retry).
        self.ready, self.caught_up = threading.Event(), threading.Event()
        self.phase = Phase.STARTING
        # What the phase is about, when it names something (the root being waited for).
        self.phase_about: str | None = None
        self.stats: dict[str, int] = {}
        self.reach = Reachability()
        self.refused: str | None = None  # the provider refused the key: the run ends
        self.error: BaseException | None = None
        # When the current engine call began (monotonic), None between calls; whether
        # one ran since the worker last went idle.
        self._busy_since: float | None = None
        self._ran = False
        self.rescans = 0
        # When to list the account again for files waiting for space (engine/recheck.py).
        self.space = SpaceRecheck.starting(quota_recheck_s)
        self._reload_lock = threading.Lock()
        # When (monotonic) the batch jobs are stepped again; 0: at the next idle moment.
        self._batches_at = 0.0
        # When the vector stores are stepped again (after syncs, and while attachments
        # are processed); never until then (a full run steps them itself).
        self._attach_at = math.inf
        self._attach_follow = ATTACH_FOLLOW_S

    def start(self) -> None:
        self._thread = threading.Thread(target=self._work, name="syncd-worker", daemon=True)
        self._thread.start()

    def is_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def join(self, timeout: float) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

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

    def _announce_ready(self) -> None:
        self.ready.set()
        self._wake()

    def _call(self, fn: Callable[[], R]) -> R:
        self._busy_since = time.monotonic()
        self._ran = True
        try:
            return fn()
        finally:
            self._busy_since = None

    def _idle(self) -> None:
        """Nothing left to do for now: what the last engine calls freed goes back to the
        system (``syncd.daemon.heap``), once per stretch of work."""
        self.phase = Phase.IDLE
        if self._ran:
            self._ran = False
            release_free_memory()
