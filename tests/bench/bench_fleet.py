"""Three simulated hosts on one key (separate roots, state and pacing folders), 1,500
files at once, against one emulator at 20 uploads/s: with one shared Redis
(``limits.shared``) beside the same three hosts without it.

Prints, per setup: wall time and its ratio to the floor (files / 20 per s), the
emulator's busiest second for uploads, and the 429s it sent.

    python tests/bench/bench_fleet.py [--files 1500]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.emulator_fixture import EmulatorHandle
from tests.fleet_helpers import KEY, make_host, start_reconcile
from tests.redis_fixture import RedisServer, require_redis_server


def run(work: Path, files: int, shared: str | None) -> tuple[float, int, int, int]:
    work.mkdir(parents=True)
    emu = EmulatorHandle(work / "emu", [KEY], [], work / "emu.log")
    try:
        per_host = files // 3
        cfgs = [make_host(work, f"host{i}", per_host, emu.url, shared) for i in range(3)]
        t0 = time.monotonic()
        procs = [start_reconcile(c) for c in cfgs]
        for p in procs:
            p.communicate(timeout=3600)
        wall = time.monotonic() - t0
        stats = emu.stats()
        return (
            wall,
            stats["max_per_second"]["upload"],
            stats["throttled"]["upload"],
            len(emu.files()),
        )
    finally:
        emu.stop()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=1500)
    args = ap.parse_args()
    floor = args.files / 20
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "redis").mkdir()
        server = RedisServer(require_redis_server(), Path(tmp) / "redis")
        try:
            rows.append(("3 hosts, limits.shared (Redis)",
                         *run(Path(tmp) / "shared", args.files, server.url)))  # fmt: skip
        finally:
            server.stop()
        rows.append(("3 hosts, each pacing alone", *run(Path(tmp) / "alone", args.files, None)))
    print(f"\n{args.files} files over 3 hosts, one key, emulator at 20 uploads/s")
    print(f"{'setup':<34} {'wall s':>7} {'x floor':>8} {'busiest s':>10} {'429s':>6} {'remote':>7}")
    print(f"{'floor (files / 20 per s)':<34} {floor:>7.1f} {1.0:>8.3f} {20:>10} {0:>6} {'':>7}")
    for name, wall, busiest, throttled, remote in rows:
        print(f"{name:<34} {wall:>7.1f} {wall / floor:>8.3f} {busiest:>10} {throttled:>6} "
              f"{remote:>7}")  # fmt: skip


if __name__ == "__main__":
    main()
