"""Three simulated hosts on one key (separate roots, state and pacing folders), each a
``syncd run`` daemon finding its 500 files at start, against one emulator at 20
uploads/s: with one shared Redis (``limits.shared``) beside the same three daemons
without it.

Prints, per setup: wall time from spawn until every host's mapping holds all its files,
its ratio to the floor (files / 20 per s), the emulator's busiest second per call class,
the 429s it sent (and their share: the budget is 1 per 500), and the files it holds.
Exits 1 when the shared setup misses a budget: busiest second <= each class's limit
(20 uploads, 20 reads, 10 deletes), <= 1 throttled
per 500 requests, wall <= 1.10x the floor.

    python tests/bench/bench_fleet.py [--files 1500]
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.emulator_fixture import EmulatorHandle
from tests.fleet_helpers import KEY, make_host, mapping_ids, start_reconcile
from tests.redis_fixture import RedisServer, require_redis_server

# The emulator's (and DashScope's) requests per second, per call class.
LIMITS = {"upload": 20, "read": 20, "delete": 10}


def run(
    work: Path, files: int, shared: str | None
) -> tuple[float, tuple[int, ...], int, int, int]:
    work.mkdir(parents=True)
    emu = EmulatorHandle(work / "emu", [KEY], [], work / "emu.log")
    try:
        per_host = files // 3
        cfgs = [make_host(work, f"host{i}", per_host, emu.url, shared) for i in range(3)]
        t0 = time.monotonic()
        procs = [start_reconcile(c, "run") for c in cfgs]
        try:
            pending = list(cfgs)
            while pending:
                if time.monotonic() - t0 > 1800:
                    raise SystemExit("the daemons did not map every file in 30 min")
                if any(p.poll() is not None for p in procs):
                    raise SystemExit(f"a daemon exited: {procs[0].communicate()[1][-2000:]}")
                pending = [c for c in pending if len(_mapped(c)) < per_host]
                time.sleep(0.1)
            wall = time.monotonic() - t0
        finally:
            for p in procs:
                p.send_signal(signal.SIGTERM)
            for p in procs:
                try:
                    p.communicate(timeout=30)
                except subprocess.TimeoutExpired:
                    p.kill()
        stats = emu.stats()
        return (
            wall,
            tuple(stats["max_per_second"][c] for c in LIMITS),
            sum(stats["throttled"].values()),
            sum(stats["requests"].values()),
            len(emu.files()),
        )
    finally:
        emu.stop()


def _mapped(cfg: Path) -> dict[str, str]:
    try:
        return mapping_ids(cfg)
    except (OSError, ValueError, KeyError):
        return {}  # not published yet


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
    print(f"\n{args.files} files over 3 daemons, one key, emulator at 20 uploads/s")
    print("busiest second per class: upload/read/delete")
    print(f"{'setup':<34} {'wall s':>7} {'x floor':>8} {'busiest s':>10} {'429s':>6} "
          f"{'per 500':>8} {'remote':>7}")  # fmt: skip
    limits = "/".join(str(v) for v in LIMITS.values())
    print(f"{'floor (files / 20 per s)':<34} {floor:>7.1f} {1.0:>8.3f} {limits:>10} {0:>6} "
          f"{0:>8.2f} {'':>7}")  # fmt: skip
    for name, wall, busiest, throttled, requests, remote in rows:
        each = "/".join(str(v) for v in busiest)
        print(f"{name:<34} {wall:>7.1f} {wall / floor:>8.3f} {each:>10} {throttled:>6} "
              f"{throttled * 500 / max(requests, 1):>8.2f} {remote:>7}")  # fmt: skip
    _name, wall, busiest, throttled, requests, remote = rows[0]
    missed = [what for what, ok in (
        ("a busiest second over its class's limit",
         all(b <= limit for b, limit in zip(busiest, LIMITS.values(), strict=True))),
        ("more than 1 throttled per 500 requests", throttled * 500 <= requests),
        ("wall over 1.10x the floor", wall <= 1.10 * floor),
        ("files missing or doubled on the remote", remote == args.files),
    ) if not ok]  # fmt: skip
    print("shared setup: " + ("all budgets met" if not missed else "MISSED " + "; ".join(missed)))
    raise SystemExit(1 if missed else 0)

if __name__ == "__main__":
    main()
