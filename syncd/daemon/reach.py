"""Is the provider reachable at all? A TCP connect, made without the engine.

The engine's calls retry a refused connection for a minute or more before they
report anything, and they run on the worker thread. The supervisor needs to know
sooner, without waiting for the worker: to say "remote unreachable" in its
STATUS while a call is still retrying, and to stop within seconds on SIGTERM
instead of waiting out a retry loop that cannot succeed.
"""

from __future__ import annotations

import socket
import time
import urllib.request
from urllib.parse import urlsplit


def reachable(url: str, timeout: float) -> bool:
    """Whether a TCP connection to ``url``'s host and port opens within ``timeout``.

    True when the URL cannot be parsed: only a failed connect counts as unreachable.
    """
    if _proxied(url):
        return True  # a direct connect proves nothing when calls go through a proxy
    try:
        parts = urlsplit(url)
        host = parts.hostname
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return True
    if not host:
        return True
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _proxied(url: str) -> bool:
    scheme = urlsplit(url).scheme or "http"
    proxies = urllib.request.getproxies()
    if not (proxies.get(scheme) or proxies.get("all")):
        return False
    host = urlsplit(url).hostname or ""
    return not urllib.request.proxy_bypass(host)


class Reachability:
    """Since when the remote has been unreachable, from probes and from call outcomes."""

    def __init__(self) -> None:
        self.since: float | None = None  # wall-clock time, for people
        # Whether a failed TCP connect (not only failed calls) says so: then calls
        # would only sit in their retries, and a connect that opens again means it is back.
        self.probed_down = False

    @property
    def down(self) -> bool:
        return self.since is not None

    def failed(self, *, probed: bool = False) -> None:
        if self.since is None:
            self.since = time.time()
        if probed:
            self.probed_down = True

    def ok(self) -> None:
        self.since = None
        self.probed_down = False

    def describe(self) -> str:
        if self.since is None:
            return ""
        stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.since))
        return f"remote unreachable since {stamp}"
