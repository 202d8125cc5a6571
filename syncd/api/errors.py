"""The one exception hierarchy of the Files API client.

Every error the client raises is an :class:`APIError`. Each class says when it is
raised; callers branch on the class, never on message text. No message or repr
ever contains the API key.
"""

from __future__ import annotations


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
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.request_id = request_id

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
    """Base of the errors the client retries by itself before giving up."""


class RateLimitedError(RetryableError):
    """Raised on 429 once the retry budget is spent. ``retry_after`` is the
    provider's hint in seconds, when it sent one."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kw: object) -> None:
        super().__init__(message, **kw)  # type: ignore[arg-type]
        self.retry_after = retry_after


class ServerError(RetryableError):
    """Raised on 5xx once the retry budget is spent."""


class NetworkError(RetryableError):
    """Raised when the connection failed before the request could have been acted
    on (connect error, connect timeout, write failure), once retries are spent."""


class AmbiguousUploadError(APIError):
    """Raised when an upload was fully sent but no response came back (read
    timeout, connection dropped): the file may or may not exist on the server.
    The client never re-sends it blindly; the caller looks for it first
    (see :meth:`FilesClient.find_uploaded`)."""

    def __init__(self, message: str, *, filename: str, size: int, sent_at: float) -> None:
        super().__init__(message)
        self.filename = filename
        self.size = size
        self.sent_at = sent_at
