"""The pacer's state in a real redis-server: one budget for every host on the key,
Redis's clock, the shared 429 back-off, and the fallback when Redis goes away."""

from __future__ import annotations

import bisect
import socket
import threading
import time
from pathlib import Path

import pytest
import structlog

from syncd import events
from syncd.api.pacing import AdaptiveTuning, Pacer
from syncd.api.pacing_redis import check_url, connect, describe, share_pacer
from tests.helpers import wait_for
from tests.redis_fixture import RedisServer, redis_server, require_redis_server

__all__ = ["redis_server"]

CEILINGS = {"upload": 40.0, "read": 40.0, "delete": 10.0}


def max_in_window(times: list[float], window: float = 1.0) -> int:
    times = sorted(times)
    return max(
        (i - bisect.bisect_right(times, t - window) + 1 for i, t in enumerate(times)), default=0
    )


def host_pacer(server: RedisServer, fleet_size: int = 3, fingerprint: str = "fp") -> Pacer:
    """A pacer as one host builds it: its own local (memory) stores, shared through Redis."""
    pacer = Pacer(CEILINGS)
    share_pacer(pacer, connect(server.url), fingerprint, fleet_size=fleet_size, retry_s=0.2)
    return pacer


def grant_many(pacer: Pacer, count: int, out: list[float], lock: threading.Lock) -> None:
    for _ in range(count):
        at, _waited = pacer.grant("upload")
        pacer.mark_sent("upload", at)
        pacer.on_success("upload")
        with lock:
            out.append(at)


def test_hosts_share_one_budget_on_redis_time(redis_server: RedisServer) -> None:
    hosts = [host_pacer(redis_server) for _ in range(3)]
    grants: list[float] = []
    lock = threading.Lock()
    threads = [
        threading.Thread(target=grant_many, args=(p, 30, grants, lock))
        for p in hosts
        for _ in range(3)
    ]
    started = time.time()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(grants) == 270
    # Grant times are Redis's TIME (wall clock of the server), not a host's monotonic clock.
    assert abs(min(grants) - started) < 5.0
    # The rule holds across hosts exactly, in the common clock: never more than the
    # ceiling in any second (without sharing, three hosts would grant 3x).
    assert max_in_window(grants) <= CEILINGS["upload"]
    # ... and the budget is used: 270 grants at 40/s take about 6.5 s, not 3x that.
    assert max(grants) - min(grants) < 270 / 40 * 1.5
    assert all(p.sharing == "shared" for p in hosts)


def test_one_hosts_429s_slow_every_host(redis_server: RedisServer) -> None:
    a, b = host_pacer(redis_server), host_pacer(redis_server)
    assert b.current_rate("upload") == CEILINGS["upload"]
    for _ in range(AdaptiveTuning().evidence_needed):
        at, _ = a.grant("upload")
        a.mark_sent("upload", at)
        a.on_throttled("upload")
    assert b.current_rate("upload") < CEILINGS["upload"]
    state = b.snapshot("upload")
    assert state.target is not None and state.paused_until > max(state.recent)


def test_redis_gone_falls_back_to_a_share_and_comes_back(redis_server: RedisServer) -> None:
    pacer = host_pacer(redis_server, fleet_size=4)
    pacer.acquire("upload")
    assert pacer.sharing == "shared"
    redis_server.stop()
    with structlog.testing.capture_logs() as logs:
        started = time.monotonic()
        local: list[float] = []
        while time.monotonic() - started < 2.0:
            pacer.acquire("upload")
            local.append(time.monotonic())
    assert pacer.sharing == "fallback"
    # Never a stall, never a crash: grants go on at ceiling / fleet_size (10/s here).
    assert len(local) >= 10
    assert max_in_window(local) <= CEILINGS["upload"] / 4 + 1
    warned = [e for e in logs if e["event"] == events.PACER_SHARED_UNAVAILABLE]
    assert len(warned) == 1, logs
    redis_server.start()
    wait_for(
        lambda: pacer.acquire("upload") is not None and pacer.sharing == "shared",
        timeout=10,
        what="shared pacing to resume",
    )
    assert redis_server.client().exists("syncd:fp:pacing:upload")


def test_unreachable_at_start_is_a_fallback_not_an_error() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        url = f"redis://127.0.0.1:{s.getsockname()[1]}/0"
    pacer = Pacer(CEILINGS)
    share_pacer(pacer, connect(url), "fp", fleet_size=2)
    started = time.monotonic()
    for _ in range(5):
        pacer.acquire("read")
    assert pacer.sharing == "fallback"
    assert time.monotonic() - started < 2.0


def test_password_from_a_file_and_never_shown(tmp_path: Path) -> None:
    binary = require_redis_server()
    secret = "s3cret-redis-pass"
    server = RedisServer(binary, tmp_path, password=secret)
    try:
        bare = f"redis://127.0.0.1:{server.port}/0"
        good = tmp_path / "redis.pass"
        good.write_text(secret + "\n")
        pacer = Pacer(CEILINGS)
        share_pacer(pacer, connect(bare, password_file=good), "fp", fleet_size=2, url=server.url)
        pacer.acquire("upload")
        assert pacer.sharing == "shared"
        assert secret not in describe(server.url)

        bad = tmp_path / "wrong.pass"
        bad.write_text("nope")
        refused = Pacer(CEILINGS)
        with structlog.testing.capture_logs() as logs:
            share_pacer(
                refused, connect(bare, password_file=bad), "fp", fleet_size=2, url=server.url
            )
            refused.acquire("upload")
        assert refused.sharing == "fallback"
        assert logs and secret not in repr(logs)
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("redis://10.0.0.5:6379/0", True),
        ("rediss://:pw@cache.example:6380/2", True),
        ("unix:///run/redis/redis.sock", True),
        ("http://10.0.0.5:6379", False),
        ("redis://", False),
        ("10.0.0.5:6379", False),
    ],
)
def test_url_check(url: str, ok: bool) -> None:
    problem = check_url(url)
    assert (problem is None) == ok
    if problem:
        assert url not in problem


def test_describe_drops_credentials() -> None:
    assert describe("rediss://user:pw@cache.example:6380/2") == "rediss://cache.example:6380/2"
