"""Client of the DashScope OpenAI-compatible Files API."""

# ruff: noqa: E402  (httpx is imported first, with its command-line client hidden)
from syncd._startup import import_without

# httpx's package init imports its command-line client when click and rich are installed
# (uvicorn brings click): a third of httpx's import time, for a tool syncd never runs.
import_without("httpx", "httpx._main")

from syncd.api.adoption import UploadWindow, find_own_upload, wire_name
from syncd.api.client import FilesClient, upload_once
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
    SourceChangedError,
)
from syncd.api.key import ApiKey
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
    "SourceChangedError",
    "Timeouts",
    "UploadWindow",
    "find_own_upload",
    "upload_once",
    "wire_name",
]
