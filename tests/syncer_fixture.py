"""`syncer_on(emulator, root, **sections)`: an engine Syncer in this process, on a config
written under the test's tmp_path (closed at the end of the test)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from syncd.bootstrap import open_syncer
from syncd.config import load_config
from syncd.engine.sync import Syncer
from tests.emulator_fixture import EmulatorHandle
from tests.engine_helpers import KEY_ENV, write_config

__all__ = ["syncer_on"]


@pytest.fixture
def syncer_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Syncer]]:
    opened: list[Syncer] = []

    def open_(emulator: EmulatorHandle, root: Path, **sections: Any) -> Syncer:
        monkeypatch.setenv(KEY_ENV, emulator.api_key)
        config = load_config(write_config(tmp_path, root, emulator, **sections))
        syncer = open_syncer(config)
        opened.append(syncer)
        return syncer

    yield open_
    for s in opened:
        s.close()
