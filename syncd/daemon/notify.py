"""The systemd notification protocol (sd_notify), without libsystemd.

The protocol is a single datagram of ``KEY=VALUE`` lines sent to the AF_UNIX
socket named by ``$NOTIFY_SOCKET``; a leading ``@`` means the Linux abstract
namespace. Outside systemd the variable is unset and every call is a no-op, so
the daemon code never needs to ask whether it runs under systemd.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping

import structlog

log = structlog.get_logger("syncd.daemon")


class Notifier:
    """Sends state changes to the service manager.

    Send errors are logged once and otherwise ignored: a lost notification must
    never take the daemon down (systemd will notice through its own timeouts).
    """

    def __init__(
        self,
        address: str | None,
        *,
        watchdog_usec: int | None = None,
    ) -> None:
        self._address = _socket_address(address) if address else None
        self._watchdog_usec = watchdog_usec
        self._sock: socket.socket | None = None
        self._warned = False

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Notifier:
        env = os.environ if environ is None else environ
        return cls(env.get("NOTIFY_SOCKET") or None, watchdog_usec=_watchdog_usec(env))

    @property
    def enabled(self) -> bool:
        return self._address is not None

    @property
    def watchdog_interval_s(self) -> float | None:
        """How often to send WATCHDOG=1: half the configured timeout, as sd_watchdog_enabled(3)
        recommends, so one late ping does not get the service killed."""
        if self._watchdog_usec is None or self._address is None:
            return None
        return self._watchdog_usec / 2_000_000

    def notify(self, **fields: str | int) -> bool:
        """Send one message; returns whether it was delivered (False when disabled)."""
        if self._address is None:
            return False
        payload = "\n".join(f"{key}={value}" for key, value in fields.items()).encode()
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto(payload, self._address)
        except OSError as exc:
            if not self._warned:
                self._warned = True
                log.warning(
                    "cannot notify the service manager", address=self._address, error=str(exc)
                )
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        if status is None:
            return self.notify(READY=1)
        return self.notify(READY=1, STATUS=status)

    def status(self, text: str) -> bool:
        return self.notify(STATUS=text)

    def watchdog(self) -> bool:
        return self.notify(WATCHDOG=1)

    def stopping(self, status: str | None = None) -> bool:
        if status is None:
            return self.notify(STOPPING=1)
        return self.notify(STOPPING=1, STATUS=status)

    def extend_timeout(self, seconds: float) -> bool:
        """Ask for more time in the current start-up or shutdown phase.

        A catch-up reconcile of a large folder can outlast TimeoutStartSec; asking for
        more time while making progress is better than a generous static timeout,
        which would also delay noticing a hung start.
        """
        return self.notify(EXTEND_TIMEOUT_USEC=int(seconds * 1_000_000))

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _socket_address(address: str) -> str:
    if address.startswith("@"):
        return "\0" + address[1:]
    return address


def _watchdog_usec(env: Mapping[str, str]) -> int | None:
    raw = env.get("WATCHDOG_USEC")
    if not raw:
        return None
    # WATCHDOG_PID guards against a child inheriting the variables and pinging on
    # behalf of its parent; it is absent when systemd did not set it.
    pid = env.get("WATCHDOG_PID")
    if pid and pid != str(os.getpid()):
        return None
    try:
        usec = int(raw)
    except ValueError:
        log.warning("ignoring WATCHDOG_USEC: not a whole number", value=raw)
        return None
    return usec if usec > 0 else None
