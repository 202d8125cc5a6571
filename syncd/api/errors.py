"""The one exception hierarchy of the Files API client.

Every error the client raises is an :class:`APIError`. Each class says when it is
raised; callers branch on the class, never on message text. No message or repr
ever contains the API key: the constructor passes message, code and request id
through :func:`syncd.api.scrub.scrub`, since they may hold what a provider or a
proxy echoed of the request (its Authorization header, say).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from syncd.api.scrub import scrub, scrub_optional

if TYPE_CHECKING:
    from syncd.api.adoption import UploadWindow


class APIError(Exception):
    """Base class of everything the client raises."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        request_id: str | None = None,
    ) -> None:
        message = scrub(message)
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = scrub_optional(code)
        self.request_id = scrub_optional(request_id)

    def __reduce__(self) -> tuple[object, ...]:
        # Keyword-only constructor arguments defeat Exception's default pickling,
        # which multiprocessing workers rely on.
        return (_restore, (type(self), self.message), dict(self.__dict__))

    def __str__(self) -> str:
        parts = [self.message]
        if self.status is not None:
            parts.append(f"status={self.status}")
        if self.code:
            parts.append(f"code={self.code}")
        if self.request_id:
            parts.append(f"request_id={self.request_id}")
        return " ".join(parts)


class AuthenticationError(APIError):
    """Raised on 401/403: the API key is missing, wrong, or for another region."""


class NotFoundError(APIError):
    """Raised on 404: the file id does not exist (or is not visible to this key)."""


class InvalidRequestError(APIError):
    """Raised on other 4xx: the provider refused the request itself (bad purpose,
    unsupported format, too large, invalid batch file). ``code`` and ``message``
    are the provider's. Retrying the same request cannot succeed."""


class QuotaExceededError(InvalidRequestError):
    """Raised when the account's storage quota (file count or bytes) is full."""


class RetryableError(APIError):
    """Base of the errors the client retries by itself before giving up.

    ``retry_after`` is the provider's hint in seconds, when it sent one."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        request_id: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, status=status, code=code, request_id=request_id)
        self.retry_after = retry_after


class RateLimitedError(RetryableError):
    """Raised on 429 once the retry budget is spent."""


class RetryLaterError(RateLimitedError):
    """Raised when the provider asked this call class to wait longer (Retry-After) than
    one call may wait (``RetryPolicy.max_hint_wait``), or when an earlier such answer
    still holds: the request was not retried, or not sent. ``retry_after`` is the
    seconds left until the provider said it would accept the class again. The
    provider is answering: this is not a connection problem."""


class ServerError(RetryableError):
    """Raised on 5xx once the retry budget is spent."""


# How far a request got before its connection failed.
RequestPhase = Literal["connect", "send", "receive"]


class NetworkError(RetryableError):
    """Raised when the connection failed, once retries are spent.

    ``phase`` says how far the request got: ``"connect"`` (nothing was sent),
    ``"send"`` (the body was not sent in full) or ``"receive"`` (sent, but the
    response was lost). For uploads only the first two are raised; a lost response
    to an upload is an :class:`AmbiguousUploadError`."""

    def __init__(
        self,
        message: str,
        *,
        phase: RequestPhase = "connect",
        status: int | None = None,
        code: str | None = None,
        request_id: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(
            message, status=status, code=code, request_id=request_id, retry_after=retry_after
        )
        self.phase = phase


class AmbiguousUploadError(APIError):
    """Raised when an upload was fully sent but no usable response came back (read
    timeout, connection dropped, a 5xx): the file may or may not exist on the server.
    The client never re-sends it blindly; the caller looks for it first, within
    ``window`` (see :mod:`syncd.api.adoption`)."""

    def __init__(
        self,
        message: str,
        *,
        filename: str,
        size: int,
        window: UploadWindow,
        status: int | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message, status=status, request_id=request_id)
        self.filename = filename
        self.size = size
        # When, in the provider's clock, the attempt could have stored the file.
        self.window = window


class CallCancelledError(APIError):
    """Raised when calls were cancelled (a one-off command's Ctrl-C) before this one
    sent anything more: it is not retried. A call cancelled while its request was on
    the wire fails as a transport error instead (see :mod:`syncd.api.guard`)."""


class SourceChangedError(APIError):
    """Raised when the local file changed size while it was being sent, so the body
    no longer matched its declared length: nothing usable reached the server, and
    the upload should be tried again once the file is stable."""


class DownloadRefusedError(InvalidRequestError):
    """Raised when the provider refuses to serve a file's content (400 or 403 to
    ``GET /files/{id}/content``): DashScope documents downloads for batch output files
    only, OpenAI refuses them for ``assistants`` files. ``file_id`` names the file,
    ``purpose`` its purpose when the caller knew it. Retrying cannot succeed."""

    def __init__(
        self,
        message: str,
        *,
        file_id: str,
        purpose: str | None = None,
        status: int | None = None,
        code: str | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message, status=status, code=code, request_id=request_id)
        self.file_id = file_id
        self.purpose = purpose


class IncompleteDownloadError(RetryableError):
    """Raised when a download's body was not the file's size (the provider's ``bytes``
    for it), once retries are spent: the bytes written are not the file."""


class AmbiguousCreateError(APIError):
    """Raised when a create call (a batch job) was fully sent but no usable answer came
    back (connection lost, read timeout, a 5xx): the job may or may not exist. The
    client never sends it again by itself; the caller looks for it first (by the
    ``metadata`` it was created with, kept here)."""

    def __init__(
        self,
        message: str,
        *,
        metadata: dict[str, str] | None = None,
        status: int | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message, status=status, request_id=request_id)
        self.metadata = dict(metadata or {})


def _restore(cls: type[APIError], message: str) -> APIError:
    obj = cls.__new__(cls)
    Exception.__init__(obj, message)
    return obj
