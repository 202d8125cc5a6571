"""The byte pacer: upload bytes per second, for every caller sharing one bucket.

:class:`BytePacer` applies the bandwidth rule (:mod:`syncd.api.bandwidth`) to a byte
bucket's state in a store: memory (the threads of one process), a file in the pacing
folder (every process of this user on the host using the key), or Redis behind a
:class:`~syncd.api.pacing_failover.FailoverStore` (every host on the key; while Redis
is away, this host's share of the cap from the due time last seen). :meth:`metered`
wraps an upload body so that it is written piece by piece, each piece granted first.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import httpx

from syncd.api.bandwidth import (
    MIN_PIECE,
    carry_due,
    is_implausible_due,
    piece_bytes,
    pieces,
    reserve,
)
from syncd.api.pacing_failover import Failover, FailoverStore
from syncd.api.pacing_rules import note_host
from syncd.api.pacing_state import ClassState
from syncd.api.pacing_store import Held, StateStore

# The byte bucket's name beside the call classes' (files, Redis keys, failover logs).
BUCKET = "upload-bytes"


class BytePacer:
    """At most ``rate`` bytes per second through :meth:`take`, for every caller that
    shares ``store``. Thread-safe."""

    def __init__(
        self,
        rate: float,
        store: StateStore,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not rate > 0:
            raise ValueError("upload bytes per second must be > 0")
        self.rate = float(rate)
        self.piece = piece_bytes(self.rate)
        self._store = store
        self._clock = clock
        self._sleep = sleep
        # Bytes of small chunks (a body's multipart headers) let through unwaited, to be
        # paid with the next grant: a transaction per header would cost more than the
        # bytes. Never more than a piece, so the cap holds within a piece.
        self._owed = 0
        self._owed_lock = threading.Lock()

    def _reserve(self, n: int) -> float:
        def run(held: Held) -> float:
            state, now = held.state, held.now
            if is_implausible_due(state, now):
                state.__dict__.update(ClassState().__dict__)
            if held.inherit is not None:
                seen = held.inherit
                carry_due(state, seen.state.bytes_due, seen.shift)
            wait = reserve(state, now, n, self.rate * held.share)
            if held.host is not None:
                note_host(state, held.host, now)
            return wait

        return self._store.update(run, self._clock)

    def take(self, n: int) -> float:
        """Block until ``n`` bytes (at most one piece) may be written; the seconds waited.
        Bytes owed by small chunks are paid with them."""
        with self._owed_lock:
            n, self._owed = n + self._owed, 0
        wait = self._reserve(n)
        if wait > 0.0:
            self._sleep(wait)
        return wait

    def _small(self, n: int) -> None:
        """Let ``n`` bytes (less than a piece) through now, owed until the next grant;
        once a piece is owed, that grant is made (and waited for) here."""
        with self._owed_lock:
            self._owed += n
            due = self._owed >= self.piece
        if due:
            self.take(0)

    def metered(self, chunks: Iterator[bytes] | httpx.SyncByteStream) -> Iterator[bytes]:
        """``chunks`` cut into pieces, each yielded once its bytes are granted."""
        for chunk in chunks:
            if len(chunk) < MIN_PIECE:
                self._small(len(chunk))
                yield chunk
                continue
            if len(chunk) <= self.piece:
                self.take(len(chunk))
                yield chunk
                continue
            view = memoryview(chunk)
            at = 0
            for n in pieces(len(chunk), self.piece):
                self.take(n)
                yield bytes(view[at : at + n])
                at += n

    def share_through(self, shared: StateStore, health: Failover, host: str) -> None:
        """Keep the bucket in ``shared`` (every host on the key), this bucket's own
        store serving at ``health``'s share while it is unreachable."""
        self._store = FailoverStore(shared, self._store, health, BUCKET, host)

    def close(self) -> None:
        self._store.close()


class MeteredStream(httpx.SyncByteStream):
    """A request body written no faster than its :class:`BytePacer` grants."""

    def __init__(self, inner: httpx.SyncByteStream, pacer: BytePacer) -> None:
        self._inner = inner
        self._pacer = pacer

    def __iter__(self) -> Iterator[bytes]:
        yield from self._pacer.metered(self._inner)

    def close(self) -> None:
        self._inner.close()
