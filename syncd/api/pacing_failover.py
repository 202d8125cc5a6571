"""Which store serves while a store shared between hosts comes and goes, and at what share.

:class:`Failover` is the health of a shared store (one for all classes of a pacer):
it serves while it answers; when it fails, the local store serves and one caller per
``retry_s`` tries the shared one again. :class:`FailoverStore` is the
:class:`~syncd.api.pacing_store.StateStore` that applies it per class: the local store
starts from the shared window last seen (:func:`~syncd.api.pacing_rules.inherit`) at
a share of the ceiling, and the grants made meanwhile go back to the shared window
when it returns (:func:`~syncd.api.pacing_rules.merge_grants`).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import Literal, TypeVar

import structlog

from syncd import events
from syncd.api.pacing_rules import Inheritance, hosts_seen
from syncd.api.pacing_state import WINDOW, ClassState
from syncd.api.pacing_store import Held, Returning, StateStore, StoreUnavailable

log = structlog.get_logger(__name__)

T = TypeVar("T")


class Failover:
    """Health of a shared store, one for all classes of a pacer.

    While the store answers, it serves. When it fails, every call goes to the local
    store (a warning is logged once per outage), and one caller per ``retry_s`` tries
    the shared store again: a refused connection costs nothing, a dead host at most
    the client's connect timeout, paid by that one caller only. The first success
    switches back (logged once).

    The local store starts from the shared window as this host last saw it and paces
    at a share of the ceiling: ``1 / fleet_size``, or less when the shared state named
    more hosts lately (see :func:`inherit`). Back on the shared store, the grants made
    meanwhile join its window, and the share holds for ``retry_s`` and a window more:
    until the other hosts, still alone, have had their turn to come back.
    """

    def __init__(
        self,
        fleet_size: int,
        *,
        retry_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        name: str = "shared",
        event_names: tuple[str, str] = (
            events.PACER_SHARED_UNAVAILABLE, events.PACER_SHARED_RESTORED
        ),
    ) -> None:
        if fleet_size < 1:
            raise ValueError("fleet_size must be >= 1")
        self.share = 1.0 / fleet_size
        self.name = name
        # The event names of an outage and of the return.
        self._events = event_names
        self.retry_s = retry_s
        self._clock = clock
        self._lock = threading.Lock()
        self._down_since: float | None = None
        self._next_try = -math.inf
        self.outages = 0
        # When (this clock) the shared store last came back.
        self.restored_at = -math.inf
        # When the last outage began: the first failure (this clock).
        self.lost_at = -math.inf

    @property
    def mode(self) -> Literal["shared", "fallback"]:
        return "shared" if self._down_since is None else "fallback"

    def should_try(self) -> bool:
        with self._lock:
            if self._down_since is None:
                return True
            now = self._clock()
            if now < self._next_try:
                return False
            self._next_try = now + self.retry_s
            return True

    def failed(self, exc: BaseException) -> None:
        with self._lock:
            first = self._down_since is None
            now = self._clock()
            if first:
                self._down_since = now
                self.lost_at = now
                self.outages += 1
            self._next_try = now + self.retry_s
        if first:
            log.warning(
                self._events[0],
                store=self.name,
                error=type(exc).__name__,
                detail=str(exc)[:200],
                fallback_share=round(self.share, 4),
            )

    def succeeded(self) -> None:
        if self._down_since is None:
            return
        with self._lock:
            since, self._down_since = self._down_since, None
            if since is not None:
                self.restored_at = self._clock()
        if since is not None:
            log.warning(
                self._events[1],
                store=self.name,
                down_s=round(self._clock() - since, 3),
            )


class _BroughtBack(Exception):
    """Raised inside a local update that must not grant: the shared store took over."""


class FailoverStore:
    """A shared store, and the local one that serves at a share of the ceiling while
    the shared one is unreachable (see :class:`Failover`)."""

    def __init__(
        self, shared: StateStore, local: StateStore, health: Failover, cls: str, host: str
    ) -> None:
        self._shared = shared
        self._local = local
        self._health = health
        self._cls = cls
        self._host = host
        self._lock = threading.Lock()
        # The shared state as last seen: (state, its time, the local time just after).
        self._seen: tuple[ClassState, float, float] | None = None
        # The outage this class went local in, and the last one whose grants it
        # brought back to the shared store.
        self._outage = 0
        self._brought_back = 0
        self._share = health.share

    def update(self, fn: Callable[[Held], T], clock: Callable[[], float]) -> T:
        while True:
            if self._health.should_try():
                try:
                    return self._from_shared(fn, clock)
                except StoreUnavailable as exc:
                    self._health.failed(exc)
            try:
                return self._from_local(fn, clock)
            except _BroughtBack:
                continue  # the shared store is back: ask it

    def _from_shared(self, fn: Callable[[Held], T], clock: Callable[[], float]) -> T:
        health = self._health
        share = 1.0
        if health.mode == "fallback" or clock() < health.restored_at + health.retry_s + 2 * WINDOW:
            # Back from an outage: other hosts may still be pacing alone for a while.
            share = self._fallback_share()
        with self._lock:
            outage = self._outage if self._outage > self._brought_back else 0
        seen: list[tuple[ClassState, float, float]] = []

        def shared(held: Held, returning: Returning | None = None) -> T:
            held.host, held.share, held.returning = self._host, share, returning
            result = fn(held)
            seen.append((held.state.copy(), held.now, clock()))
            return result

        if not outage:
            try:
                return self._shared.update(shared, clock)
            finally:
                self._saw(seen)

        def bring_back(local: Held) -> T:
            # Under the local store's lock, so no grant of this host is made on it
            # between reading its grants and the shared store counting them.
            grants = tuple(t for t in local.state.recent if t > health.lost_at)
            returning = Returning(clock(), grants)
            try:
                result = self._shared.update(lambda held: shared(held, returning), clock)
            finally:
                self._saw(seen)
            with self._lock:
                self._brought_back = max(self._brought_back, outage)
            health.succeeded()
            return result

        return self._local.update(bring_back, clock)

    def _from_local(self, fn: Callable[[Held], T], clock: Callable[[], float]) -> T:
        health = self._health
        with self._lock:
            start = self._outage != health.outages
            inheritance = None
            if start:
                self._outage = health.outages
                self._share = self._fallback_share_locked()
                if self._seen is not None:
                    state, shared_at, seen_at = self._seen
                    inheritance = Inheritance(
                        state, seen_at - shared_at, seen_at, health.lost_at, self._share
                    )
            share = self._share
        inherited: list[int] = []

        def local(held: Held) -> T:
            with self._lock:
                back = self._brought_back >= self._outage
            if back and health.mode == "shared":
                # This host's grants went back to the shared store after this caller
                # chose the local one: one granted here now would be counted by neither.
                raise _BroughtBack
            held.share, held.inherit = share, inheritance
            result = fn(held)
            inherited.append(held.inherited)
            return result

        result = self._local.update(local, clock)
        if start:
            log.info(
                "api.pacer.fallback",
                call_class=self._cls,
                share=round(share, 4),
                inherited=inherited[-1] if inherited else 0,
                last_seen_s=None
                if inheritance is None
                else round(max(0.0, clock() - inheritance.seen_at), 3),
            )
        return result

    def _saw(self, seen: list[tuple[ClassState, float, float]]) -> None:
        if not seen:
            return
        with self._lock:
            if self._seen is None or seen[-1][1] >= self._seen[1]:
                self._seen = seen[-1]

    def _fallback_share(self) -> float:
        with self._lock:
            return self._fallback_share_locked()

    def _fallback_share_locked(self) -> float:
        """``1 / fleet_size``, or less when the shared state named more hosts lately."""
        share = self._health.share
        if self._seen is not None:
            state, shared_at, _ = self._seen
            share = min(share, 1.0 / hosts_seen(state, shared_at, self._host))
        return share

    def close(self) -> None:
        try:
            self._shared.close()
        finally:
            self._local.close()
