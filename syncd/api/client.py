"""The Files API client: syncd's only way to the provider (or the emulator).

:class:`FilesClient` holds the files calls (upload, retrieve, list, delete, content,
download) and, from :class:`~syncd.api.batch_calls.BatchCalls`, the Batch API's; every
call goes through the plumbing of :class:`~syncd.api.session.Session` (pacing,
Retry-After holds, retries, the guard). Here is what an upload's failure means: sent
again, ambiguous (the provider may have stored the file: never re-sent, see
:func:`upload_once`), or the file changed while it was sent.
"""

from __future__ import annotations

import errno
import os
import stat
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, BinaryIO, cast

import httpx
import structlog

from syncd import events
from syncd.api._http import HashingReader, TrackedStream, describe_transport_error, request_phase
from syncd.api.adoption import UploadWindow, find_own_upload, wire_name
from syncd.api.batch_calls import BatchCalls
from syncd.api.byte_pacer import MeteredStream
from syncd.api.download_calls import DownloadCalls
from syncd.api.errors import (
    AmbiguousUploadError,
    APIError,
    NotFoundError,
    RetryableError,
    ServerError,
    SourceChangedError,
)
from syncd.api.key import ApiKey
from syncd.api.models import RemoteFile, Sent
from syncd.api.options import ClientOptions, Rates, RetryPolicy, Timeouts
from syncd.api.scrub import holds_secret
from syncd.api.session import file_url, network_error
from syncd.api.vector_calls import VectorCalls

__all__ = [
    "ApiKey",
    "ClientOptions",
    "FilesClient",
    "Rates",
    "RetryPolicy",
    "Timeouts",
    "upload_once",
]

log = structlog.get_logger(__name__)


