"""Three simulated hosts (separate roots, state and pacing folders) on one key and
one Redis: the account's rate limit holds across them, and a Redis outage mid-run
neither crashes them nor loses or duplicates a file."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from syncd import events
from tests.emulator_fixture import EmulatorHandle
from tests.fleet_helpers import KEY, make_host, mapping_ids, start_reconcile
from tests.helpers import wait_for
from tests.redis_fixture import RedisServer, redis_server

__all__ = ["redis_server"]

FILES = 150
LIMIT = 20


@pytest.fixture
def emu(tmp_path: Path) -> EmulatorHandle:
    handle = EmulatorHandle(tmp_path / "emu", [KEY], [], tmp_path / "emu.log")
    yield handle  # type: ignore[misc]
    handle.stop()


def run_fleet(cfgs: list[Path], during: object = None) -> list[tuple[int, str]]:
    procs = [start_reconcile(c) for c in cfgs]
    if callable(during):
        during()
    out = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=240)
        out.append((p.returncode, stdout + stderr))
    return out


def check_everything_once(emu: EmulatorHandle, cfgs: list[Path]) -> None:
    """Every file of every host is on the remote exactly once and in its mapping."""
    names = Counter(f["filename"] for f in emu.files())
    assert len(names) == 3 * FILES
    assert max(names.values()) == 1, [n for n, c in names.items() if c > 1][:5]
    remote_ids = {f["id"] for f in emu.files()}
    for cfg in cfgs:
        ids = mapping_ids(cfg)
        assert len(ids) == FILES
        assert set(ids.values()) <= remote_ids


def test_three_hosts_share_the_account_rate(
    tmp_path: Path, emu: EmulatorHandle, redis_server: RedisServer
) -> None:
    cfgs = [make_host(tmp_path, f"host{i}", FILES, emu.url, redis_server.url) for i in range(3)]
    results = run_fleet(cfgs)
    for code, output in results:
        assert code == 0, output[-3000:]
    stats = emu.stats()
    # Loaded 2-core machine allowance: the pacer promises <= 1.5x + 1 in the busiest second.
    assert stats["max_per_second"]["upload"] < LIMIT * 2, stats
    assert stats["throttled"]["upload"] <= max(1, 3 * FILES // 20), stats
    check_everything_once(emu, cfgs)


def test_redis_stopped_mid_run_then_back(
    tmp_path: Path, emu: EmulatorHandle, redis_server: RedisServer
) -> None:
    cfgs = [make_host(tmp_path, f"host{i}", FILES, emu.url, redis_server.url) for i in range(3)]

    def outage() -> None:
        wait_for(lambda: len(emu.files()) >= 60, timeout=60, what="uploads to start")
        redis_server.stop()
        stopped_at = len(emu.files())
        # Uploads go on at the fallback share while Redis is away.
        wait_for(lambda: len(emu.files()) >= stopped_at + 30, timeout=60, what="fallback uploads")
        redis_server.start()

    results = run_fleet(cfgs, outage)
    for code, output in results:
        assert code == 0, output[-3000:]
    logs = "\n".join(o for _c, o in results)
    assert events.PACER_SHARED_UNAVAILABLE in logs
    assert events.PACER_SHARED_RESTORED in logs
    check_everything_once(emu, cfgs)
    # Shared pacing came back: the state is in the restarted Redis again.
    keys = [k.decode() for k in redis_server.client().keys("syncd:*:pacing:upload")]
    assert keys, "no pacing state written after Redis came back"
