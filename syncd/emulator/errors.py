"""The OpenAI-style error envelope the provider answers with."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from starlette.responses import JSONResponse

INVALID_REQUEST = "invalid_request_error"

MSG_BAD_KEY = "Incorrect API key provided."
MSG_THROTTLED = "Requests rate limit exceeded, please try again later."
MSG_TOO_LARGE = "Payload Too Large."
MSG_QUOTA_FILES = "Upload file number exceed limit."
MSG_QUOTA_BYTES = "Upload file capacity exceed limit."
# Unconfirmed code: the provider's quota errors are only known by message.
CODE_QUOTA = "Throttling.AllocationQuota"


@dataclass
class ApiError(Exception):
    status: int
    message: str
    type: str = INVALID_REQUEST
    param: str | None = None
    code: str | None = None
    headers: dict[str, str] | None = None
    # Answer `{"detail": message}`, as some self-hosted OpenAI-compatible servers do.
    detail_only: bool = False

    def response(self, request_id: str, request_id_in_body: bool = True,
                 echo: str | None = None) -> JSONResponse:
        """The error as the provider sends it. With ``echo`` (the request's Authorization
        header), every field repeats it as a careless gateway might: as sent, the key
        alone, URL-encoded, its tail, and in a nested object and a header."""
        error: dict[str, Any] = {
            "message": self.message,
            "type": self.type,
            "param": self.param,
            "code": self.code,
        }
        if echo is not None:
            key = echo.partition(" ")[2] or echo
            request_id = f"{request_id}/{key}"
            error = {
                "message": f"{self.message} (Authorization: {echo}; key ...{key[-12:]})",
                "type": echo,
                "param": quote(key, safe=""),
                "code": f"{self.code or self.type}:{key}",
                "details": {"authorization": echo, "headers": {"Authorization": echo}},
            }
        body: dict[str, Any] = {"error": error}
        if request_id_in_body:
            body["request_id"] = request_id
        if self.detail_only:
            body = {"detail": error["message"]}
        headers = {"x-request-id": request_id, **(self.headers or {})}
        return JSONResponse(body, status_code=self.status, headers=headers)


def bad_key() -> ApiError:
    return ApiError(401, MSG_BAD_KEY, code="invalid_api_key")


def throttled(retry_after: int | None = None) -> ApiError:
    headers = {"retry-after": str(retry_after)} if retry_after is not None else None
    return ApiError(429, MSG_THROTTLED, type="limit_requests", code="limit_requests",
                    headers=headers)


def internal(status: int = 500) -> ApiError:
    return ApiError(status, "An internal error has occurred, please try again later.",
                    type="internal_error", code="internal_error")


def not_found(file_id: str, status: int = 404) -> ApiError:
    """An unknown id: the OpenAI-shaped 404, or a bare `{"detail"}` 400 like some servers."""
    if status == 400:
        return ApiError(400, "File not found", detail_only=True)
    return ApiError(404, f"Not found! No such file: {file_id}", param="file_id",
                    code="not_found")


def bad_request(message: str, param: str | None = None, code: str | None = None) -> ApiError:
    return ApiError(400, message, param=param, code=code)
