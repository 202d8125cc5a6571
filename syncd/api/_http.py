"""HTTP details: mapping responses and transport failures onto the error hierarchy.

Nothing raised from here carries an httpx object: httpx requests hold the
Authorization header, and exceptions travel into logs and tracebacks.
"""

from __future__ import annotations

import email.utils
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx

from syncd.api.errors import (
    APIError,
    AuthenticationError,
    InvalidRequestError,
    NetworkError,
    NotFoundError,
    QuotaExceededError,
    RateLimitedError,
    ServerError,
)

_QUOTA_MESSAGES = (
    "upload file number exceed limit",
    "upload file capacity exceed limit",
)
_MAX_MESSAGE = 300


class TrackedStream(httpx.SyncByteStream):
    """Wraps a request body to know whether it was handed to the socket in full.

    The transport pulls the next chunk only after writing the previous one, so
    reaching the end of the iterator means every byte was written. ``before_last``
    runs just before the final chunk is handed over: until that chunk leaves, the
    server cannot have the whole body, so it cannot have stored the file.
    """

    def __init__(
        self, inner: httpx.SyncByteStream, before_last: Callable[[], None] | None = None
    ) -> None:
        self._inner = inner
        self._before_last = before_last
        self.started = False
        self.completed = False

    def __iter__(self) -> Iterator[bytes]:
        self.started = True
        self.completed = False
        pending: bytes | None = None
        for chunk in self._inner:
            if pending is not None:
                yield pending
            pending = chunk
        if self._before_last is not None:
            self._before_last()
        if pending is not None:
            yield pending
        self.completed = True

    def close(self) -> None:
        self._inner.close()


def parse_retry_after(headers: httpx.Headers, now: float | None = None) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``Retry-After`` (seconds or a date)."""
    raw_ms = headers.get("retry-after-ms")
    if raw_ms:
        try:
            value = float(raw_ms) / 1000.0
        except ValueError:
            value = -1.0
        if value >= 0:
            return value
    raw = headers.get("retry-after")
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        try:
            parsed = email.utils.parsedate_to_datetime(raw)
        except (TypeError, ValueError):
            return None
        value = parsed.timestamp() - (time.time() if now is None else now)
        return max(0.0, value)
    return value if value >= 0 else None


def _envelope(response: httpx.Response) -> tuple[str | None, str | None, str | None]:
    """(message, code, request_id) from the OpenAI error envelope; all optional."""
    message = code = request_id = None
    try:
        body: Any = json.loads(response.content)
    except (ValueError, UnicodeDecodeError):
        body = None
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict):
            if err.get("message") is not None:
                message = str(err["message"])
            raw_code = err.get("code") or err.get("type")
            if raw_code is not None:
                code = str(raw_code)
        elif isinstance(err, str):
            message = err
        elif isinstance(body.get("message"), str):
            message = body["message"]
            if body.get("code") is not None:
                code = str(body["code"])
        if body.get("request_id") is not None:
            request_id = str(body["request_id"])
    elif response.content:
        text = response.content[:_MAX_MESSAGE].decode("utf-8", "replace").strip()
        message = text or None
    return message, code, request_id or response.headers.get("x-request-id")


def is_quota_error(message: str | None, code: str | None) -> bool:
    text = (message or "").lower()
    if any(m in text for m in _QUOTA_MESSAGES):
        return True
    low = (code or "").lower()
    return "quota" in low or "exceedlimit" in low.replace("_", "").replace(".", "")


def error_for_response(response: httpx.Response, scrub: str) -> APIError:
    """The exception for a non-2xx response. ``scrub`` is removed from messages."""
    status = response.status_code
    message, code, request_id = _envelope(response)
    text = (message or response.reason_phrase or f"HTTP {status}")[:_MAX_MESSAGE]
    if scrub:
        text = text.replace(scrub, "***")
    kw: dict[str, Any] = {"status": status, "code": code, "request_id": request_id}
    if status in (401, 403):
        return AuthenticationError(text, **kw)
    if status == 404:
        return NotFoundError(text, **kw)
    if status == 429:
        return RateLimitedError(text, retry_after=parse_retry_after(response.headers), **kw)
    if status == 408:
        return NetworkError(text, phase="receive", **kw)
    if status >= 500:
        return ServerError(text, retry_after=parse_retry_after(response.headers), **kw)
    if is_quota_error(message, code):
        return QuotaExceededError(text, **kw)
    if 400 <= status < 500:
        return InvalidRequestError(text, **kw)
    return APIError(text, **kw)


def describe_transport_error(exc: httpx.TransportError) -> str:
    """Type and message of an httpx failure, without the request it carries."""
    detail = str(exc).strip()
    name = type(exc).__name__
    return f"{name}: {detail}" if detail else name


def request_phase(exc: httpx.TransportError) -> str:
    """Where a transport failure happened: connect (nothing sent), send, or receive."""
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout):
        return "connect"
    if isinstance(exc, httpx.WriteError | httpx.WriteTimeout):
        return "send"
    return "receive"
