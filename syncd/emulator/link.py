"""A shaped link: request bodies are read no faster than ``--bandwidth`` bytes a second.

One link for the whole server, as a real uplink is shared by every connection over
it: two uploads at once each get about half. Each chunk of a body read takes its slot
on the link (after the slots already taken) and is let through once the link would
have carried it; until then the body is not read further, so the connection's buffers
fill and the sender is held back by TCP itself, as on a slow link. Without a bandwidth
the link costs nothing. Either way it counts the bytes it let through (``received``,
in ``/_emulator/stats`` as ``upload_body_bytes``): what a client sent, as it arrived.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

# Credit an idle link may spend at once (a link's buffers), as seconds at its rate.
BURST_S = 0.02
# Shorter waits are gathered into the next: a sleep per small chunk would cost more
# CPU than the waits are worth, and the average rate is the same.
MIN_SLEEP_S = 0.002


class Link:
    """The server's receive side at ``bandwidth`` bytes a second (0: unshaped).
    Used from the event loop only (no locks needed)."""

    def __init__(self, bandwidth: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.bandwidth = float(bandwidth)
        self._clock = clock
        # When the bytes let through so far would have been carried at the rate.
        self._due = -float("inf")
        self.received = 0

    async def carried(self, n: int) -> None:
        """Wait until ``n`` more bytes would have come over the link."""
        self.received += n
        if self.bandwidth <= 0 or n <= 0:
            return
        now = self._clock()
        self._due = max(self._due, now - BURST_S) + n / self.bandwidth
        wait = self._due - now
        if wait >= MIN_SLEEP_S:
            await asyncio.sleep(wait)
