"""FilesClient under load against the emulator: pacing limits, adaptation, faults."""

from __future__ import annotations

import multiprocessing as mp
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from syncd.api.client import upload_once
from syncd.api.errors import NotFoundError
from syncd.api.key import ApiKey
from syncd.api.options import RetryPolicy
from syncd.api.pacing import ClassState
from tests.emulator_fixture import EmulatorHandle
from tests.helpers_client import (
    assert_paced,
    make_client,
    mixed_calls,
    mixed_worker,
    run_threads,
    summarize,
    write_text_files,
)

SEED_LIMITS = {"upload": 20, "read": 20, "delete": 10}


def test_16_threads_mixed_calls_stay_within_limits(
    emulator: EmulatorHandle, tmp_path: Path
) -> None:
    threads, calls = 16, 60
    with make_client(emulator.url, emulator.api_key) as client:
        counts = run_threads(threads, lambda i: mixed_calls(client, tmp_path, i, calls))
    total = sum(counts, Counter())
    stats = emulator.stats()
    print("calls", dict(total), "emulator", summarize(stats))
    assert sum(total.values()) >= threads * calls
    assert_paced(stats, SEED_LIMITS)
    # Every call reached the server once, plus one retry per throttled request.
    assert stats["requests"]["upload"] == total["upload"] + stats["throttled"]["upload"]
    assert stats["requests"]["delete"] == total["delete"] + stats["throttled"]["delete"]
    assert emulator.files() == []


def test_adapts_to_a_provider_limit_below_the_configured_rate(
    emulator_factory: Any, tmp_path: Path
) -> None:
    emulator = emulator_factory(rate_profile="newer")  # 3 uploads/s
    paths = write_text_files(tmp_path, 150)
    started = time.monotonic()
    with make_client(emulator.url, emulator.api_key) as client:  # configured for 20/s

        def work(i: int) -> int:
            for path in paths[i::8]:
                client.upload(path, "file-extract")
            return 0

        run_threads(8, work)
        learned = client.pacer.snapshot("upload")
    wall = time.monotonic() - started
    stats = emulator.stats()
    requests, throttled = stats["requests"]["upload"], stats["throttled"]["upload"]
    print(
        f"uploads=150 requests={requests} throttled={throttled} wall={wall:.1f}s "
        f"share={throttled / requests:.1%} max/s={stats['max_per_second']['upload']}"
    )
    assert stats["mutations"]["upload"] == 150
    assert len({f["filename"] for f in emulator.files()}) == 150
    assert throttled <= 0.10 * requests
    # It found the limit, and worked at it: 150 / 3 = 50 s, with room for a busy host.
    assert learned.target is not None and 2.5 <= learned.target <= 3.5
    assert wall < 50 / 0.8


def test_random_429s_do_not_lower_the_rate(emulator_factory: Any, tmp_path: Path) -> None:
    """A provider that sheds load refuses requests at random, whatever our rate: each
    refusal costs its retry, and the shared rate stays at the ceiling, for this run
    and the next."""
    emulator = emulator_factory(fault_429=0.1, latency_ms=20)
    paths = write_text_files(tmp_path / "docs", 120)
    pacing = tmp_path / "pacing"
    started = time.monotonic()
    with make_client(emulator.url, emulator.api_key, pacing_dir=pacing) as client:

        def work(i: int) -> int:
            for path in paths[i::8]:
                client.upload(path, "file-extract")
            return 0

        run_threads(8, work)
    wall = time.monotonic() - started
    stats = emulator.stats()
    print("faults", stats["faults"], "requests", stats["requests"], f"wall={wall:.1f}s")
    assert stats["faults"]["429"] >= 5
    assert stats["mutations"]["upload"] == 120
    assert len({f["filename"] for f in emulator.files()}) == 120
    assert_paced(stats, SEED_LIMITS)
    # The next process on the same key starts at the full ceiling.
    with make_client(emulator.url, emulator.api_key, pacing_dir=pacing) as client:
        assert client.pacer.current_rate("upload") == 20
        assert client.pacer.snapshot("upload").target is None
    # 120 uploads at 20/s take 6 s; the old ratcheting pacer took minutes.
    assert wall < 6 / 0.4


def test_faults_every_upload_lands_exactly_once(emulator_factory: Any, tmp_path: Path) -> None:
    emulator = emulator_factory(fault_5xx=0.2, drop_before=0.1)
    paths = write_text_files(tmp_path, 300)
    policy = RetryPolicy(max_attempts=10, initial_backoff=0.1, max_backoff=1.0)
    with make_client(emulator.url, emulator.api_key, retry=policy) as client:

        def work(i: int) -> int:
            for path in paths[i::16]:
                upload_once(client, path, "file-extract", max_tries=12)
            return 0

        run_threads(16, work)
        remote = client.list_files()
    stats = emulator.stats()
    print(
        "faults", stats["faults"], "requests", stats["requests"], "max/s", stats["max_per_second"]
    )
    assert stats["faults"]["5xx"] > 20 and stats["faults"]["drop_before"] > 10
    assert len(remote) == 300
    assert sorted(f.filename for f in remote) == sorted(p.name for p in paths)
    assert stats["mutations"]["upload"] == 300
    assert_paced(stats, SEED_LIMITS)


def test_two_processes_share_one_budget(emulator: EmulatorHandle, tmp_path: Path) -> None:
    ctx = mp.get_context("spawn")
    start = ctx.Event()
    results: mp.Queue[dict[str, int]] = ctx.Queue()
    pacing = tmp_path / "pacing"
    procs = [
        ctx.Process(
            target=mixed_worker,
            args=(
                emulator.url,
                emulator.api_key,
                str(pacing),
                str(tmp_path),
                tag,
                6,
                10,
                start,
                results,
            ),
        )
        for tag in ("p1", "p2")
    ]
    for proc in procs:
        proc.start()
    start.set()
    done = [results.get(timeout=120) for _ in procs]
    for proc in procs:
        proc.join(timeout=30)
        assert proc.exitcode == 0
    stats = emulator.stats()
    print("processes", done, "emulator", summarize(stats))
    assert stats["mutations"]["upload"] == 120
    assert_paced(stats, SEED_LIMITS)
    # Both processes ran at once, so the shared budget is what kept them in bounds
    # (alone, each would send up to 20/s).
    assert stats["max_per_second"]["upload"] >= 12
    # An odd 429 from a bunched second did not lower the shared rate.
    fingerprint = ApiKey(emulator.api_key).fingerprint()
    for cls in ("upload", "read"):
        state = ClassState.from_json((pacing / f"{fingerprint}-{cls}.json").read_text())
        assert state.target is None, (cls, state)


def test_delete_of_unknown_id_is_not_found(emulator: EmulatorHandle) -> None:
    with make_client(emulator.url, emulator.api_key) as client, pytest.raises(NotFoundError):
        client.delete("file-fe-ffffffffffffffffffffffff")
