"""The bandwidth rule: when the next piece of an upload body may be written.

A byte bucket is a token bucket whose tokens are bytes, kept here in its virtual
scheduling form (the GCRA of ATM networks): the state is one time, ``bytes_due``,
the moment the bytes granted so far would have left at the cap. A request for ``n``
bytes gets the slot that starts at ``bytes_due`` (or ``burst_s`` before now, after an
idle spell) and lasts ``n / rate``; the caller waits until the slot starts, then
writes. Slots never overlap, so in any window of ``W`` seconds the bytes granted are
at most ``rate * (W + burst_s)`` plus one piece, whoever asked for them.

Slots are handed out in the order they are asked for, one piece at a time: a big
upload asks for its next piece only once it has written the last one, so a small
upload that asks meanwhile gets the slot in between instead of waiting behind the
whole big one. Pieces are :func:`piece_bytes` long (a fiftieth of a second at the
cap, 4 KiB to 256 KiB), so the wait a piece costs others stays short, and a grant
(one transaction of the store) is paid per piece, not per chunk of a body.

Pure functions of a :class:`~syncd.api.pacing_state.ClassState` (its ``bytes_due``)
and an injected clock reading, like :mod:`syncd.api.pacing_rules`; the same stores
keep the state (:mod:`syncd.api.pacing_store`, Redis through
:mod:`syncd.api.pacing_failover`), so every worker and every process on the host
using the key share one cap, and with ``limits.shared`` every host.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

from syncd.api.pacing_state import ClassState

# Credit a bucket idle for a while may spend at once: a burst this long at the cap.
# It is also how late a writer may wake (a busy machine) before the cap's time is lost
# rather than made up; short enough that any 10 s window stays within 2 % of the cap.
BURST_S = 0.2
# Pieces: this many per second at the cap, within these bounds.
PIECES_PER_S = 50
MIN_PIECE = 4 * 1024
MAX_PIECE = 256 * 1024
# A due time further ahead than this was not set by us (no queue of pieces is that
# long at the lowest cap): the state is reset rather than obeyed.
MAX_AHEAD_S = 3600.0


def piece_bytes(rate: float) -> int:
    """How many bytes one grant covers at ``rate`` bytes per second."""
    return int(min(MAX_PIECE, max(MIN_PIECE, rate / PIECES_PER_S)))


def pieces(n: int, piece: int) -> Iterator[int]:
    """``n`` bytes as grants of at most ``piece`` bytes each."""
    while n > 0:
        yield min(n, piece)
        n -= piece


def is_implausible_due(state: ClassState, now: float) -> bool:
    """True for a due time that must be reset: not a number, or absurdly far ahead (it
    predates a reboot, or was tampered with)."""
    due = state.bytes_due
    if due == -math.inf:
        return False
    return not math.isfinite(due) or due > now + MAX_AHEAD_S


def reserve(
    state: ClassState, now: float, n: int, rate: float, burst_s: float = BURST_S
) -> float:
    """Grant ``n`` bytes at ``rate`` bytes per second: the seconds to wait before
    writing them (0.0: at once). The grant is made now, whatever the wait."""
    if n <= 0:
        return 0.0
    if not rate > 0.0:
        raise ValueError("rate must be > 0")
    if is_implausible_due(state, now):
        state.bytes_due = -math.inf
    start = max(state.bytes_due, now - burst_s)
    state.bytes_due = start + n / rate
    return max(0.0, start - now)


def carry_due(state: ClassState, theirs: float, shift: float) -> None:
    """Start a local bucket from a shared one last seen (its ``bytes_due`` on the
    shared clock; shared time + ``shift`` = local time): what the fleet had granted
    ahead is still ahead."""
    if math.isfinite(theirs):
        state.bytes_due = max(state.bytes_due, theirs + shift)
