"""A file that grows or shrinks while it is sent: SourceChangedError, nothing stored.

The emulator holds the request for a while after its headers arrive (its injected
latency) and reads no body meanwhile, so the client is stuck a few MiB into a much larger
file when the test changes it: the rest of the body is read from the changed file.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from syncd.api.errors import SourceChangedError
from syncd.api.options import Timeouts
from tests.emulator_fixture import EmulatorHandle
from tests.helpers import wait_until
from tests.helpers_client import make_client

MB = 1024 * 1024
# Far more than the loopback socket buffers hold while the server waits (5 MiB measured).
SIZE = 24 * MB
HOLD_MS = 1500


def _grow(path: Path) -> None:
    with path.open("ab") as fh:
        fh.write(b"appended while it was sent\n")


def _shrink(path: Path) -> None:
    os.truncate(path, MB)


def _upload_while(
    emulator: EmulatorHandle, path: Path, change: Callable[[Path], None]
) -> BaseException | None:
    """Upload ``path``, changing it once the emulator holds the request; what was raised."""
    emulator.configure(latency_ms=HOLD_MS)
    raised: list[BaseException | None] = []
    timeouts = Timeouts(connect=5, read=60, write=60, pool=5)
    with make_client(emulator.url, emulator.api_key, timeouts=timeouts) as client:

        def send() -> None:
            try:
                client.upload(path, "file-extract")
            except BaseException as exc:  # what the caller of upload would see
                raised.append(exc)
            else:
                raised.append(None)

        before = emulator.stats()["requests"].get("upload", 0)
        sender = threading.Thread(target=send)
        sender.start()
        held = wait_until(
            lambda: emulator.stats()["requests"].get("upload", 0) > before, timeout=30
        )
        change(path)
        sender.join(timeout=120)
        assert held and not sender.is_alive()
    emulator.configure(latency_ms=0)
    return raised[0]


@pytest.mark.parametrize("change", [_grow, _shrink], ids=["grows", "shrinks"])
def test_a_file_changing_size_while_sent_is_source_changed_and_not_stored(
    emulator_factory: Callable[..., EmulatorHandle],
    tmp_path: Path,
    change: Callable[[Path], None],
) -> None:
    emulator = emulator_factory()
    path = tmp_path / "growing.txt"
    path.write_bytes(b"x" * (SIZE - 1) + b"\n")

    raised = _upload_while(emulator, path, change)

    assert isinstance(raised, SourceChangedError), repr(raised)
    assert "changed size while it was sent" in str(raised)
    assert str(SIZE) in str(raised)
    assert emulator.truth_files() == []

    # Once still, the same file goes up whole, once.
    with make_client(emulator.url, emulator.api_key) as client:
        stored = client.upload(path, "file-extract")
    files: list[dict[str, Any]] = emulator.truth_files()
    assert [(f["id"], f["bytes"]) for f in files] == [(stored.id, path.stat().st_size)]
