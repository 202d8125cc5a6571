"""The Batch API calls: create a job (never sent twice), retrieve, cancel, list.

:class:`BatchCalls` adds them to the :class:`~syncd.api.session.Session` every call
goes through; :class:`~syncd.api.client.FilesClient` has them. A create whose answer
may have been lost raises :class:`~syncd.api.errors.AmbiguousCreateError` carrying the
job's metadata, by which the caller finds the job before it creates another
(:mod:`syncd.engine.batches`). The results of a job are files, read with
:meth:`~syncd.api.client.FilesClient.download`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx
import structlog

from syncd.api._http import TrackedStream, describe_transport_error, request_phase
from syncd.api.errors import AmbiguousCreateError, APIError, ServerError
from syncd.api.models import Batch
from syncd.api.session import Session, network_error

log = structlog.get_logger(__name__)

# The provider's largest page of batches (both document 1-100).
BATCH_PAGE_MAX = 100


class BatchCalls(Session):
    """The Batch API's calls (see the module doc)."""

    def create_batch(
        self,
        input_file_id: str,
        endpoint: str,
        completion_window: str = "24h",
        metadata: dict[str, str] | None = None,
    ) -> Batch:
        """Create a batch job over ``input_file_id`` (a file of purpose batch).

        Never sent twice by the client: a 429 and a request that could not be sent whole
        are retried, but one the provider may have received without us getting its answer
        (the response lost, a read timeout, a 5xx) raises AmbiguousCreateError, carrying
        ``metadata``, by which the caller finds the job before it creates another."""
        payload: dict[str, Any] = {
            "input_file_id": input_file_id,
            "endpoint": endpoint,
            "completion_window": completion_window,
        }
        if metadata:
            payload["metadata"] = dict(metadata)

        def attempt() -> httpx.Response:
            request = self._http.build_request("POST", "batches", json=payload)
            assert isinstance(request.stream, httpx.SyncByteStream)
            body = TrackedStream(request.stream)
            request.stream = body

            def lost(message: str, **kw: Any) -> AmbiguousCreateError:
                return AmbiguousCreateError(
                    f"create of a batch over {input_file_id}: {message}", metadata=metadata, **kw
                )

            try:
                return self._exchange("read", request)
            except httpx.TransportError as exc:
                phase = request_phase(exc)
                if phase == "receive" and body.completed:
                    log.warning("api.batch.create_ambiguous", input_file_id=input_file_id,
                                error=type(exc).__name__)  # fmt: skip
                    raise lost(f"response lost ({describe_transport_error(exc)})") from None
                raise network_error(
                    exc, "create_batch", phase="send" if phase != "connect" else "connect"
                ) from None
            except ServerError as exc:
                if not body.completed:
                    raise
                raise lost(
                    f"server answered {exc.status}, it may have created the job",
                    status=exc.status,
                    request_id=exc.request_id,
                ) from None

        response = self._retrying("read", "create_batch", attempt)
        return _batch(self._json(response, "create_batch"), "create_batch")

    def retrieve_batch(self, batch_id: str) -> Batch:
        response = self._simple("read", "retrieve_batch", "GET", _batch_url(batch_id))
        return _batch(self._json(response, "retrieve_batch"), "retrieve_batch")

    def cancel_batch(self, batch_id: str) -> Batch:
        """Ask the provider to cancel a job; the job comes back ``cancelling`` (or as it
        is, if already cancelling or cancelled). Retried like a read: cancelling twice is
        harmless. A job that already ended is refused (InvalidRequestError)."""
        url = _batch_url(batch_id) + "/cancel"
        response = self._simple("read", "cancel_batch", "POST", url)
        return _batch(self._json(response, "cancel_batch"), "cancel_batch")

    def list_batches(self, *, page_size: int = BATCH_PAGE_MAX) -> Iterator[Batch]:
        """Every batch job of the account, newest first, one page (``page_size``, 1-100)
        fetched at a time as the iteration reaches it: a caller that stops early (its
        jobs found, or pages older than what it looks for) lists no more."""
        if not 1 <= page_size <= BATCH_PAGE_MAX:
            raise ValueError(f"page_size must be 1..{BATCH_PAGE_MAX}")
        after: str | None = None
        seen: set[str] = set()
        while True:
            params: dict[str, Any] = {"limit": page_size}
            if after is not None:
                params["after"] = after
            response = self._simple("read", "list_batches", "GET", "batches", params=params)
            body = self._json(response, "list_batches")
            if not isinstance(body, dict) or not isinstance(body.get("data", []), list):
                raise APIError("list_batches: unexpected response shape")
            data = list(body.get("data") or [])
            if not data:
                return
            fresh = 0
            for item in data:
                batch = _batch(item, "list_batches")
                if batch.id in seen:
                    continue
                seen.add(batch.id)
                fresh += 1
                yield batch
            if body.get("has_more") is False or fresh == 0:
                return
            after = batch.id


def _batch(data: Any, operation: str) -> Batch:
    try:
        return Batch.from_json(data)
    except (KeyError, TypeError, ValueError, AttributeError):
        raise APIError(f"{operation}: unexpected batch object in response") from None


def _batch_url(batch_id: str) -> str:
    if not batch_id:
        raise ValueError("empty batch id")
    return "batches/" + quote(batch_id, safe="")
