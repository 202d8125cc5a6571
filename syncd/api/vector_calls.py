"""The vector store calls (OpenAI and compatible servers): stores, attachments, file batches.

:class:`VectorCalls` adds them to the :class:`~syncd.api.session.Session` every call goes
through, so they are paced and retried like the files calls: creating a store, attaching
and cancelling are the ``upload`` class (writes), reads and listings the ``read`` class,
detaching the ``delete`` class. Attaching is idempotent on the provider (one attachment
per file id and store), so an attach or a file batch is retried on any failure. Creating a
store is not: one whose answer may have been lost raises
:class:`~syncd.api.errors.AmbiguousCreateError` carrying the store's metadata, by which the
caller finds it before it creates another (:mod:`syncd.engine.attach`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx
import structlog

from syncd.api._http import TrackedStream, describe_transport_error, request_phase
from syncd.api.errors import AmbiguousCreateError, APIError, NotFoundError, ServerError
from syncd.api.models import CallClass
from syncd.api.session import Session, network_error

log = structlog.get_logger(__name__)

# The provider's largest page of vector store files, and of files in one batch.
VECTOR_PAGE_MAX = 100
FILE_BATCH_MAX = 2000
Attributes = Mapping[str, str | int | float | bool]


@dataclass(frozen=True, slots=True)
class VectorStore:
    id: str
    name: str | None
    metadata: tuple[tuple[str, str], ...] = ()
    file_counts: Mapping[str, int] = field(default_factory=dict)
    usage_bytes: int = 0

    def meta(self, key: str) -> str | None:
        return dict(self.metadata).get(key)


@dataclass(frozen=True, slots=True)
class VectorFile:
    """One attachment: the file's id in a store, its processing status and error."""

    id: str
    status: str
    last_error: str | None = None
    attributes: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class FileBatch:
    id: str
    status: str
    file_counts: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Attach:
    """A file to attach, with its attributes and chunking (None: the store's)."""

    file_id: str
    attributes: Attributes | None = None
    chunking_strategy: Mapping[str, Any] | None = None

    def payload(self) -> dict[str, Any]:
        out: dict[str, Any] = {"file_id": self.file_id}
        if self.attributes:
            out["attributes"] = dict(self.attributes)
        if self.chunking_strategy:
            out["chunking_strategy"] = dict(self.chunking_strategy)
        return out


