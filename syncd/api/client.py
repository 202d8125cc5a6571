"""The Files API client: syncd's only way to the provider (or the emulator)."""

from __future__ import annotations

import errno
import hashlib
import os
import ssl
import stat
import time
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields
from pathlib import Path
from typing import IO, Any, BinaryIO, TypeVar, cast
from urllib.parse import quote, urlsplit

import httpx
import structlog

import syncd
from syncd.api._http import (
    HashingReader,
    TrackedStream,
    describe_transport_error,
    error_for_response,
    request_phase,
)
from syncd.api.adoption import UploadWindow, find_own_upload, wire_name
from syncd.api.clock import ServerClock
from syncd.api.errors import (
    AmbiguousCreateError,
    AmbiguousUploadError,
    APIError,
    AuthenticationError,
    DownloadRefusedError,
    IncompleteDownloadError,
    InvalidRequestError,
    NetworkError,
    NotFoundError,
    QuotaExceededError,
    RateLimitedError,
    RetryableError,
    ServerError,
    SourceChangedError,
)
from syncd.api.guard import CallGuard, receive, streaming
from syncd.api.key import ApiKey
from syncd.api.models import Batch, CallClass, Downloaded, RemoteFile
from syncd.api.options import ClientOptions, Rates, RetryPolicy, Timeouts
from syncd.api.pacing import Pacer
from syncd.api.providers import DASHSCOPE, Provider
from syncd.api.retry import Holds, run_call

__all__ = [
    "ApiKey",
    "ClientOptions",
    "FilesClient",
    "Rates",
    "RetryPolicy",
    "Timeouts",
    "UploadedFile",
    "upload_once",
]

log = structlog.get_logger(__name__)

T = TypeVar("T")

# The provider's largest page of batches (both document 1-100).
BATCH_PAGE_MAX = 100
# A download may take the usual response time plus its size at this rate (a 500 MB batch
# output on a slow link must not time out for being large).
DOWNLOAD_FLOOR_BPS = 256 * 1024
DOWNLOAD_BLOCK = 1024 * 1024


@dataclass(frozen=True, slots=True, eq=False)
class UploadedFile(RemoteFile):
    """The file an upload created, with the sha256 of the bytes the upload sent (read
    once for both); None if the body was not read through.

    It equals the RemoteFile the provider lists for it: the hash is what we know of
    the bytes, not part of the provider's description."""

    sha256: str | None = None

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RemoteFile):
            return NotImplemented
        return all(getattr(self, f.name) == getattr(other, f.name) for f in fields(RemoteFile))

    def __hash__(self) -> int:
        return RemoteFile.__hash__(self)


class _BearerAuth(httpx.Auth):
    def __init__(self, key: ApiKey | None) -> None:
        self._key = key

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        # No key: a server without auth (a provider profile may allow it).
        if self._key is not None:
            request.headers["Authorization"] = f"Bearer {self._key.reveal()}"
        yield request

    def __repr__(self) -> str:
        return "_BearerAuth()"


