"""HTTP details: mapping responses and transport failures onto the error hierarchy.

Nothing raised from here carries an httpx object: httpx requests hold the
Authorization header, and exceptions travel into logs and tracebacks. Nothing read
from an error body or its headers leaves here unscrubbed either (see
:mod:`syncd.api.scrub`): a gateway may echo the Authorization header in any field.
"""

from __future__ import annotations

import email.utils
import hashlib
import json
import math
import os
import time
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO

import httpx

from syncd.api.errors import (
    APIError,
    AuthenticationError,
    InvalidRequestError,
    NetworkError,
    NotFoundError,
    QuotaExceededError,
    RateLimitedError,
    RequestPhase,
    ServerError,
    SourceChangedError,
)
from syncd.api.providers import DASHSCOPE, Provider
from syncd.api.scrub import Scrubber, scrub_optional

_MAX_MESSAGE = 300
_BLOCK = 1024 * 1024


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


class HashingReader:
    """A binary file as the multipart encoder reads it, hashing the bytes it hands over.

    The encoder seeks to the start, then reads to the end, once per attempt; so the
    digest is of exactly the bytes sent, and a file is read once to be both hashed
    and uploaded. ``sha256`` is None until a read from the start reached the end.

    With ``size`` (what the request declared), a file that turns out longer or shorter
    while it is read raises SourceChangedError: before the byte past the declared
    length is handed over, or at an end that comes early. The transport would refuse
    either body anyway, but with an error of its own (h11's LocalProtocolError) that
    says nothing of the file.
    """

    def __init__(self, raw: BinaryIO, size: int | None = None) -> None:
        self._raw = raw
        self._size = size
        self._digest = hashlib.sha256()
        self._position = raw.tell()
        self._from_start = self._position == 0
        self._done = False

    def fileno(self) -> int:
        # Lets the encoder take the length from fstat instead of reading the file.
        return self._raw.fileno()

    def tell(self) -> int:
        return self._raw.tell()

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        position = self._raw.seek(offset, whence)
        self._digest = hashlib.sha256()
        self._position = position
        self._from_start = position == 0
        self._done = False
        return position

    def read(self, size: int = -1) -> bytes:
        # The encoder asks for 64 KiB at a time and sends whatever it gets: larger
        # blocks cut the per-chunk work of a large upload (a fifth of its CPU).
        chunk = self._raw.read(max(size, _BLOCK) if size > 0 else size)
        self._position += len(chunk)
        if self._size is not None and (
            self._position > self._size or (not chunk and size != 0 and self._position < self._size)
        ):
            now = os.fstat(self._raw.fileno()).st_size
            raise SourceChangedError(
                f"the file changed size while it was sent ({self._size} -> {now} bytes)"
            )
        if chunk:
            self._digest.update(chunk)
        elif size != 0:
            self._done = self._from_start
        return chunk

    @property
    def sha256(self) -> str | None:
        return self._digest.hexdigest() if self._done else None


def parse_retry_after(headers: httpx.Headers, now: float | None = None) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``Retry-After`` (seconds or a date)."""
    raw_ms = headers.get("retry-after-ms")
    if raw_ms:
        try:
            value = float(raw_ms) / 1000.0
        except ValueError:
            value = -1.0
        if value >= 0 and math.isfinite(value):
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
    return value if value >= 0 and math.isfinite(value) else None


def _detail_text(detail: Any) -> str | None:
    """A ``{"detail": ...}`` body's text: a string, or the messages of a list of errors
    (as FastAPI-style servers send them)."""
    if isinstance(detail, str):
        return detail
    if isinstance(detail, list):
        parts = [
            str(d.get("msg") or d.get("message") or d) if isinstance(d, dict) else str(d)
            for d in detail
        ]
        return "; ".join(parts) or None
    return None if detail is None else json.dumps(detail, ensure_ascii=False)


def _raw_text(content: bytes) -> str | None:
    text = content[:_MAX_MESSAGE].decode("utf-8", "replace").strip()
    return text or None


def read_error_body(response: httpx.Response) -> tuple[str | None, str | None, str | None]:
    """(message, code, request_id) of an error response, whatever its shape.

    Providers disagree: the OpenAI envelope ``{"error": {"message", "code"}}``,
    DashScope's ``{"message", "code", "request_id"}``, a plain ``{"detail": ...}``
    from self-hosted servers, or raw text. The server's own words are always kept,
    so the user sees why it refused rather than only a status line.
    """
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
        if message is None and isinstance(body.get("message"), str):
            message = body["message"]
        if message is None and "detail" in body:
            message = _detail_text(body["detail"])
        if code is None and body.get("code") is not None:
            code = str(body["code"])
        if body.get("request_id") is not None:
            request_id = str(body["request_id"])
        if message is None:
            message = _raw_text(response.content)
    elif response.content:
        message = _raw_text(response.content)
    request_id = request_id or response.headers.get("x-request-id")
    return scrub_optional(message), scrub_optional(code), scrub_optional(request_id)


def error_for_response(
    response: httpx.Response, scrub: str, provider: Provider = DASHSCOPE
) -> APIError:
    """The exception for a non-2xx response. Every registered secret, and ``scrub``,
    is masked in all it says; ``provider`` says which refusals mean a full quota."""
    status = response.status_code
    message, code, request_id = read_error_body(response)
    also = Scrubber()
    if scrub:
        also.add(scrub)

    def clean(text: str | None) -> str | None:
        return None if text is None else also.scrub(text)

    message, code, request_id = clean(message), clean(code), clean(request_id)
    text = (message or response.reason_phrase or f"HTTP {status}")[:_MAX_MESSAGE]
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
    if provider.is_quota_error(message, code):
        return QuotaExceededError(text, **kw)
    if 400 <= status < 500:
        return InvalidRequestError(text, **kw)
    return APIError(text, **kw)


def describe_transport_error(exc: httpx.TransportError) -> str:
    """Type and message of an httpx failure, without the request it carries."""
    detail = str(exc).strip()
    name = type(exc).__name__
    return f"{name}: {detail}" if detail else name


def request_phase(exc: httpx.TransportError) -> RequestPhase:
    """Where a transport failure happened: connect (nothing sent), send, or receive."""
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout):
        return "connect"
    if isinstance(exc, httpx.WriteError | httpx.WriteTimeout):
        return "send"
    return "receive"
