"""Client of the DashScope OpenAI-compatible Files API."""

from syncd.api.client import ApiKey, FilesClient, upload_once
from syncd.api.errors import (
    AmbiguousUploadError,
    APIError,
    AuthenticationError,
    InvalidRequestError,
    NetworkError,
    NotFoundError,
    QuotaExceededError,
    RateLimitedError,
    RetryableError,
    ServerError,
)
from syncd.api.models import CallClass, Deleted, Purpose, RemoteFile
from syncd.api.options import ClientOptions, Rates, RetryPolicy, Timeouts
from syncd.api.pacing import AdaptiveTuning, Pacer

__all__ = [
    "APIError",
    "AdaptiveTuning",
    "AmbiguousUploadError",
    "ApiKey",
    "AuthenticationError",
    "CallClass",
    "ClientOptions",
    "Deleted",
    "FilesClient",
    "InvalidRequestError",
    "NetworkError",
    "NotFoundError",
    "Pacer",
    "Purpose",
    "QuotaExceededError",
    "RateLimitedError",
    "Rates",
    "RemoteFile",
    "RetryPolicy",
    "RetryableError",
    "ServerError",
    "Timeouts",
    "upload_once",
]
