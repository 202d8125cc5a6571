"""Small helpers shared by the tests: waiting on conditions, a free port, a stand-in for
systemd's socket."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any


def wait_for(
    cond: Callable[[], Any], timeout: float = 15.0, what: str = "condition", interval: float = 0.02
) -> Any:
    """Poll ``cond`` until it returns something truthy (returned) or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def wait_until(cond: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05) -> Any:
    """Poll ``cond`` until it returns something truthy or ``timeout`` passes; its last
    value either way (for an assert that shows it)."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


def free_port() -> int:
    """A TCP port on 127.0.0.1 nothing listens on now (a server started next takes it;
    a connection to it is refused until then)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class NotifySocket:
    """A real AF_UNIX datagram socket standing in for systemd's NOTIFY_SOCKET."""

    def __init__(self) -> None:
        # sun_path is limited to 108 bytes, and pytest's tmp_path can be longer.
        self.dir = tempfile.mkdtemp(prefix="sdn", dir="/tmp")
        self.path = os.path.join(self.dir, "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.1)
        self.messages: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except TimeoutError:
                continue
            except OSError:
                return

    @property
    def lines(self) -> list[str]:
        return [line for m in list(self.messages) for line in m.split("\n")]

    def has(self, prefix: str) -> bool:
        return any(line.startswith(prefix) for line in self.lines)

    def caught_up(self) -> bool:
        """READY=1 came (the daemon watches), then a STATUS= line that no longer says
        "catching up": the catch-up reconcile is done, the mapping holds the folder."""
        lines = self.lines
        later = lines[lines.index("READY=1") + 1 :] if "READY=1" in lines else []
        return any(
            line.startswith("STATUS=") and not line.startswith("STATUS=catching up")
            for line in later
        )

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()
        shutil.rmtree(self.dir, ignore_errors=True)
