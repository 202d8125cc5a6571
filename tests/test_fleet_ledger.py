"""The shared quota ledger against a real redis-server: atomic admission across
hosts, leases that outlive a killed host by at most their TTL, rebasing from a
listing, and the fallback share while Redis is away."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

from syncd.api.pacing_redis import connect
from syncd.engine.ledger import LocalLedger, Quota, RedisLedger, Reservation
from tests.helpers import wait_for
from tests.redis_fixture import RedisServer, redis_server

__all__ = ["redis_server"]

GB = 1024**3


def ledger(server: RedisServer, quota: Quota, **kw: float) -> RedisLedger:
    options = {"fleet_size": 3, "lease_s": 30.0, "retry_s": 0.2, **kw}
    return RedisLedger(
        connect(server.url),
        "fp",
        quota,
        fleet_size=int(options.pop("fleet_size")),
        **options,
    )


def test_reserve_commit_release_against_the_limit(redis_server: RedisServer) -> None:
    led = ledger(redis_server, Quota.of(10, 100 * GB, headroom_files=1, headroom_bytes=0))
    try:
        led.rebase(4, 4 * GB, led.begin_listing(), set())
        held = [led.reserve(1, GB) for _ in range(5)]
        assert all(held)
        assert led.reserve(1, GB) is None  # 4 stored + 5 reserved = 9 = 10 - headroom
        assert "quota full" in led.refusal(GB)
        for res in held[:2]:
            assert res is not None
            led.commit(res, f"file-{res.id}")
        for res in held[2:]:
            assert res is not None
            led.release(res)
        usage = led.usage()
        assert usage is not None
        assert (usage.files, usage.bytes, usage.reserved_files) == (6, 6 * GB, 0)
        assert led.reserve(1, GB) and led.reserve(1, GB) and led.reserve(1, GB)
        assert led.reserve(1, GB) is None
        led.on_delete(GB)
        assert led.reserve(1, GB) is not None
    finally:
        led.close()


def test_bytes_are_counted_exactly_at_100_gb(redis_server: RedisServer) -> None:
    led = ledger(redis_server, Quota(10_000, 100 * GB))
    try:
        led.rebase(1, 100 * GB - 7, led.begin_listing(), set())
        assert led.reserve(1, 8) is None
        res = led.reserve(1, 7)
        assert res is not None
        led.commit(res, "file-x")
        usage = led.usage()
        assert usage is not None and usage.bytes == 100 * GB
    finally:
        led.close()


def test_three_hosts_racing_never_overrun(redis_server: RedisServer) -> None:
    quota = Quota(1000, 100 * GB)
    hosts = [ledger(redis_server, quota) for _ in range(3)]
    hosts[0].rebase(400, GB, hosts[0].begin_listing(), set())
    granted: list[Reservation] = []
    lock = threading.Lock()

    def host_run(led: RedisLedger) -> None:
        for i in range(300):
            res = led.reserve(1, 1000)
            if res is not None:
                led.commit(res, f"file-{res.id}-{i}")
                with lock:
                    granted.append(res)

    threads = [threading.Thread(target=host_run, args=(h,)) for h in hosts for _ in range(2)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert len(granted) == 600
        usage = hosts[1].usage()
        assert usage is not None and usage.files == 1000
    finally:
        for h in hosts:
            h.close()


def test_rebase_keeps_commits_the_listing_did_not_show(redis_server: RedisServer) -> None:
    a = ledger(redis_server, Quota(100, 100 * GB))
    b = ledger(redis_server, Quota(100, 100 * GB))
    try:
        a.rebase(10, 10, a.begin_listing(), set())
        mark = b.begin_listing()
        for name in ("shown", "unseen"):  # committed by A while B was listing
            res = a.reserve(1, 5)
            assert res is not None
            a.commit(res, f"file-{name}")
        # B's listing (begun before those commits) saw "file-shown" but not "file-unseen".
        b.rebase(11, 15, mark, {"file-shown", "foreign-1"})
        usage = b.usage()
        assert usage is not None and (usage.files, usage.bytes) == (12, 20)
    finally:
        a.close()
        b.close()


def test_live_leases_are_renewed(redis_server: RedisServer) -> None:
    led = ledger(redis_server, Quota(2, 100 * GB), lease_s=0.6)
    try:
        led.rebase(0, 0, led.begin_listing(), set())
        assert led.reserve(1, 1) and led.reserve(1, 1)
        time.sleep(1.5)  # well past the lease: a live holder keeps it
        assert led.reserve(1, 1) is None
    finally:
        led.close()


HOLDER = """
import sys, time
from syncd.api.pacing_redis import connect
from syncd.engine.ledger import Quota, RedisLedger
led = RedisLedger(connect(sys.argv[1]), "fp", Quota(5, 10**12), fleet_size=3, lease_s=1.0)
held = [led.reserve(1, 100) for _ in range(3)]
assert all(held)
print("holding", flush=True)
time.sleep(600)
"""


def test_a_host_killed_holding_reservations_frees_them(redis_server: RedisServer) -> None:
    other = ledger(redis_server, Quota(5, 10**12))
    other.rebase(2, 0, other.begin_listing(), set())
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, redis_server.url], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "holding"
        assert other.reserve(1, 100) is None  # 2 stored + 3 held by the other host
        time.sleep(1.5)  # past its lease: renewed while it lives
        assert other.reserve(1, 100) is None
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        killed = time.monotonic()
        got = wait_for(lambda: other.reserve(3, 300), timeout=10, what="the leases to expire")
        assert got is not None
        # Within the lease (1 s) plus its renewal period, not later.
        assert time.monotonic() - killed < 1.0 + 1.0 / 3 + 1.0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        other.close()


def test_redis_away_uses_a_share_of_the_free_space_then_returns(
    redis_server: RedisServer,
) -> None:
    led = ledger(redis_server, Quota(100, 100 * GB), fleet_size=4)
    try:
        led.rebase(20, 0, led.begin_listing(), set())
        assert led.mode == "shared"
        redis_server.stop()
        started = time.monotonic()
        taken = [led.reserve(1, 1) for _ in range(30)]
        assert time.monotonic() - started < 2.0  # never a stall
        assert led.mode == "fallback"
        # 80 free when Redis went away, a quarter of it for this host.
        assert sum(1 for r in taken if r is not None) == 20
        for r in taken:
            if r is not None:
                led.commit(r, f"file-{r.id}")  # no crash, counted by the next rebase
        redis_server.start()
        wait_for(
            lambda: led.reserve(1, 1) is not None and led.mode == "shared",
            timeout=10,
            what="the shared ledger to come back",
        )
    finally:
        led.close()


def test_local_ledger_admits_everything() -> None:
    led = LocalLedger()
    res = led.reserve(1, 10**15)
    assert res is not None
    led.commit(res, "file-1")
    assert led.mode == "local"


def test_close_gives_back_what_it_holds(redis_server: RedisServer) -> None:
    a = ledger(redis_server, Quota(3, 10**12), lease_s=60.0)
    b = ledger(redis_server, Quota(3, 10**12))
    try:
        a.rebase(0, 0, a.begin_listing(), set())
        assert a.reserve(3, 3) is not None
        assert b.reserve(1, 1) is None
        a.close()
        assert b.reserve(3, 3) is not None
    finally:
        b.close()
