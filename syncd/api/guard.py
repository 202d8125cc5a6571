"""How long one exchange may take, and cutting every call short when the process stops.

httpx bounds each read of a socket, not a response: a server (or a proxy) that sends
one byte a second keeps every read within any read timeout and a call alive for as
long as it likes. :func:`receive` reads the response as a stream and checks, between
the chunks it gets, that the whole response has come within ``within`` seconds of
the end of the request (for an upload: of its last byte; a provider may take the
read timeout to answer a large file, so the bound is counted from there). Time to
the first byte of the headers stays bounded by the read timeout, as before.

A :class:`CallGuard` cancels every call of one client, for good: a one-off command's
Ctrl-C (:func:`cancel_on_sigint`). Calls run on worker threads too, and the main
thread's KeyboardInterrupt reaches none of them; so cancelling shuts down the socket
of every connection the client opened (learnt from httpcore's documented ``trace``
events), which ends a read or a write blocked on it at once, and wakes every wait
between attempts or for the pacer. A call cut short this way fails as a transport
error of the same phase (so an upload whose body was sent is still ambiguous), or,
when nothing was sent, as :class:`~syncd.api.errors.CallCancelledError`.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

import httpx

from syncd.api.errors import CallCancelledError

# The trace events that hand over a new network stream (TCP, Unix socket, TLS on top).
_NEW_STREAM = (".connect_tcp.complete", ".connect_unix_socket.complete", ".start_tls.complete")
_REQUEST_SENT = ".send_request_body.complete"  # http11 or http2
CANCELLED = "cancelled: the command was interrupted"


class CallGuard:
    """Cancels the calls of one client (see the module doc). Thread-safe; ``cancel``
    may run in a signal handler on the main thread while that thread is in a call."""

    def __init__(self) -> None:
        # Re-entrant: the handler may interrupt the main thread while it holds it.
        self._cond = threading.Condition(threading.RLock())
        self._cancelled = False
        self._streams: weakref.WeakSet[Any] = weakref.WeakSet()

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    def cancel(self) -> None:
        """Cut every call short, now and from now on."""
        with self._cond:
            self._cancelled = True
            streams = list(self._streams)
            self._cond.notify_all()
        for stream in streams:
            _shut(stream)

    def track(self, stream: Any) -> None:
        """A network stream the client opened (shut at once if already cancelled)."""
        with self._cond:
            self._streams.add(stream)
            cancelled = self._cancelled
        if cancelled:
            _shut(stream)

    def check(self, operation: str) -> None:
        """Raise CallCancelledError if calls are cancelled (nothing is sent after that)."""
        if self._cancelled:
            raise CallCancelledError(f"{operation}: {CANCELLED}")

    def sleep(self, seconds: float) -> None:
        """``time.sleep`` that a cancel ends early, raising CallCancelledError: for the
        waits between attempts and for the pacer, so none outlasts a Ctrl-C."""
        deadline = time.monotonic() + max(0.0, seconds)
        with self._cond:
            while not self._cancelled:
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                self._cond.wait(left)
        raise CallCancelledError(CANCELLED)

    def explain(self, exc: httpx.TransportError) -> httpx.TransportError:
        """``exc``, or, when a cancel caused it, the same kind of error saying so (the
        kind tells how far the request got)."""
        if not self._cancelled:
            return exc
        try:
            return type(exc)(CANCELLED)
        except TypeError:  # a subclass with another signature
            return httpx.ReadError(CANCELLED)


def _shut(stream: Any) -> None:
    """Shut the socket under an httpcore network stream: a read or write blocked on it
    returns at once. (``socket.shutdown`` itself, not an SSLSocket's, which would drop
    its TLS state under a thread still using it.)"""
    with contextlib.suppress(Exception):
        sock = stream.get_extra_info("socket")
        if isinstance(sock, socket.socket) and sock.fileno() != -1:
            socket.socket.shutdown(sock, socket.SHUT_RDWR)


class _Bounded(httpx.SyncByteStream):
    """A response body that raises, between chunks, once the response is overdue or
    its calls are cancelled."""

    def __init__(
        self, inner: httpx.SyncByteStream, guard: CallGuard, deadline: float, within: float
    ) -> None:
        self._inner = inner
        self._guard = guard
        self._deadline = deadline
        self._within = within

    def _check(self) -> None:
        if self._guard.cancelled:
            raise httpx.ReadError(CANCELLED)
        if time.monotonic() > self._deadline:
            raise httpx.ReadTimeout(
                f"the response did not complete within {self._within:g} s of the request"
            )

    def __iter__(self) -> Iterator[bytes]:
        chunks = iter(self._inner)
        while True:
            self._check()
            try:
                chunk = next(chunks)
            except StopIteration:
                return
            except httpx.TransportError as exc:
                raise self._guard.explain(exc) from None
            yield chunk

    def close(self) -> None:
        self._inner.close()


def receive(
    http: httpx.Client,
    request: httpx.Request,
    guard: CallGuard,
    within: float,
    operation: str = "call",
) -> httpx.Response:
    """Send ``request`` and read its response whole: within ``within`` seconds of the
    request's last byte, and no longer than until ``guard`` cancels. Raises httpx
    transport errors as ``http.send`` does (a late response as ``ReadTimeout``), and
    CallCancelledError when cancelled before anything was sent."""
    with streaming(http, request, guard, within, operation) as response:
        response.read()  # the content stays readable once the response is closed
    # httpx binds the stream to its response, a cycle: left so, each response waits for
    # the cycle collector, and a listing's pages (2 MB each at 10,000 files) with it.
    response.stream = httpx.ByteStream(response.content)
    return response


@contextlib.contextmanager
def streaming(
    http: httpx.Client,
    request: httpx.Request,
    guard: CallGuard,
    within: float,
    operation: str = "call",
) -> Iterator[httpx.Response]:
    """As :func:`receive`, but the body is left for the caller to read in chunks (a
    download written to a file as it comes): every chunk is still checked against the
    deadline and a cancel. The response is closed on leaving the block."""
    inner: Callable[[str, dict[str, Any]], None] | None = request.extensions.get("trace")
    sent: list[float] = []

    def trace(event: str, info: dict[str, Any]) -> None:
        if event.endswith(_NEW_STREAM):
            stream = info.get("return_value")
            if stream is not None:
                guard.track(stream)
        elif event.endswith(_REQUEST_SENT):
            sent.append(time.monotonic())
        if inner is not None:
            inner(event, info)

    request.extensions["trace"] = trace
    guard.check(operation)
    try:
        response = http.send(request, stream=True)
    except httpx.TransportError as exc:
        raise guard.explain(exc) from None
    started = sent[-1] if sent else time.monotonic()
    assert isinstance(response.stream, httpx.SyncByteStream)
    response.stream = _Bounded(response.stream, guard, started + within, within)
    try:
        yield response
    finally:
        response.close()


_guards: weakref.WeakSet[CallGuard] = weakref.WeakSet()
_installed = False


def cancel_on_sigint(guard: CallGuard) -> None:
    """Let Ctrl-C (SIGINT) cancel ``guard``'s calls before the KeyboardInterrupt it
    raises as usual, so calls on worker threads end too. Installed on the main thread
    over Python's default handler only (a daemon's or a test runner's own handling is
    left alone); a no-op elsewhere."""
    global _installed
    _guards.add(guard)
    if _installed or threading.current_thread() is not threading.main_thread():
        return
    previous = signal.getsignal(signal.SIGINT)
    if previous is not signal.default_int_handler:
        return

    def on_sigint(signum: int, frame: FrameType | None) -> None:
        for each in list(_guards):
            each.cancel()
        signal.default_int_handler(signum, frame)

    signal.signal(signal.SIGINT, on_sigint)
    _installed = True
