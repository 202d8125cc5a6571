"""A response that trickles in times out as a whole, and Ctrl-C cuts calls short on
every thread: httpx bounds each read, not a response, and a one-off command's calls
run on worker threads that the main thread's KeyboardInterrupt never reaches."""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from syncd.api.errors import AmbiguousUploadError, APIError, NetworkError
from syncd.api.options import RetryPolicy, Timeouts
from syncd.exitcodes import ExitCode
from tests.emulator_fixture import EmulatorHandle
from tests.engine_helpers import (
    assert_converged,
    build_flat_tree,
    fast_emulator,
    reconcile,
    spawn_reconcile,
    write_config,
)
from tests.helpers import wait_for
from tests.helpers_client import make_client, write_text_files

KEY = "sk-deadline-test-key-0123456789"
# Generous for a loaded machine, far below what a trickled response takes (minutes).
BUDGET_S = 45.0


def _outcome(fn: Callable[[], Any], budget: float) -> tuple[Any, float]:
    """What ``fn`` returned or raised, and after how long; fails if it is still running
    after ``budget`` seconds (it is left on a daemon thread)."""
    result: list[Any] = []

    def run() -> None:
        try:
            result.append(fn())
        except Exception as exc:
            result.append(exc)

    started = time.monotonic()
    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(budget)
    if worker.is_alive():
        pytest.fail(f"the call was still running after {budget:g} s")
    return result[0], time.monotonic() - started


def test_a_trickling_response_times_out_as_a_whole(
    emulator_factory: Callable[..., EmulatorHandle], tmp_path: Path
) -> None:
    """A listing of five files (about 900 bytes) sent at 4 bytes/s: every read gets a
    byte well within the 2 s read timeout, yet the call ends at twice that after the
    request. An upload whose response trickles is ambiguous at its deadline."""
    emu = emulator_factory(api_key=[KEY])
    paths = write_text_files(tmp_path, 6)
    one_try = RetryPolicy(max_attempts=1)
    with make_client(emu.url, KEY, retry=one_try, timeouts=Timeouts(read=2.0)) as client:
        for path in paths[:5]:
            client.upload(path, "file-extract")
        emu.configure(fault_trickle_list=4, fault_trickle_upload=4)

        listed, took = _outcome(client.list_files, BUDGET_S)
        assert isinstance(listed, NetworkError), listed
        assert listed.phase == "receive"
        assert "did not complete within 4 s" in listed.message, listed.message
        assert took < BUDGET_S

        uploaded, _ = _outcome(lambda: client.upload(paths[5], "file-extract"), BUDGET_S)
        assert isinstance(uploaded, AmbiguousUploadError), uploaded
        assert "did not complete within 4 s" in uploaded.message, uploaded.message
    # Stored, but its response never came in full: the caller looks for it.
    assert len(emu.truth_files(KEY)) == 6


def test_a_set_response_bound_wins_over_the_derived_one(
    emulator_factory: Callable[..., EmulatorHandle], tmp_path: Path
) -> None:
    emu = emulator_factory(api_key=[KEY])
    (path,) = write_text_files(tmp_path, 1)
    timeouts = Timeouts(read=30.0, response=1.0)
    with make_client(emu.url, KEY, retry=RetryPolicy(max_attempts=1), timeouts=timeouts) as client:
        client.upload(path, "file-extract")
        emu.configure(fault_trickle_list=2)
        listed, _ = _outcome(client.list_files, BUDGET_S)
    assert isinstance(listed, NetworkError) and "within 1 s" in listed.message, listed


def test_ctrl_c_cuts_short_the_calls_on_worker_threads(
    emulator_factory: Callable[..., EmulatorHandle], tmp_path: Path
) -> None:
    """Uploads whose responses trickle in, on the run's worker threads: SIGINT ends the
    run at once as interrupted, and the next run adopts what they stored (nothing is
    lost or uploaded twice)."""
    emu = fast_emulator(emulator_factory, api_key=[KEY])
    project = tmp_path / "project"
    project.mkdir()
    root = tmp_path / "root"
    paths = build_flat_tree(root, 6)
    cfg = write_config(project, root, emu, limits={"workers": 4})
    emu.configure(fault_trickle_upload=1)
    proc = spawn_reconcile(cfg, KEY, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        # Stored, their responses coming in a byte a second.
        wait_for(lambda: emu.stats()["mutations"]["upload"] >= 2, timeout=60,
                 what="uploads to be stored")  # fmt: skip
        proc.send_signal(signal.SIGINT)
        try:
            _out, err = proc.communicate(timeout=BUDGET_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"reconcile was still running {BUDGET_S:g} s after SIGINT")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == ExitCode.INTERRUPTED, err
    assert b"interrupted" in err, err

    emu.configure(fault_trickle_upload=0)
    again = reconcile(cfg, KEY)
    assert again.returncode == 0, again.output
    assert_converged(emu, root, project / "mapping.json", paths)


def test_a_cancelled_client_sends_nothing_more(
    emulator_factory: Callable[..., EmulatorHandle], tmp_path: Path
) -> None:
    """cancel() from another thread ends a call blocked on a trickling response at once,
    and later calls fail without a request."""
    emu = emulator_factory(api_key=[KEY])
    (path,) = write_text_files(tmp_path, 1)
    with make_client(emu.url, KEY, retry=RetryPolicy(max_attempts=1)) as client:
        client.upload(path, "file-extract")
        emu.configure(fault_trickle_list=1)
        timer = threading.Timer(1.0, client.cancel)
        timer.start()
        listed, took = _outcome(client.list_files, BUDGET_S)
        timer.join()
        assert isinstance(listed, NetworkError) and "cancelled" in listed.message, listed
        emu.reset_stats()
        again, _ = _outcome(client.list_files, BUDGET_S)
        assert isinstance(again, APIError) and "cancelled" in again.message, again
        assert emu.stats()["requests"]["read"] == 0
    assert took < BUDGET_S
