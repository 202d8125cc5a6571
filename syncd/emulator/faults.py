"""Seeded fault injection.

Each fault kind draws from its own RNG stream, and draws on every eligible request whatever
the rate, so with a fixed seed and a sequential client the same requests fail on every run,
and changing one knob does not reshuffle the others.
"""

from __future__ import annotations

import random
import threading

KINDS = ("drop_before", "fault_429", "fault_5xx", "status_5xx", "drop_after_store", "latency",
         "list_omit", "reject_upload", "batch_expire", "truncate_content")


class FaultDice:
    def __init__(self, seed: int | None) -> None:
        self._lock = threading.Lock()
        self.reseed(seed)

    def reseed(self, seed: int | None) -> None:
        with self._lock:
            self._rngs = {kind: random.Random(f"{seed}:{kind}") if seed is not None
                          else random.Random() for kind in KINDS}

    def roll(self, kind: str, rate: float) -> bool:
        with self._lock:
            value = self._rngs[kind].random()
        return value < rate

    def uniform(self, kind: str, low: float, high: float) -> float:
        with self._lock:
            return self._rngs[kind].uniform(low, high)

    def sample(self, kind: str, population: int, count: int) -> list[int]:
        """`count` distinct indices below `population`."""
        with self._lock:
            return self._rngs[kind].sample(range(population), count)

    def choice(self, kind: str, options: tuple[int, ...]) -> int:
        with self._lock:
            return self._rngs[kind].choice(options)
