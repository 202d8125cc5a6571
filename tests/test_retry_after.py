"""Retry-After on a 429 is obeyed exactly up to RetryPolicy.max_hint_wait; a longer one
fails the call at once with a typed "rate limited: retry after N s" error, and nothing
of that class is sent before the time."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from syncd.api import errors
from syncd.api.errors import RateLimitedError
from syncd.exitcodes import ExitCode
from tests.emulator_fixture import EmulatorHandle
from tests.engine_helpers import build_flat_tree, run_syncd, write_config
from tests.helpers import wait_for
from tests.helpers_client import make_client, write_text_files

KEY = "sk-retry-after-key-0123456789"


def test_a_retry_after_past_what_a_call_waits_fails_it_and_holds_the_class(
    emulator_factory: Callable[..., EmulatorHandle], tmp_path: Path
) -> None:
    emu = emulator_factory(api_key=[KEY], fault_429=1.0, fault_429_retry_after=3600)
    (path,) = write_text_files(tmp_path, 1)
    with make_client(emu.url, KEY) as client:
        started = time.monotonic()
        with pytest.raises(RateLimitedError) as caught:
            client.list_files()
        assert time.monotonic() - started < 30
        error = caught.value
        assert type(error).__name__ == "RetryLaterError"
        assert isinstance(error, errors.RetryLaterError)
        assert error.retry_after == 3600 and error.status == 429
        assert "retry after 3600 s" in str(error), str(error)
        assert emu.stats()["requests"]["read"] == 1  # not retried

        # The provider would answer now, but it asked for an hour: nothing is sent.
        emu.configure(fault_429=0.0)
        emu.reset_stats()
        with pytest.raises(RateLimitedError) as held:
            client.retrieve("file-fe-000000000000000000000000")
        assert type(held.value).__name__ == "RetryLaterError"
        assert 3500 < (held.value.retry_after or 0) <= 3600
        assert "retry after" in str(held.value)
        assert emu.stats()["requests"]["read"] == 0
        # Another call class is not held.
        client.upload(path, "file-extract")
    assert len(emu.truth_files(KEY)) == 1


def test_a_short_retry_after_is_waited_out_by_every_call_of_the_class(
    emulator_factory: Callable[..., EmulatorHandle],
) -> None:
    """A 2 s hint: the call that got it retries after it, and a call of the same class
    on another thread, started meanwhile, is not sent before it either."""
    emu = emulator_factory(api_key=[KEY], fault_429=1.0, fault_429_retry_after=2)
    with make_client(emu.url, KEY) as client, ThreadPoolExecutor(1) as pool:
        started = time.monotonic()
        first = pool.submit(client.list_files)
        wait_for(lambda: emu.stats()["faults"]["429"] >= 1, timeout=30, what="the first 429")
        emu.configure(fault_429=0.0)
        assert client.list_files() == []
        second_done = time.monotonic()
        assert first.result(timeout=60) == []
        first_done = time.monotonic()
    # The hint was given at `started` or later: neither call went before it passed.
    assert second_done - started >= 1.95
    assert first_done - started >= 1.95
    assert emu.stats()["faults"]["429"] == 1


def test_one_off_commands_say_rate_limited_not_unreachable(
    emulator_factory: Callable[..., EmulatorHandle], tmp_path: Path
) -> None:
    emu = emulator_factory(api_key=[KEY], fault_429=1.0, fault_429_retry_after=3600)
    project = tmp_path / "project"
    project.mkdir()
    build_flat_tree(tmp_path / "root", 2)
    cfg = write_config(project, tmp_path / "root", emu)
    for command in ("ls-remote", "reconcile"):
        got = run_syncd(command, cfg, key=KEY, timeout=60)
        assert got.returncode not in (0, ExitCode.UNREACHABLE), got.output
        assert "rate limited by the provider: retry after 3600 s" in got.stderr, got.output
        assert "unreachable" not in got.output, got.output
