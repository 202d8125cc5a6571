"""Files waiting for account space go up as soon as the daemon frees some."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from syncd.daemon.worker import Worker
from syncd.engine.sync import Syncer
from tests.emulator_fixture import EmulatorHandle
from tests.engine_helpers import account_files, fast_emulator, read_mapping, write_config
from tests.helpers import wait_for
from tests.test_daemon_move import daemon

__all__ = ["daemon"]  # the fixture, shared with the move tests

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux daemon")

QUOTA = 6


def synced(mapping_path: Path) -> set[str]:
    try:
        return set(read_mapping(mapping_path))
    except (OSError, ValueError, KeyError):
        return set()


def test_files_waiting_for_space_go_up_when_a_delete_frees_it(
    tmp_path: Path,
    emulator_factory: Callable[..., EmulatorHandle],
    daemon: Callable[[Path, str], subprocess.Popen[bytes]],
) -> None:
    emulator = fast_emulator(emulator_factory, max_files=QUOTA)
    root = tmp_path / "root"
    root.mkdir()
    for i in range(QUOTA + 2):
        (root / f"q{i}.txt").write_text(f"q {i}\n")
    config = write_config(
        tmp_path, root, emulator,
        limits={"max_files": QUOTA},
        sync={"settle_s": 0.3, "max_settle_s": 5},
        daemon={"publish_interval_s": 0.5, "shutdown_timeout_s": 8},
    )
    mapping_path = tmp_path / "mapping.json"
    daemon(config, emulator.api_key)  # returns caught up: the account is full
    first = wait_for(lambda: synced(mapping_path), what="the catch-up's mapping")
    assert len(first) == QUOTA and account_files(emulator) == QUOTA
    waiting = {p.name for p in root.iterdir()} - first

    freed = sorted(first)[:2]
    for name in freed:
        (root / name).unlink()
    # Well before any scheduled reconcile (hourly): the delete's own run frees the space.
    wait_for(
        lambda: synced(mapping_path) == (first - set(freed)) | waiting,
        30,
        what=f"{sorted(waiting)} uploaded once {freed} were deleted",
    )
    assert account_files(emulator) == QUOTA


@pytest.fixture
def worker_on() -> Iterator[Callable[[Syncer, float], Worker]]:
    """A daemon's worker thread on ``syncer``, in this process, stopped at the end."""
    started: list[tuple[Worker, threading.Event]] = []

    def start(syncer: Syncer, quota_recheck_s: float) -> Worker:
        stop = threading.Event()
        worker = Worker(
            syncer.config, syncer, stop=stop, wake=lambda: None, quota_recheck_s=quota_recheck_s
        )
        started.append((worker, stop))
        worker.start()
        wait_for(worker.caught_up.is_set, 60, what="the worker's catch-up")
        return worker

    yield start
    for worker, stop in started:
        stop.set()
        worker.syncer.stop_soon()
        worker.nudge()
        worker.watcher.stop()
        worker.join(15)


def foreign_upload(emulator: EmulatorHandle, name: str) -> str:
    """A file put on the account by someone else (another tool, another project)."""
    response = httpx.post(
        f"{emulator.url}/files",
        headers={"Authorization": f"Bearer {emulator.api_key}"},
        data={"purpose": "file-extract"},
        files={"file": (name, b"not ours\n")},
        timeout=30,
    )
    response.raise_for_status()
    file_id: str = response.json()["id"]
    return file_id


def test_space_freed_by_someone_else_is_seen_while_files_wait(
    tmp_path: Path,
    emulator_factory: Callable[..., EmulatorHandle],
    syncer_on: Callable[..., Syncer],
    worker_on: Callable[[Syncer, float], Worker],
) -> None:
    emulator = fast_emulator(emulator_factory, max_files=5)
    foreign = foreign_upload(emulator, "foreign.txt")
    root = tmp_path / "root"
    root.mkdir()
    for i in range(5):
        (root / f"f{i}.txt").write_text(f"f {i}\n")
    syncer = syncer_on(
        emulator, root,
        limits={"max_files": 5},
        sync={"settle_s": 0.2, "max_settle_s": 2},
        daemon={"publish_interval_s": 0.2},
    )  # fmt: skip
    mapping_path = tmp_path / "mapping.json"
    recheck_s = 0.5
    worker = worker_on(syncer, recheck_s)
    first = wait_for(lambda: synced(mapping_path), what="the catch-up's mapping")
    assert len(first) == 4 and syncer.waiting_for_space() == ["f4.txt"]

    # Freed by someone else: no delete of the daemon's own tells it.
    httpx.delete(
        f"{emulator.url}/files/{foreign}",
        headers={"Authorization": f"Bearer {emulator.api_key}"},
        timeout=30,
    ).raise_for_status()
    # Within about one recheck interval (budget for a busy machine; the scheduled
    # reconcile is an hour away).
    wait_for(
        lambda: len(synced(mapping_path)) == 5,
        recheck_s + 20,
        what="f4.txt uploaded once the foreign file was deleted",
    )
    assert {f["filename"] for f in emulator.files()} == {f"f{i}.txt" for i in range(5)}
    assert syncer.waiting_for_space() == []

    # Nothing waits any more: the account is not listed again (no rescan), however
    # many recheck intervals pass, while the daemon syncs other changes or idles.
    rescans = worker.rescans
    (root / "f0.txt").unlink()
    wait_for(lambda: "f0.txt" not in synced(mapping_path), 20, what="f0.txt deleted")
    (root / "f0.txt").write_text("f 0 again\n")
    wait_for(lambda: "f0.txt" in synced(mapping_path), 20, what="f0.txt uploaded again")
    with pytest.raises(AssertionError, match="timed out"):
        wait_for(lambda: worker.rescans > rescans, 4 * recheck_s, what="a rescan")


def test_a_file_that_cannot_fit_is_looked_at_less_and_less_often(
    tmp_path: Path,
    emulator_factory: Callable[..., EmulatorHandle],
    syncer_on: Callable[..., Syncer],
    worker_on: Callable[[Syncer, float], Worker],
) -> None:
    """A file larger than the whole account's free space waits for days: the account is
    listed again each time twice as late (not every interval), and still listed."""
    emulator = fast_emulator(emulator_factory)
    root = tmp_path / "root"
    root.mkdir()
    (root / "small.txt").write_text("fits\n")
    (root / "huge.txt").write_text("x" * 5000)
    syncer = syncer_on(emulator, root, limits={"max_bytes": 1000},
                       sync={"settle_s": 0.2, "max_settle_s": 2})  # fmt: skip
    recheck_s = 1.0
    worker = worker_on(syncer, recheck_s)
    wait_for(lambda: syncer.waiting_for_space() == ["huge.txt"], 30, what="huge.txt waiting")
    start = worker.rescans
    wait_for(lambda: worker.rescans >= start + 2, 30, what="the account listed again")
    counted = worker.rescans
    # At a fixed 1 s, the next 10 s would bring some 8 listings; doubling (2, 4, 8 s...)
    # brings 2, and a slow machine fewer.
    with pytest.raises(AssertionError, match="timed out"):
        wait_for(lambda: worker.rescans > counted + 4, 10.0, what="a listing every interval")
