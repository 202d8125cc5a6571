"""What shared pacing costs: the round trip of one grant against a local redis-server.

Starts its own redis-server on a free loopback port and times ``Pacer.grant`` +
``mark_sent`` + ``on_success`` (what one request costs in Redis) at a real ceiling
(50/s), less the time the grant spent waiting for its slot: the figures are the
store's cost only, on a state as full as a busy second makes it. Beside it, the
same through the host-local file store.

    python tests/bench/bench_fleet_grant.py [--grants 300]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from syncd.api.pacing import Pacer
from syncd.api.pacing_redis import connect, share_pacer
from tests.redis_fixture import RedisServer, require_redis_server

FAST = {"upload": 50.0, "read": 50.0, "delete": 50.0}


def timed(pacer: Pacer, n: int) -> tuple[list[float], list[float]]:
    grants, whole = [], []
    for _ in range(n):
        t0 = time.perf_counter()
        at, waited = pacer.grant("upload")
        t1 = time.perf_counter() - waited
        pacer.mark_sent("upload", at)
        pacer.on_success("upload")
        t2 = time.perf_counter() - waited
        grants.append((t1 - t0) * 1000)
        whole.append((t2 - t0) * 1000)
    return grants, whole


def p(values: list[float], q: float) -> float:
    return sorted(values)[min(len(values) - 1, int(q * len(values)))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--grants", type=int, default=300)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(require_redis_server(), Path(tmp))
        try:
            shared = Pacer(FAST)
            share_pacer(shared, connect(server.url), "bench", fleet_size=3)
            local = Pacer(FAST, state_dir=Path(tmp) / "pacing", key_fingerprint="bench")
            rows = [("redis (limits.shared)", *timed(shared, args.grants))]
            rows.append(("file store (one host)", *timed(local, args.grants)))
            local.close()
        finally:
            server.stop()
    print(f"\n{args.grants} requests, one thread, redis-server on loopback")
    print(f"{'store':<24} {'grant p50 ms':>13} {'grant p99 ms':>13} {'request p50 ms':>15} "
          f"{'request p99 ms':>15}")  # fmt: skip
    for name, grants, whole in rows:
        print(f"{name:<24} {statistics.median(grants):>13.3f} {p(grants, 0.99):>13.3f} "
              f"{statistics.median(whole):>15.3f} {p(whole, 0.99):>15.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