class FilesClient(VectorCalls, BatchCalls, DownloadCalls):
    """Thread-safe client of the Files API.

    Every call is paced per call class (see :mod:`syncd.api.pacing`) and retried
    on 429, 5xx and network failures within the :class:`RetryPolicy`. Uploads
    whose request may have reached the server are never re-sent: they raise
    :class:`AmbiguousUploadError`. Made with the arguments of
    :class:`~syncd.api.session.Session`.
    """

    def __repr__(self) -> str:
        return f"FilesClient(base_url={self._base_url!r}, key={self._key!r})"

    # -- calls ----------------------------------------------------------------

    def upload(
        self,
        source: Path | BinaryIO,
        purpose: str,
        *,
        filename: str | None = None,
        on_sent: Callable[[UploadWindow], None] | None = None,
    ) -> RemoteFile:
        """The file :meth:`send` creates."""
        return self.send(source, purpose, filename=filename, on_sent=on_sent).file

    def send(
        self,
        source: Path | BinaryIO,
        purpose: str,
        *,
        filename: str | None = None,
        on_sent: Callable[[UploadWindow], None] | None = None,
    ) -> Sent:
        """Stream ``source`` (re-read from the start on each retry), hashing the bytes
        as they are sent: the result carries their sha256.

        ``source`` is a path (opened per attempt, without blocking, and refused with
        OSError unless it is a regular file) or a regular file the caller opened and
        checked (rewound per attempt, left open; ``filename`` is then required): a
        caller that must send exactly the bytes it looked at passes the file.

        ``on_sent`` is called just before the body's last chunk leaves, with the
        window in which the provider could store the file from then on; a caller
        that must survive its own crash records it there. Raises
        AmbiguousUploadError when the request may have reached the server but no
        usable response came, SourceChangedError when the file changed size while
        it was sent."""
        if isinstance(source, str | os.PathLike):
            source = Path(source)
            name = filename if filename is not None else source.name
        elif filename is None:
            raise ValueError("a filename is needed to upload an open file")
        else:
            name = filename
        if not name:
            raise ValueError(f"no filename for {source}")
        read_timeout = self._options.timeouts.read

        def attempt() -> tuple[httpx.Response, str | None]:
            # From the first byte on each attempt, even if the previous one died
            # mid-stream.
            with _body(source) as fh:
                return self._upload_attempt(fh, name, purpose, on_sent, read_timeout)

        response, sha256 = self._retrying("upload", "upload", attempt)
        created = _remote_file(self._json(response, "upload"), "upload")
        return Sent(created, sha256)

    def _upload_attempt(
        self,
        fh: BinaryIO,
        name: str,
        purpose: str,
        on_sent: Callable[[UploadWindow], None] | None,
        read_timeout: float,
    ) -> tuple[httpx.Response, str | None]:
        """One attempt of :meth:`upload`, from ``fh``'s first byte: the response, and the
        sha256 of the body if it was sent whole; a failure raised as what it means."""
        size = os.fstat(fh.fileno()).st_size
        reader = HashingReader(fh, size)
        last_sent: list[float] = []

        def before_last() -> None:
            now = time.time()
            last_sent.append(now)
            if on_sent is not None:
                on_sent(self.window(now, now + read_timeout))

        request, body = self._upload_request(reader, name, purpose, before_last)

        def lost(message: str, **kw: Any) -> AmbiguousUploadError:
            window = self.window(last_sent[-1], time.time())
            return AmbiguousUploadError(
                f"upload of {name!r}: {message}",
                filename=wire_name(name),
                size=size,
                window=window,
                **kw,
            )

        try:
            response = self._exchange("upload", request)
        except SourceChangedError as exc:  # from the reader, mid-body
            raise SourceChangedError(f"upload of {name!r}: {exc}") from None
        except httpx.TransportError as exc:
            raise _transport_failure(exc, fh, size, name, body, lost) from None
        except ServerError as exc:
            # A 5xx may come after the file was stored (a gateway giving up on
            # its backend, a fault after the write): never re-send blindly.
            if not body.completed:
                raise
            raise lost(
                f"server answered {exc.status}, it may have stored the file",
                status=exc.status,
                request_id=exc.request_id,
            ) from None
        except APIError:
            raise
        except Exception:
            # Whatever else the HTTP stack raises over a body that no longer
            # matches its declared length (h11's LocalProtocolError is not an
            # httpx error) is the file changing, if it did.
            if changed := _size_changed(fh, size, name):
                raise changed from None
            raise
        return response, reader.sha256 if body.completed else None

    def _upload_request(
        self, reader: HashingReader, name: str, purpose: str, before_last: Callable[[], None]
    ) -> tuple[httpx.Request, TrackedStream]:
        """The request of an upload attempt, its body read through ``reader`` and
        ``before_last`` called just before the body's last chunk leaves."""
        # The encoder needs only fileno, seek, tell and read of a file.
        stream = cast(IO[bytes], reader)
        request = self._http.build_request(
            "POST", "files", data={"purpose": purpose}, files={"file": (name, stream)}
        )
        assert isinstance(request.stream, httpx.SyncByteStream)
        inner: httpx.SyncByteStream = request.stream
        if self._pacer.bytes is not None:
            # Written piece by piece, each granted by the shared byte bucket first.
            inner = MeteredStream(inner, self._pacer.bytes)
        body = TrackedStream(inner, before_last)
        request.stream = body
        return request, body

    def window(self, sent_at: float, until: float) -> UploadWindow:
        """The provider-clock window of an attempt sent at ``sent_at`` (host clock)
        whose outcome was due by ``until``."""
        return UploadWindow.of_attempt(sent_at, until, self.clock.offset())

    def retrieve(self, file_id: str) -> RemoteFile:
        response = self._simple("read", "retrieve", "GET", file_url(file_id))
        return _remote_file(self._json(response, "retrieve"), "retrieve")

    def _list_page(
        self, *, after: str | None, limit: int, purpose: str | None
    ) -> tuple[list[dict[str, Any]], bool | None]:
        params: dict[str, Any] = {"limit": limit}
        if self._provider.list_order:
            params["order"] = "desc"
        if after is not None:
            params["after"] = after
        if purpose is not None:
            params["purpose"] = purpose
        body = self._json(self._simple("read", "list", "GET", "files", params=params), "list")
        if not isinstance(body, dict) or not isinstance(body.get("data", []), list):
            raise APIError("list: unexpected response shape")
        has_more = body.get("has_more")
        return list(body.get("data") or []), has_more if isinstance(has_more, bool) else None

    def iter_files(
        self, *, purpose: str | None = None, page_size: int | None = None
    ) -> Iterator[RemoteFile]:
        """Every file of the account, newest first, following the ``after`` cursor;
        pages of the provider profile's size unless ``page_size`` says otherwise."""
        most = self._provider.list_max_page_size
        page_size = self._provider.list_page_size if page_size is None else page_size
        if not 1 <= page_size <= most:
            raise ValueError(f"page_size must be 1..{most}")
        after: str | None = None
        seen: set[str] = set()
        words: dict[str, str] = {}
        while True:
            data, has_more = self._list_page(after=after, limit=page_size, purpose=purpose)
            if not data:
                return
            fresh = 0
            for item in data:
                _share_words(item, words)
                remote = _remote_file(item, "list")
                if remote.id in seen:
                    continue
                seen.add(remote.id)
                fresh += 1
                yield remote
            # A server that ignores the cursor would otherwise loop forever.
            if has_more is False or fresh == 0:
                return
            after = remote.id  # the last item of the page

    def list_files(self, *, purpose: str | None = None) -> list[RemoteFile]:
        return list(self.iter_files(purpose=purpose))

    def check_key(self) -> None:
        """One call whatever the account's size (a page of one file): raises
        AuthenticationError when the provider refuses the key, and what any read
        raises when it cannot be reached."""
        self._list_page(after=None, limit=1, purpose=None)

    def delete(self, file_id: str) -> None:
        """Raises NotFoundError when the id does not exist.

        When an earlier attempt may have deleted the file (its response was lost or
        was a 5xx), a 404 on the retry means the delete took effect and is success.
        """
        may_have_acted = False
        url = file_url(file_id)

        def attempt() -> None:
            nonlocal may_have_acted
            request = self._http.build_request("DELETE", url)
            try:
                self._exchange("delete", request)
            except httpx.TransportError as exc:
                error = network_error(exc, "delete")
                if error.phase == "receive":
                    may_have_acted = True
                raise error from None
            except NotFoundError:
                if may_have_acted:
                    log.info(events.API_DELETE_ALREADY_GONE, file_id=file_id)
                    return
                raise
            except RetryableError as exc:
                if exc.status is not None and exc.status >= 500:
                    may_have_acted = True
                raise

        self._retrying("delete", "delete", attempt)

    def content(self, file_id: str) -> bytes:
        response = self._simple("read", "content", "GET", file_url(file_id) + "/content")
        return response.content

    def find_uploaded(self, window: UploadWindow) -> Iterator[RemoteFile]:
        """Remote files created within ``window`` or later, newest first: listing stops
        as soon as pages are older than the window."""
        # Pages of the size the listing uses: a server whose cursor skips entries at a
        # page's edge must skip none here that the configured size avoids.
        for remote in self.iter_files():
            if remote.created_at < window.earliest:
                return
            yield remote

    def __enter__(self) -> FilesClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _remote_file(data: Any, operation: str) -> RemoteFile:
    try:
        remote = RemoteFile.from_json(data)
    except (KeyError, TypeError, ValueError):
        raise APIError(f"{operation}: unexpected file object in response") from None
    # An id or a name is kept as given (in the state, the mapping, what consumers read):
    # one that spells the key out is refused, not stored.
    if holds_secret(remote.id) or holds_secret(remote.filename):
        raise APIError(f"{operation}: a file object in the response holds the API key")
    return remote