class VectorCalls(Session):
    """The vector store calls (see the module doc)."""

    def create_vector_store(self, name: str, metadata: Mapping[str, str],
                            chunking_strategy: Mapping[str, Any] | None = None) -> VectorStore:
        payload: dict[str, Any] = {"name": name, "metadata": dict(metadata)}
        if chunking_strategy:
            payload["chunking_strategy"] = dict(chunking_strategy)
        body = self._send_json("upload", "create_vector_store", "POST", "vector_stores",
                               payload, once=dict(metadata))
        return _store(body)

    def retrieve_vector_store(self, store_id: str) -> VectorStore:
        response = self._simple("read", "retrieve_vector_store", "GET", _store_url(store_id))
        return _store(self._json(response, "retrieve_vector_store"))

    def list_vector_stores(self) -> Iterator[VectorStore]:
        for item in self._pages("list_vector_stores", "vector_stores", {}):
            yield _store(item)

    def list_vector_files(self, store_id: str, status: str | None = None
                          ) -> Iterator[VectorFile]:
        """Every attachment of a store (``status``: only those in it), each once."""
        params = {"filter": status} if status else {}
        for item in self._pages("list_vector_files", _store_url(store_id) + "/files", params):
            yield _vfile(item)

    def detach_file(self, store_id: str, file_id: str) -> bool:
        """Detach a file (the file itself stays); False when it was not attached."""
        url = f"{_store_url(store_id)}/files/{quote(file_id, safe='')}"
        try:
            self._simple("delete", "detach_file", "DELETE", url)
        except NotFoundError:
            return False
        return True

    def create_file_batch(self, store_id: str, items: Sequence[Attach]) -> FileBatch:
        if not 1 <= len(items) <= FILE_BATCH_MAX:
            raise ValueError(f"a file batch holds 1..{FILE_BATCH_MAX} files")
        payload = {"files": [i.payload() for i in items]}
        body = self._send_json("upload", "create_file_batch", "POST",
                               _store_url(store_id) + "/file_batches", payload)
        return _fbatch(body)

    def retrieve_file_batch(self, store_id: str, batch_id: str) -> FileBatch:
        url = f"{_store_url(store_id)}/file_batches/{quote(batch_id, safe='')}"
        return _fbatch(self._json(self._simple("read", "retrieve_file_batch", "GET", url),
                                  "retrieve_file_batch"))

    def list_file_batch_files(self, store_id: str, batch_id: str) -> Iterator[VectorFile]:
        url = f"{_store_url(store_id)}/file_batches/{quote(batch_id, safe='')}/files"
        for item in self._pages("list_file_batch_files", url, {}):
            yield _vfile(item)

    # -- plumbing -------------------------------------------------------------

    def _pages(self, operation: str, url: str, params: dict[str, Any]) -> Iterator[Any]:
        """Each item of a cursor-paged listing once; a page of repeats ends it."""
        after: str | None = None
        seen: set[str] = set()
        while True:
            query = {**params, "limit": VECTOR_PAGE_MAX, **({"after": after} if after else {})}
            body = self._json(self._simple("read", operation, "GET", url, params=query), operation)
            if not isinstance(body, dict) or not isinstance(body.get("data", []), list):
                raise APIError(f"{operation}: unexpected response shape")
            fresh = [i for i in body.get("data") or [] if isinstance(i, dict)
                     and str(i.get("id")) not in seen]
            for item in fresh:
                seen.add(str(item.get("id")))
                yield item
            if not fresh or body.get("has_more") is False:
                return
            after = str(fresh[-1].get("id"))

    def _send_json(self, call_class: CallClass, operation: str, method: str, url: str,
                   payload: dict[str, Any], once: dict[str, str] | None = None) -> Any:
        """A JSON request, retried on any failure; with ``once`` (a create that must not
        be sent twice) an answer lost after the body left raises AmbiguousCreateError
        carrying ``once``."""

        def attempt() -> httpx.Response:
            request = self._http.build_request(method, url, json=payload)
            assert isinstance(request.stream, httpx.SyncByteStream)
            body = TrackedStream(request.stream)
            request.stream = body
            try:
                return self._exchange(call_class, request)
            except httpx.TransportError as exc:
                phase = request_phase(exc)
                if once is not None and phase == "receive" and body.completed:
                    log.warning("api.vector.create_ambiguous", error=type(exc).__name__)
                    raise AmbiguousCreateError(
                        f"{operation}: response lost ({describe_transport_error(exc)})",
                        metadata=once) from None
                raise network_error(exc, operation) from None
            except ServerError as exc:
                if once is None or not body.completed:
                    raise
                raise AmbiguousCreateError(
                    f"{operation}: server answered {exc.status}, it may have created it",
                    metadata=once, status=exc.status, request_id=exc.request_id) from None

        return self._json(self._retrying(call_class, operation, attempt), operation)


def _store_url(store_id: str) -> str:
    if not store_id:
        raise ValueError("empty vector store id")
    return "vector_stores/" + quote(store_id, safe="")


def _store(data: Any) -> VectorStore:
    try:
        meta = data.get("metadata") or {}
        return VectorStore(id=str(data["id"]), name=data.get("name"),
                           metadata=tuple((str(k), str(v)) for k, v in meta.items()),
                           file_counts=dict(data.get("file_counts") or {}),
                           usage_bytes=int(data.get("usage_bytes") or 0))
    except (KeyError, TypeError, ValueError, AttributeError):
        raise APIError("unexpected vector store object in response") from None


def _vfile(data: Any) -> VectorFile:
    try:
        error = data.get("last_error")
        why = None
        if isinstance(error, dict):
            why = f"{error.get('code') or 'error'}: {error.get('message') or ''}".strip()
        return VectorFile(id=str(data["id"]), status=str(data.get("status") or "in_progress"),
                          last_error=why, attributes=dict(data.get("attributes") or {}))
    except (KeyError, TypeError, ValueError, AttributeError):
        raise APIError("unexpected vector store file object in response") from None


def _fbatch(data: Any) -> FileBatch:
    try:
        return FileBatch(id=str(data["id"]), status=str(data.get("status") or ""),
                         file_counts=dict(data.get("file_counts") or {}))
    except (KeyError, TypeError, ValueError, AttributeError):
        raise APIError("unexpected file batch object in response") from None
