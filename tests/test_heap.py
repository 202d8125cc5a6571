"""The daemon gives the memory a run freed back to the system when it goes idle."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# In a fresh interpreter: 100 MB in 2 KB blocks (glibc's heap, not CPython's arenas),
# one block kept above them so the heap's top cannot shrink on its own, all but that
# one freed: the pages stay in the process until they are released.
PROBE = """
import sys
from syncd.daemon.heap import release_free_memory

def rss_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024

blocks = [bytes(2048) + bytes([i % 256]) for i in range(50_000)]
pin = bytes(2048) + b"pin"
del blocks
before = rss_mb()
release_free_memory()
print(before, rss_mb())
"""


def test_freed_heap_goes_back_to_the_system() -> None:
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=REPO, capture_output=True,
                         text=True, check=True, timeout=60).stdout  # fmt: skip
    before, after = map(float, out.split())
    assert before - after >= 50, (before, after)