def _share_words(item: Any, words: dict[str, str]) -> None:
    """One str object per purpose and status word across a listing, not one per file:
    a 100,000-file account repeats a handful of them. Ids and names are interned: the
    state's records and the claims hold the same ones."""
    if isinstance(item, dict):
        for key in ("purpose", "status", "object"):
            value = item.get(key)
            if isinstance(value, str):
                item[key] = words.setdefault(value, value)
        for key in ("id", "filename"):
            value = item.get(key)
            if isinstance(value, str):
                item[key] = sys.intern(value)


@contextmanager
def _body(source: Path | BinaryIO) -> Iterator[BinaryIO]:
    """The file an upload attempt reads, at its first byte: a path opened for the
    attempt (closed after it), or the caller's open file rewound (left open)."""
    if not isinstance(source, Path):
        source.seek(0)
        yield source
        return
    # O_NONBLOCK: a named pipe at the path must not hang the upload in open().
    fd = os.open(source, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(source))
        os.set_blocking(fd, True)
        fh = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    with fh:
        yield fh


def _size_changed(fh: IO[bytes], size: int, name: str) -> SourceChangedError | None:
    """The error to raise if the open file is no longer ``size`` bytes long."""
    now = os.fstat(fh.fileno()).st_size
    if now == size:
        return None
    return SourceChangedError(
        f"upload of {name!r}: the file changed size while it was sent ({size} -> {now} bytes)"
    )


def _transport_failure(
    exc: httpx.TransportError,
    fh: IO[bytes],
    size: int,
    name: str,
    body: TrackedStream,
    lost: Callable[..., AmbiguousUploadError],
) -> APIError:
    """What a transport error of an upload attempt means: the file changed size, the
    answer lost after the body was sent whole (ambiguous: never sent again), or a
    network error to retry."""
    if changed := _size_changed(fh, size, name):
        return changed
    phase = request_phase(exc)
    if phase == "receive" and body.completed:
        log.warning(
            "api.upload.ambiguous",
            filename=name,
            size=size,
            error=type(exc).__name__,
        )
        return lost(f"response lost after the body was sent ({describe_transport_error(exc)})")
    return network_error(exc, "upload", phase="send" if phase != "connect" else "connect")


def upload_once(
    client: FilesClient,
    path: Path,
    purpose: str,
    *,
    filename: str | None = None,
    max_tries: int = 5,
) -> RemoteFile:
    """Upload ``path`` so that it exists exactly once remotely, despite lost responses.

    After an ambiguous attempt, look for the file it may have created (same name and
    size, created within the attempt's window): adopt it if there, else upload again.
    Two uploads of identical name and size in the same seconds are indistinguishable
    this way; callers that need more serialize such uploads and keep a record of
    what they own (as the sync engine does).
    """
    last: AmbiguousUploadError | None = None
    for _ in range(max_tries):
        try:
            return client.upload(path, purpose, filename=filename)
        except AmbiguousUploadError as exc:
            last = exc
            found = find_own_upload(
                exc.filename, exc.size, exc.window, client.find_uploaded(exc.window), ()
            )
            if found is not None:
                log.info(events.API_UPLOAD_ADOPTED, filename=exc.filename, file_id=found.id)
                return found
            log.info(events.API_UPLOAD_NOT_STORED, filename=exc.filename)
    assert last is not None
    raise last