class FilesClient:
    """Thread-safe client of the Files API.

    Every call is paced per call class (see :mod:`syncd.api.pacing`) and retried
    on 429, 5xx and network failures within the :class:`RetryPolicy`. Uploads
    whose request may have reached the server are never re-sent: they raise
    :class:`AmbiguousUploadError`.
    """

    def __init__(
        self,
        base_url: str,
        api_key: ApiKey | None,
        options: ClientOptions | None = None,
        *,
        transport: httpx.BaseTransport | None = None,
        provider: Provider = DASHSCOPE,
    ) -> None:
        self._base_url = base_url.rstrip("/")
        self._key = api_key
        self._provider = provider
        # Without a key, pacing and state identity are per endpoint instead.
        self._fingerprint = (
            api_key.fingerprint() if api_key is not None else _anonymous(self._base_url)
        )
        self._options = options or ClientOptions()
        t = self._options.timeouts
        limit = self._options.max_connections
        self._http = httpx.Client(
            base_url=self._base_url + "/",
            auth=_BearerAuth(api_key),
            timeout=httpx.Timeout(connect=t.connect, read=t.read, write=t.write, pool=t.pool),
            limits=httpx.Limits(max_connections=limit, max_keepalive_connections=limit),
            headers={"User-Agent": f"syncd/{syncd.__version__}"},
            follow_redirects=False,
            transport=transport,
            verify=_tls(self._base_url),
        )
        # Cuts every call short for good (a one-off command's Ctrl-C): see cancel().
        self._guard = CallGuard()
        self._holds = Holds()
        rates = self._options.rates
        self._pacer = Pacer(
            {"upload": rates.upload, "read": rates.read, "delete": rates.delete},
            state_dir=self._options.pacing_dir,
            key_fingerprint=self._fingerprint,
            margin=self._options.pacing_margin,
            sleep=self._guard.sleep,
        )
        self.clock = ServerClock()

    def __repr__(self) -> str:
        return f"FilesClient(base_url={self._base_url!r}, key={self._key!r})"

    @property
    def key_fingerprint(self) -> str:
        return self._fingerprint

    @property
    def provider(self) -> Provider:
        return self._provider

    def _scrub(self) -> str:
        """What error messages must not contain (revealed per call, never stored)."""
        return self._key.reveal() if self._key is not None else ""

    @property
    def pacer(self) -> Pacer:
        return self._pacer

    @property
    def options(self) -> ClientOptions:
        return self._options

    @property
    def guard(self) -> CallGuard:
        return self._guard

    def cancel(self) -> None:
        """Cut every call short, now and for good, from any thread: a read or write in
        flight ends at once (an upload whose body was sent is then ambiguous), waits
        end, and later calls send nothing (CallCancelledError)."""
        self._guard.cancel()

    # -- plumbing -------------------------------------------------------------

    def _retrying(self, call_class: CallClass, operation: str, fn: Callable[[], T]) -> T:
        guard = self._guard
        return run_call(self._options.retry, fn, call_class=call_class, operation=operation,
                        sleep=guard.sleep, cancelled=lambda: guard.cancelled)  # fmt: skip

    def _exchange(self, call_class: CallClass, request: httpx.Request) -> httpx.Response:
        """One paced attempt: send, read, and classify the response.

        Transport errors propagate as httpx exceptions for the caller to classify,
        since only it knows whether a lost response is harmless; a response that does
        not complete within ``Timeouts.response_within`` is a ReadTimeout.
        """
        self._holds.before_send(call_class, self._options.retry, self._guard.sleep)
        granted_at, _waited = self._pacer.grant(call_class)

        def trace(event: str, _info: dict[str, Any]) -> None:
            # The server counts a request when its headers arrive; time spent between
            # our grant and this moment (a busy GIL, a new connection) must not let the
            # next window start early.
            if event == "http11.send_request_headers.complete":
                self._pacer.mark_sent(call_class, granted_at)

        request.extensions["trace"] = trace
        before = time.time()
        within = self._options.timeouts.response_within
        response = receive(self._http, request, self._guard, within, call_class)
        self.clock.observe(response.headers.get("date"), before, time.time())
        if response.status_code == 429:
            error = error_for_response(response, self._scrub(), self._provider)
            assert isinstance(error, RateLimitedError)
            self._pacer.on_throttled(call_class, error.retry_after)
            raise self._holds.throttled(call_class, error, self._options.retry)
        if response.is_success:
            self._pacer.on_success(call_class)
            return response
        raise error_for_response(response, self._scrub(), self._provider)

    def _simple(
        self,
        call_class: CallClass,
        operation: str,
        method: str,
        url: str,
        *,
        params: dict[str, Any] | None = None,
    ) -> httpx.Response:
        """An idempotent call: any network failure is retried."""

        def attempt() -> httpx.Response:
            request = self._http.build_request(method, url, params=params)
            try:
                return self._exchange(call_class, request)
            except httpx.TransportError as exc:
                raise _network_error(exc, operation) from None

        return self._retrying(call_class, operation, attempt)

    def _json(self, response: httpx.Response, operation: str) -> Any:
        try:
            return response.json()
        except ValueError:
            raise APIError(
                f"{operation}: response is not JSON",
                status=response.status_code,
                request_id=response.headers.get("x-request-id"),
            ) from None

    # -- calls ----------------------------------------------------------------

    def upload(
        self,
        source: Path | BinaryIO,
        purpose: str,
        *,
        filename: str | None = None,
        on_sent: Callable[[UploadWindow], None] | None = None,
    ) -> UploadedFile:
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
                size = os.fstat(fh.fileno()).st_size
                reader = HashingReader(fh, size)
                last_sent: list[float] = []

                def before_last() -> None:
                    now = time.time()
                    last_sent.append(now)
                    if on_sent is not None:
                        on_sent(self.window(now, now + read_timeout))

                # The encoder needs only fileno, seek, tell and read of a file.
                stream = cast(IO[bytes], reader)
                request = self._http.build_request(
                    "POST", "files", data={"purpose": purpose}, files={"file": (name, stream)}
                )
                assert isinstance(request.stream, httpx.SyncByteStream)
                body = TrackedStream(request.stream, before_last)
                request.stream = body

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
                    if changed := _size_changed(fh, size, name):
                        raise changed from None
                    phase = request_phase(exc)
                    if phase == "receive" and body.completed:
                        log.warning(
                            "api.upload.ambiguous",
                            filename=name,
                            size=size,
                            error=type(exc).__name__,
                        )
                        raise lost(
                            f"response lost after the body was sent "
                            f"({describe_transport_error(exc)})"
                        ) from None
                    raise _network_error(
                        exc, "upload", phase="send" if phase != "connect" else "connect"
                    ) from None
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

        response, sha256 = self._retrying("upload", "upload", attempt)
        created = _remote_file(self._json(response, "upload"), "upload")
        return UploadedFile(**{f.name: getattr(created, f.name) for f in fields(created)},
                            sha256=sha256)  # fmt: skip

    def window(self, sent_at: float, until: float) -> UploadWindow:
        """The provider-clock window of an attempt sent at ``sent_at`` (host clock)
        whose outcome was due by ``until``."""
        return UploadWindow.of_attempt(sent_at, until, self.clock.offset())

    def retrieve(self, file_id: str) -> RemoteFile:
        response = self._simple("read", "retrieve", "GET", _file_url(file_id))
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
        while True:
            data, has_more = self._list_page(after=after, limit=page_size, purpose=purpose)
            if not data:
                return
            fresh = 0
            for item in data:
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

    def delete(self, file_id: str) -> None:
        """Raises NotFoundError when the id does not exist.

        When an earlier attempt may have deleted the file (its response was lost or
        was a 5xx), a 404 on the retry means the delete took effect and is success.
        """
        may_have_acted = False
        url = _file_url(file_id)

        def attempt() -> None:
            nonlocal may_have_acted
            request = self._http.build_request("DELETE", url)
            try:
                self._exchange("delete", request)
            except httpx.TransportError as exc:
                error = _network_error(exc, "delete")
                if error.phase == "receive":
                    may_have_acted = True
                raise error from None
            except NotFoundError:
                if may_have_acted:
                    log.info("api.delete.already_gone", file_id=file_id)
                    return
                raise
            except RetryableError as exc:
                if exc.status is not None and exc.status >= 500:
                    may_have_acted = True
                raise

        self._retrying("delete", "delete", attempt)

    def content(self, file_id: str) -> bytes:
        response = self._simple("read", "content", "GET", _file_url(file_id) + "/content")
        return response.content

    def download(
        self, file_id: str, dest: BinaryIO, *, size: int | None = None, purpose: str | None = None
    ) -> Downloaded:
        """Write the content of ``file_id`` to ``dest`` as it arrives, paced and retried as a
        read, and check it is ``size`` bytes (the file's ``bytes``; retrieved first when not
        given). Returns the size and the sha256 of what was written.

        ``dest`` is written from its position at the call; a seekable one is rewound and
        truncated there before each retry, so it ends holding exactly the file. A stream
        that cannot be rewound is retried only while nothing was written to it.

        Raises DownloadRefusedError when the provider does not serve this file's content
        (``purpose``, if given, is named in it), NotFoundError for an unknown id, and
        IncompleteDownloadError when the body kept coming out at another size."""
        url = _file_url(file_id) + "/content"
        if size is None:
            remote = self.retrieve(file_id)
            size, purpose = remote.bytes, purpose or remote.purpose
        expected = size
        try:
            start: int | None = dest.tell() if dest.seekable() else None
        except OSError:
            start = None
        wrote = [False]

        def attempt() -> Downloaded:
            if start is not None:
                dest.seek(start)
                dest.truncate()
            elif wrote[0]:
                raise APIError(f"download of {file_id}: failed after part of it was written to"
                               " a stream that cannot be rewound; not retried")  # fmt: skip
            request = self._http.build_request("GET", url)
            try:
                return self._receive_into("read", request, dest, expected, file_id, wrote)
            except httpx.TransportError as exc:
                raise _network_error(exc, "download") from None
            except QuotaExceededError:
                raise
            except (InvalidRequestError, AuthenticationError) as exc:
                if isinstance(exc, AuthenticationError) and exc.status != 403:
                    raise
                what = f" of purpose {purpose!r}" if purpose else ""
                raise DownloadRefusedError(
                    f"the provider does not serve the content of {file_id}{what}: {exc.message}",
                    file_id=file_id,
                    purpose=purpose,
                    status=exc.status,
                    code=exc.code,
                    request_id=exc.request_id,
                ) from None

        return self._retrying("read", "download", attempt)

    def _receive_into(
        self,
        call_class: CallClass,
        request: httpx.Request,
        dest: BinaryIO,
        size: int,
        file_id: str,
        wrote: list[bool],
    ) -> Downloaded:
        """One paced download attempt: as :meth:`_exchange`, with the body written to
        ``dest`` chunk by chunk instead of read into memory."""
        self._holds.before_send(call_class, self._options.retry, self._guard.sleep)
        granted_at, _waited = self._pacer.grant(call_class)

        def trace(event: str, _info: dict[str, Any]) -> None:
            if event == "http11.send_request_headers.complete":
                self._pacer.mark_sent(call_class, granted_at)

        request.extensions["trace"] = trace
        before = time.time()
        within = self._options.timeouts.response_within + size / DOWNLOAD_FLOOR_BPS
        with streaming(self._http, request, self._guard, within, call_class) as response:
            self.clock.observe(response.headers.get("date"), before, time.time())
            if not response.is_success:
                response.read()
                error = error_for_response(response, self._scrub(), self._provider)
                if isinstance(error, RateLimitedError):
                    self._pacer.on_throttled(call_class, error.retry_after)
                    raise self._holds.throttled(call_class, error, self._options.retry)
                raise error
            self._pacer.on_success(call_class)
            announced = response.headers.get("content-length")
            encoded = response.headers.get("content-encoding", "identity") != "identity"
            if announced is not None and announced.isdigit() and not encoded \
                    and int(announced) != size:  # fmt: skip
                raise IncompleteDownloadError(
                    f"download of {file_id}: the provider announced {announced} bytes,"
                    f" the file has {size}",
                    status=response.status_code,
                    request_id=response.headers.get("x-request-id"),
                )
            digest = hashlib.sha256()
            count = 0
            for chunk in response.iter_bytes(DOWNLOAD_BLOCK):
                count += len(chunk)
                if count > size:
                    break
                dest.write(chunk)
                wrote[0] = True
                digest.update(chunk)
        if count != size:
            raise IncompleteDownloadError(
                f"download of {file_id}: got {'more than ' if count > size else ''}{count}"
                f" bytes of {size}",
                status=response.status_code,
                request_id=response.headers.get("x-request-id"),
            )
        dest.flush()
        return Downloaded(bytes=count, sha256=digest.hexdigest())

    # -- batches ----------------------------------------------------------------

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
                raise _network_error(
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

    def find_uploaded(self, window: UploadWindow) -> Iterator[RemoteFile]:
        """Remote files created within ``window`` or later, newest first: listing stops
        as soon as pages are older than the window."""
        # Pages of the size the listing uses: a server whose cursor skips entries at a
        # page's edge must skip none here that the configured size avoids.
        for remote in self.iter_files():
            if remote.created_at < window.earliest:
                return
            yield remote

    def close(self) -> None:
        self._http.close()
        self._pacer.close()

    def __enter__(self) -> FilesClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _tls(base_url: str) -> ssl.SSLContext | bool:
    """Certificate checks for the endpoint. A plain-http endpoint never needs TLS (no
    redirect is followed), so it gets a context that trusts no authority: nothing can be
    accepted unverified, and start-up does not load the CA bundle (a tenth of a second,
    which is what a short one-off run spends on it)."""
    if urlsplit(base_url).scheme == "http":
        return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    return True


def _anonymous(base_url: str) -> str:
    return "anon-" + hashlib.sha256(base_url.encode()).hexdigest()[:7]


def _remote_file(data: Any, operation: str) -> RemoteFile:
    try:
        return RemoteFile.from_json(data)
    except (KeyError, TypeError, ValueError):
        raise APIError(f"{operation}: unexpected file object in response") from None


def _batch(data: Any, operation: str) -> Batch:
    try:
        return Batch.from_json(data)
    except (KeyError, TypeError, ValueError, AttributeError):
        raise APIError(f"{operation}: unexpected batch object in response") from None


def _batch_url(batch_id: str) -> str:
    if not batch_id:
        raise ValueError("empty batch id")
    return "batches/" + quote(batch_id, safe="")


def _file_url(file_id: str) -> str:
    if not file_id:
        raise ValueError("empty file id")
    return "files/" + quote(file_id, safe="")


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


def _network_error(
    exc: httpx.TransportError, operation: str, *, phase: str | None = None
) -> NetworkError:
    if isinstance(exc, httpx.UnsupportedProtocol | httpx.LocalProtocolError | httpx.ProxyError):
        # Configuration faults: retrying cannot help, so they stay non-retryable.
        raise APIError(f"{operation}: {describe_transport_error(exc)}") from None
    return NetworkError(
        f"{operation}: {describe_transport_error(exc)}", phase=phase or request_phase(exc)
    )


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
                log.info("api.upload.adopted", filename=exc.filename, file_id=found.id)
                return found
            log.info("api.upload.not_stored", filename=exc.filename)
    assert last is not None
    raise last
