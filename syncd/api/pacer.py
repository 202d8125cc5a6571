"""The pacer: when a request of a call class may go, for every caller of one client.

:class:`Pacer` applies the pure rules (:mod:`syncd.api.pacing_rules`) to each class's
state in its store (:mod:`syncd.api.pacing_store`, or a shared one through
:mod:`syncd.api.pacing_failover`), blocking a caller until its request may be sent and
remembering, per thread, the count each request went out with so that its outcome
(a 429, a success) can be judged. The mechanism is described in :mod:`syncd.api.pacing`.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Literal, TypeVar

import structlog

from syncd.api.byte_pacer import BUCKET, BytePacer
from syncd.api.models import CallClass
from syncd.api.pacing_failover import Failover, FailoverStore
from syncd.api.pacing_rules import (
    Verdict,
    await_send,
    count_late,
    effective_rate,
    inherit,
    is_implausible,
    merge_grants,
    note_host,
    note_sent,
    note_success,
    note_throttled,
    note_unsent,
    try_grant,
    window_count,
)
from syncd.api.pacing_state import CALL_CLASSES, DEFAULT_MARGIN, AdaptiveTuning, ClassState
from syncd.api.pacing_store import FileStore, Held, MemoryStore, PacingDir, StateStore, budget_id

log = structlog.get_logger(__name__)

T = TypeVar("T")


class Pacer:
    """Adaptive per-class rate limiter.

    ``grant(cls)`` blocks until a request of that class may be sent; ``mark_sent``
    says when it actually left; report the outcome with ``on_throttled`` (a 429) or
    ``on_success``, from the same thread (the pacer remembers, per thread, the count
    each request went out with).

    The state lives in ``stores`` if given, else in files under ``state_dir`` (checked
    and created private; :class:`PacingDirError` if it is not safe), else in memory.
    With ``upload_bytes_per_s``, :attr:`bytes` paces upload bodies too, its bucket kept
    beside the classes' (None: no cap, and no cost).
    """

    def __init__(
        self,
        ceilings: Mapping[CallClass, float],
        *,
        state_dir: Path | None = None,
        key_fingerprint: str = "default",
        margin: float = DEFAULT_MARGIN,
        tuning: AdaptiveTuning | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        stores: Mapping[CallClass, StateStore] | None = None,
        host: str | None = None,
        upload_bytes_per_s: float | None = None,
    ) -> None:
        self._ceilings = {cls: float(ceilings[cls]) for cls in CALL_CLASSES}
        self._margin = margin
        self._tuning = tuning or AdaptiveTuning()
        self._clock = clock
        self._sleep = sleep
        self._local = threading.local()
        self._folder: PacingDir | None = None
        self._health: Failover | None = None
        self._stores: dict[CallClass, StateStore] = {}
        self.bytes: BytePacer | None = None
        if stores is not None:
            self._stores = {cls: stores[cls] for cls in CALL_CLASSES}
        elif state_dir is not None:
            self._folder = PacingDir(state_dir)
            try:
                for cls in CALL_CLASSES:
                    self._stores[cls] = FileStore(self._folder, f"{key_fingerprint}-{cls}")
            except BaseException:
                self.close()
                raise
        else:
            self._stores = {cls: MemoryStore() for cls in CALL_CLASSES}
        # Names this pacer's local budget in a shared state: every process pacing on
        # one folder is one budget (one host), a pacer in memory is its own.
        self.host = host or (
            budget_id(self._folder.fd) if self._folder is not None else secrets.token_hex(8)
        )
        if upload_bytes_per_s is not None:
            folder = self._folder
            name = f"{key_fingerprint}-{BUCKET}"
            bucket: StateStore = MemoryStore() if folder is None else FileStore(folder, name)
            self.bytes = BytePacer(upload_bytes_per_s, bucket, clock=clock, sleep=sleep)

    def _apply(self, cls: CallClass, fn: Callable[[ClassState, float, float, str], T]) -> T:
        """Run ``fn(state, now, ceiling, clock)`` on the class's state in its store."""
        full = self._ceilings[cls]
        tuning = self._tuning

        def run(held: Held) -> T:
            state, now = held.state, held.now
            if is_implausible(state, now, tuning):
                state.__dict__.update(ClassState().__dict__)
            if held.inherit is not None:
                held.inherited = inherit(state, now, held.inherit, full, self._margin)
            if held.returning is not None:
                back = held.returning
                merge_grants(state, now, [t - back.asked_at + now for t in back.grants])
            last_grant = state.last_grant
            result = fn(state, now, full * held.share, held.clock)
            if held.host is not None and state.last_grant > last_grant:
                note_host(state, held.host, now)
            return result

        return self._stores[cls].update(run, self._clock)

    def _remember(self, cls: CallClass, sent_at: float, count: int, clock: str) -> None:
        self._local.__dict__[cls] = (sent_at, count, clock)

    def _recall(self, cls: CallClass) -> tuple[float, int, str] | None:
        sent: tuple[float, int, str] | None = self._local.__dict__.pop(cls, None)
        return sent

    @staticmethod
    def _on_clock(
        sent: tuple[float, int, str] | None, clock: str
    ) -> tuple[float | None, int | None]:
        """What a request remembered on ``clock`` says (nothing, on another clock)."""
        if sent is None or sent[2] != clock:
            return None, None
        return sent[0], sent[1]

    def grant(self, cls: CallClass) -> tuple[float, float]:
        """Block until a request of ``cls`` may go. Returns the grant time (to pass to
        :meth:`mark_sent` once the request has actually left) and the seconds waited."""
        tuning, margin = self._tuning, self._margin

        def attempt(
            state: ClassState, now: float, ceiling: float, clock: str
        ) -> tuple[float, float, int, str]:
            wait = try_grant(state, now, ceiling, tuning, margin)
            if wait > 0.0:
                return wait, now, 0, clock
            await_send(state, now)
            return wait, now, window_count(state, now), clock

        waited = 0.0
        while True:
            wait, now, count, clock = self._apply(cls, attempt)
            if wait <= 0.0:
                self._remember(cls, now, count, clock)
                return now, waited
            # Sleep and re-check rather than grant-then-sleep: the grant time must be
            # the time the request actually leaves.
            self._sleep(wait)
            waited += wait

    def acquire(self, cls: CallClass) -> float:
        """Block until a request of ``cls`` may go, and count it as gone; return the
        seconds waited."""
        granted_at, waited = self.grant(cls)
        self.mark_sent(cls, granted_at)
        return waited

    def mark_sent(self, cls: CallClass, granted_at: float) -> None:
        """The request granted at ``granted_at`` has just been written to the socket."""
        sent = self._recall(cls)

        def note(
            state: ClassState, now: float, _ceiling: float, clock: str
        ) -> tuple[float, int, str] | None:
            if sent is not None and sent[2] != clock:
                # Granted on the other clock: the shared store went away (or came back)
                # since. The grant is in the other window, and in this one only at its
                # grant time if at all: count the request here too, from when it left.
                count_late(state, now)
                return now, window_count(state, now), clock
            note_sent(state, granted_at, now)
            if now > granted_at and now in state.recent:
                return now, window_count(state, now), clock
            return sent

        moved = self._apply(cls, note)
        if moved is not None:
            self._remember(cls, *moved)

    def never_sent(self, cls: CallClass, granted_at: float) -> None:
        """The request granted at ``granted_at`` will not leave (no connection, or the
        call was cancelled before it was written): its place is given back."""
        self._recall(cls)

        def note(state: ClassState, _now: float, _ceiling: float, _clock: str) -> None:
            note_unsent(state, granted_at)

        self._apply(cls, note)

    def on_throttled(self, cls: CallClass, retry_after: float | None = None) -> None:
        """A 429. It lowers the rate only when it says we are too fast; otherwise the
        caller's retry (with backoff, obeying ``retry_after``) is all that happens."""
        sent = self._recall(cls)
        tuning = self._tuning

        def note(
            state: ClassState, now: float, ceiling: float, clock: str
        ) -> tuple[Verdict, float | None, float | None, float, int | None]:
            sent_at, count = self._on_clock(sent, clock)
            verdict = note_throttled(
                state, now, ceiling, tuning, retry_after, count=count, sent_at=sent_at
            )
            return verdict, state.rate, state.target, state.paused_until - now, count

        verdict, rate, target, pause, count = self._apply(cls, note)
        if verdict == "lowered":
            log.warning(
                "api.pacer.slow_down",
                call_class=cls,
                rate=round(rate or 0.0, 3),
                ceiling_estimate=round(target or 0.0, 3),
                pause=round(max(pause, 0.0), 3),
            )
        else:
            log.debug("api.pacer.throttled", call_class=cls, verdict=verdict, count=count)

    def on_success(self, cls: CallClass) -> None:
        sent = self._recall(cls)
        tuning = self._tuning

        def note(
            state: ClassState, now: float, ceiling: float, clock: str
        ) -> tuple[bool, float | None]:
            sent_at, count = self._on_clock(sent, clock)
            changed = note_success(state, now, ceiling, tuning, count=count, sent_at=sent_at)
            return changed, state.rate

        changed, rate = self._apply(cls, note)
        if changed:
            log.debug(
                "api.pacer.recover", call_class=cls, rate=None if rate is None else round(rate, 3)
            )

    def snapshot(self, cls: CallClass) -> ClassState:
        """A copy of the class's current state (diagnostics and tests)."""
        return self._apply(cls, lambda state, *_: ClassState.from_json(state.to_json()))

    def current_rate(self, cls: CallClass) -> float:
        tuning = self._tuning
        return self._apply(
            cls, lambda state, _now, ceiling, _c: effective_rate(state, ceiling, tuning)
        )

    def share_through(
        self,
        shared: Mapping[CallClass, StateStore],
        *,
        fleet_size: int,
        retry_s: float = 1.0,
        name: str = "shared",
        bytes_shared: StateStore | None = None,
    ) -> Failover:
        """Pace through ``shared`` stores (one per class, common to every host on the
        key), keeping this pacer's own stores as the fallback while they are
        unreachable: from the shared window last seen, at ``1 / fleet_size`` of the
        ceiling or less (see :class:`Failover`); the byte bucket likewise through
        ``bytes_shared``. Returns the health, which :attr:`sharing` reports too."""
        health = Failover(fleet_size, retry_s=retry_s, clock=self._clock, name=name)
        self._stores = {
            cls: FailoverStore(shared[cls], self._stores[cls], health, cls, self.host)
            for cls in CALL_CLASSES
        }
        self._health = health
        if self.bytes is not None and bytes_shared is not None:
            self.bytes.share_through(bytes_shared, health, self.host)
        return health

    @property
    def sharing(self) -> Literal["local", "shared", "fallback"]:
        """Where the budget lives now: this host only ("local"), the shared store
        ("shared"), or this host at a share of the ceiling because the shared store is
        unreachable ("fallback")."""
        return "local" if self._health is None else self._health.mode

    def close(self) -> None:
        for store in self._stores.values():
            store.close()
        if self.bytes is not None:
            self.bytes.close()
        if self._folder is not None:
            self._folder.close()
