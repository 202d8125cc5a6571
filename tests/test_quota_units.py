"""Why a file waits for account space names sizes in binary units, as every size syncd shows."""

from __future__ import annotations

from syncd.api.pacing_redis import connect
from syncd.engine.ledger import Quota, RedisLedger
from tests.redis_fixture import RedisServer, redis_server

__all__ = ["redis_server"]

GIB = 1024**3


def test_the_shared_ledger_refusal_shows_sizes_in_binary_units(
    redis_server: RedisServer,
) -> None:
    led = RedisLedger(connect(redis_server.url), "fp", Quota(10, 100 * GIB), fleet_size=2)
    try:
        led.rebase(3, 100 * GIB - 1536, led.begin_listing(), set())
        assert led.reserve(1, 5 * GIB) is None
        why = led.refusal(5 * GIB)
        assert "3/10 files" in why
        assert "100.0 GiB of 100.0 GiB stored or reserved" in why
        assert "(5.0 GiB needed)" in why
        assert str(100 * GIB - 1536) not in why and str(5 * GIB) not in why
    finally:
        led.close()
