"""``base_url: embedded``: the bundled emulator, started in-process on loopback.

If one is already listening on the port (a daemon of the same project, say), it
is reused, so a one-off command sees the same files as the daemon.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx

from syncd.api.key import ApiKey

HOST = "127.0.0.1"


def ensure_emulator(
    data_dir: Path, port: int, key: ApiKey
) -> tuple[str, Callable[[], None] | None]:
    """The emulator's base URL, and how to stop it when this process started it."""
    root = f"http://{HOST}:{port}"
    url = root + "/compatible-mode/v1"
    try:
        if httpx.get(root + "/_emulator/health", timeout=1.0).status_code == 200:
            return url, None
    except httpx.HTTPError:
        pass
    from syncd.emulator import EmulatorSettings, start_in_thread

    running = start_in_thread(
        EmulatorSettings(data_dir=data_dir, api_keys=[key.reveal()], host=HOST, port=port)
    )
    return running.url, running.stop
