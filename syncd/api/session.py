"""How one call goes to the provider: paced, held, sent, retried, and its answer judged.

:class:`Session` is the plumbing every call of :class:`~syncd.api.client.FilesClient`
goes through: one HTTP connection pool with the key as a bearer token, the pacer
(:mod:`syncd.api.pacing`) and the Retry-After holds (:mod:`syncd.api.retry`) of each
call class, the guard that cuts calls short (:mod:`syncd.api.guard`), and the server's
clock as its answers show it. :meth:`Session._exchange` is one paced attempt, read
whole and classified (:mod:`syncd.api._http`); :meth:`Session._receive_into` the same
with the body streamed to a file and its size checked; :meth:`Session._simple` an
idempotent call retried on any failure. What a failure means for a call that must not
be sent twice (an upload, a batch's create) is decided by that call.
"""

from __future__ import annotations

import hashlib
import ssl
import time
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager
from typing import Any, BinaryIO, TypeVar
from urllib.parse import quote, urlsplit

import httpx

import syncd
from syncd.api._http import describe_transport_error, error_for_response, request_phase
from syncd.api.clock import ServerClock
from syncd.api.errors import (
    APIError,
    IncompleteDownloadError,
    NetworkError,
    RateLimitedError,
    RequestPhase,
)
from syncd.api.guard import CallGuard, receive, streaming
from syncd.api.key import ApiKey
from syncd.api.models import CallClass, Downloaded
from syncd.api.options import ClientOptions
from syncd.api.pacing import Pacer
from syncd.api.providers import DASHSCOPE, Provider
from syncd.api.retry import Holds, run_call

T = TypeVar("T")

# A download may take the usual response time plus its size at this rate (a 500 MB batch
# output on a slow link must not time out for being large).
DOWNLOAD_FLOOR_BPS = 256 * 1024
DOWNLOAD_BLOCK = 1024 * 1024


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


class Session:
    """The connection, pacing, holds and guard of one client, and the attempts every
    call is made of (see the module doc). Thread-safe."""

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
            upload_bytes_per_s=self._options.upload_bytes_per_s,
        )
        self.clock = ServerClock()

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

    @contextmanager
    def _paced(self, call_class: CallClass, request: httpx.Request) -> Iterator[None]:
        """Wait out the class's hold and its pacer's grant; have the request marked sent
        when its headers leave, and the grant given back if the attempt ends before."""
        self._holds.before_send(call_class, self._options.retry, self._guard.sleep)
        granted_at, _waited = self._pacer.grant(call_class)
        left = False

        def trace(event: str, _info: dict[str, Any]) -> None:
            # The server counts a request when its headers arrive; time spent between
            # our grant and this moment (a busy GIL, a new connection) must not let the
            # next window start early.
            nonlocal left
            if event == "http11.send_request_headers.complete":
                left = True
                self._pacer.mark_sent(call_class, granted_at)

        request.extensions["trace"] = trace
        try:
            yield
        except BaseException:
            if not left:  # refused connection, cancelled call: nothing reached the server
                self._pacer.never_sent(call_class, granted_at)
            raise

    def _exchange(self, call_class: CallClass, request: httpx.Request) -> httpx.Response:
        """One paced attempt: send, read, and classify the response.

        Transport errors propagate as httpx exceptions for the caller to classify,
        since only it knows whether a lost response is harmless; a response that does
        not complete within ``Timeouts.response_within`` is a ReadTimeout.
        """
        with self._paced(call_class, request):
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
                raise network_error(exc, operation) from None

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
        before = time.time()
        within = self._options.timeouts.response_within + size / DOWNLOAD_FLOOR_BPS
        with self._paced(call_class, request), \
                streaming(self._http, request, self._guard, within, call_class) as response:
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

    def close(self) -> None:
        self._http.close()
        self._pacer.close()


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


def network_error(
    exc: httpx.TransportError, operation: str, *, phase: RequestPhase | None = None
) -> NetworkError:
    if isinstance(exc, httpx.UnsupportedProtocol | httpx.LocalProtocolError | httpx.ProxyError):
        # Configuration faults: retrying cannot help, so they stay non-retryable.
        raise APIError(f"{operation}: {describe_transport_error(exc)}") from None
    return NetworkError(
        f"{operation}: {describe_transport_error(exc)}", phase=phase or request_phase(exc)
    )


def file_url(file_id: str) -> str:
    """The path of a file's resource, relative to the base URL."""
    if not file_id:
        raise ValueError("empty file id")
    return "files/" + quote(file_id, safe="")
