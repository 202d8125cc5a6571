"""The ASGI application: routing, auth, rate limits, fault injection and introspection."""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from email.utils import formatdate
from typing import Any
from urllib.parse import parse_qs

from anyio import to_thread
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.types import Message, Receive, Scope, Send

from . import errors, validate
from .batches import LIST_DEFAULT, LIST_MAX, BatchRunner
from .faults import FaultDice
from .limits import RateLimiter, retry_after_header
from .link import Link
from .multipart import UploadReader, boundary_of
from .settings import CONTENT_DOWNLOAD, RATE_PROFILES, EmulatorSettings
from .stats import Stats
from .store import FileRecord, Store, account_of
from .transport import drop_connection
from .vector_stores import VectorStores

log = logging.getLogger("syncd.emulator")

ADMIN_PREFIX = "/_emulator"
FEED_BYTES = 1024 * 1024
LOOPBACK = ("127.", "::1", "::ffff:127.")


class _Dropped(Exception):
    """The connection was dropped on purpose; nothing more to send."""


class _ClientGone(Exception):
    pass


@dataclass
class _Call:
    scope: Scope
    receive: Receive
    send: Send
    request_id: str
    account: str = ""

    def header(self, name: str) -> str | None:
        raw = name.encode()
        for key, value in self.scope["headers"]:
            if key == raw:
                return str(value.decode("latin-1"))
        return None

    def query(self) -> dict[str, str]:
        qs = parse_qs(self.scope.get("query_string", b"").decode("latin-1"),
                      keep_blank_values=True)
        return {k: v[-1] for k, v in qs.items()}


Handler = Callable[[_Call], Awaitable[Response | None]]


class EmulatorApp:
    def __init__(self, settings: EmulatorSettings) -> None:
        self.settings = settings
        self.flavor = validate.FLAVORS[settings.flavor]
        self.store = Store(settings.data_dir, clock=self.clock)
        self.limiter = RateLimiter()
        self.stats = Stats()
        self.dice = FaultDice(settings.seed)
        self.link = Link(settings.bandwidth)
        self.batches = BatchRunner(self.store, self.flavor, settings, self.dice, self.stats)
        # Vector stores are OpenAI's; the dashscope flavour has no such routes.
        self.vector_stores = (VectorStores(self.store, settings, self.stats,
                                           self._maybe_drop_after_store)
                              if settings.flavor == "openai" else None)
        self._config_lock = threading.Lock()
        self._accounts: dict[str, str] = {}
        self._refresh_keys()

    def close(self) -> None:
        if self.vector_stores is not None:
            self.vector_stores.close()
        self.store.close()

    def clock(self) -> float:
        """The provider's clock: the host's, shifted by the configured offset."""
        return time.time() + self.settings.clock_offset_s

    def _dated(self, send: Send) -> Send:
        """Every response carries a `Date` from the provider's clock (uvicorn's is off), so
        a client can measure the offset."""
        async def dated(message: Message) -> None:
            if message["type"] == "http.response.start":
                date = formatdate(self.clock(), usegmt=True).encode()
                message = {**message, "headers": [*message.get("headers", []), (b"date", date)]}
            await send(message)
        return dated

    def _refresh_keys(self) -> None:
        self._accounts = {k: account_of(k) for k in self.settings.effective_api_keys()}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        call = _Call(scope, receive, send, request_id=str(uuid.uuid4()))
        path: str = scope["path"]
        response: Response | None
        try:
            if path.startswith(ADMIN_PREFIX + "/"):
                response = await self._admin(call, path[len(ADMIN_PREFIX):])
            else:
                response = await self._api(call, path)
        except _Dropped:
            return
        except _ClientGone:
            return
        except errors.ApiError as exc:
            echo = call.header("authorization") if self.settings.fault_echo_auth else None
            response = exc.response(call.request_id, self.flavor.request_id_in_body, echo)
        except Exception:
            # Keep the envelope and x-request-id even for emulator bugs, so clients see a
            # provider-shaped 500 rather than uvicorn's plain-text one.
            log.exception("unhandled error in %s %s", scope.get("method"), path)
            response = errors.internal().response(call.request_id,
                                                  self.flavor.request_id_in_body)
        if response is not None:
            await response(scope, receive, self._dated(send))

    @staticmethod
    async def _lifespan(receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    # ---- the provider's API -------------------------------------------------------------

    def _route(self, method: str, path: str) -> tuple[str, Handler, str | None] | None:
        files = self.flavor.api_prefix + "/files"
        batches = self.flavor.api_prefix + "/batches"
        stores = self.flavor.api_prefix + "/vector_stores"
        if self.vector_stores is not None and path.startswith(stores):
            found = self.vector_stores.route(method, path[len(stores):])
            return None if found is None else (found[0], found[1], None)
        if path.startswith(batches):
            return self._batch_route(method, path, path[len(batches):])
        if not path.startswith(files):
            return None
        rest = path[len(files):]
        if rest in ("", "/"):
            table: dict[str, tuple[str, Handler]] = {
                "POST": ("upload", self._upload), "GET": ("read", self._list)}
            file_id = None
        else:
            parts = rest.strip("/").split("/")
            file_id = parts[0]
            if len(parts) == 1:
                table = {"GET": ("read", self._retrieve), "DELETE": ("delete", self._delete)}
            elif len(parts) == 2 and parts[1] == "content":
                table = {"GET": ("read", self._content)}
            else:
                return None
        if method not in table:
            raise errors.ApiError(405, f"Method {method} not allowed on {path}.")
        cls, handler = table[method]
        return cls, handler, file_id

    def _batch_route(self, method: str, path: str, rest: str
                     ) -> tuple[str, Handler, str | None] | None:
        """The Batch API. Its calls count as reads (class and rate bucket): the provider's
        own batch limits are per minute and far above what one client polls."""
        table: dict[str, Handler]
        batch_id = None
        if rest in ("", "/"):
            table = {"POST": self._create_batch, "GET": self._list_batches}
        else:
            parts = rest.strip("/").split("/")
            batch_id = parts[0]
            if len(parts) == 1:
                table = {"GET": self._retrieve_batch}
            elif len(parts) == 2 and parts[1] == "cancel":
                table = {"POST": self._cancel_batch}
            else:
                return None
        if method not in table:
            raise errors.ApiError(405, f"Method {method} not allowed on {path}.")
        return "read", table[method], batch_id

    async def _api(self, call: _Call, path: str) -> Response | None:
        route = self._route(call.scope["method"], path)
        if route is None:
            raise errors.ApiError(404, f"Unknown path {path}.", code="not_found")
        cls, handler, file_id = route
        settings = self.settings
        # Counted before any fault so the stats see exactly what a server would receive.
        self.stats.received(cls)
        if self.dice.roll("drop_before", settings.drop_before):
            self.stats.bump("faults", "drop_before")
            await drop_connection(call.send, call.receive)
            raise _Dropped
        call.account = self._authenticate(call)
        # Batch jobs move on with the clock whether or not this request is then refused.
        if self.batches.due():
            await to_thread.run_sync(self.batches.advance)
        # The limiter sees the arrival time, as the provider's would; the injected latency
        # is the provider's processing time, so it comes after (a timer that fires late
        # on a loaded loop must not bunch arrivals together).
        self._rate_limit(call, cls)
        delay_ms = settings.latency_ms + (
            self.dice.uniform("latency", 0.0, settings.jitter_ms) if settings.jitter_ms else 0.0)
        if delay_ms > 0:
            await asyncio.sleep(delay_ms / 1000)
        if self.dice.roll("fault_429", settings.fault_429):
            self.stats.bump("faults", "429")
            hint = settings.fault_429_retry_after
            raise errors.throttled(hint if hint is not None else 1 if settings.retry_after
                                   else None)
        if self.dice.roll("fault_5xx", settings.fault_5xx):
            self.stats.bump("faults", "5xx")
            raise errors.internal(self.dice.choice("status_5xx", (500, 503)))
        if file_id is not None:
            call.scope["file_id"] = file_id
        return await handler(call)

    # ---- batches ----------------------------------------------------------------------------

    async def _create_batch(self, call: _Call) -> Response:
        request = await _read_json(call.receive)
        body = await to_thread.run_sync(self.batches.create, call.account, request)
        await self._maybe_drop_after_store(call)
        return self._json(call, body)

    async def _retrieve_batch(self, call: _Call) -> Response:
        body = await to_thread.run_sync(self.batches.get, call.account, call.scope["file_id"])
        return self._json(call, body)

    async def _cancel_batch(self, call: _Call) -> Response:
        body = await to_thread.run_sync(self.batches.cancel, call.account,
                                        call.scope["file_id"])
        await self._maybe_drop_after_store(call)
        return self._json(call, body)

    async def _list_batches(self, call: _Call) -> Response:
        query = call.query()
        limit = _int_param(query, "limit", LIST_DEFAULT)
        if limit is None or not 1 <= limit <= LIST_MAX:
            raise errors.bad_request(
                f"Invalid 'limit': must be an integer between 1 and {LIST_MAX}.", param="limit")
        after = query.get("after") or None
        data, has_more = await to_thread.run_sync(
            lambda: self.batches.page(call.account, after=after, limit=limit))
        return self._json(call, {"object": "list", "data": data,
                                 "first_id": data[0]["id"] if data else None,
                                 "last_id": data[-1]["id"] if data else None,
                                 "has_more": has_more})

    async def _maybe_drop_after_store(self, call: _Call) -> None:
        """The change is made; the answer may still be lost on the way."""
        if self.dice.roll("drop_after_store", self.settings.drop_after_store):
            self.stats.bump("faults", "drop_after_store")
            await drop_connection(call.send)
            raise _Dropped

    def _authenticate(self, call: _Call) -> str:
        auth = call.header("authorization") or ""
        scheme, _, key = auth.partition(" ")
        account = self._accounts.get(key.strip()) if scheme.lower() == "bearer" else None
        if account is None:
            raise errors.bad_key()
        return account

    def _rate_limit(self, call: _Call, cls: str) -> None:
        settings = self.settings
        if not settings.rate_limit:
            return
        bucket = settings.buckets()[cls]
        wait = self.limiter.try_acquire(call.account, bucket, settings.effective_rates()[cls])
        if wait is not None:
            self.stats.bump("throttled", cls)
            raise errors.throttled(retry_after_header(wait) if settings.retry_after else None)

    def _json(self, call: _Call, body: Any, status: int = 200) -> JSONResponse:
        return JSONResponse(body, status_code=status, headers={"x-request-id": call.request_id})

    async def _retrieve(self, call: _Call) -> Response:
        file_id = call.scope["file_id"]
        record = await to_thread.run_sync(self.store.get, call.account, file_id)
        if record is None:
            raise self._not_found(file_id)
        return self._json(call, self._file_json(record))

    async def _content(self, call: _Call) -> Response:
        file_id = call.scope["file_id"]
        record = await to_thread.run_sync(self.store.get, call.account, file_id)
        if record is None:
            raise self._not_found(file_id)
        if self.settings.content_download == "provider" \
                and not self.flavor.downloadable(record.purpose):
            raise errors.ApiError(
                400, f"Not allowed to download files of purpose: {record.purpose}.",
                param="file_id", code="download_not_allowed")
        if self.dice.roll("truncate_content", self.settings.fault_truncate_content):
            await self._truncated(call, file_id, record.bytes)
            raise _Dropped
        return FileResponse(self.store.blob_path(file_id), media_type="application/octet-stream",
                            headers={"x-request-id": call.request_id})

    async def _truncated(self, call: _Call, file_id: str, size: int) -> None:
        """Headers announcing the whole file, half its bytes, then the connection closes."""
        half = await to_thread.run_sync(_head, self.store.blob_path(file_id), size // 2)
        send = self._dated(call.send)
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-type", b"application/octet-stream"),
            (b"content-length", str(size).encode()),
            (b"x-request-id", call.request_id.encode())]})
        await send({"type": "http.response.body", "body": half, "more_body": True})
        self.stats.bump("mutations", "truncated_content")
        await drop_connection(call.send)

    async def _delete(self, call: _Call) -> Response:
        file_id = call.scope["file_id"]
        if not await to_thread.run_sync(self.store.delete, call.account, file_id):
            raise self._not_found(file_id)
        self.stats.bump("mutations", "delete")
        return self._json(call, {"object": "file", "deleted": True, "id": file_id})

    def _not_found(self, file_id: str) -> errors.ApiError:
        return errors.not_found(file_id, self.settings.unknown_id_status)

    def _file_json(self, record: FileRecord) -> dict[str, Any]:
        return record.to_json(with_expiry=self.flavor.expiry)

    async def _list(self, call: _Call) -> Response:
        query = call.query()
        list_max = self.flavor.list_max
        limit = _int_param(query, "limit", list_max)
        if limit is None or not 1 <= limit <= list_max:
            raise errors.bad_request(
                f"Invalid 'limit': must be an integer between 1 and {list_max}.", param="limit")
        ascending = False
        if self.flavor.list_order:
            order = query.get("order") or "desc"
            if order not in ("asc", "desc"):
                raise errors.bad_request("Invalid 'order': must be 'asc' or 'desc'.",
                                         param="order")
            ascending = order == "asc"
        after_pos = None
        after = query.get("after") or None
        if after is not None:
            after_pos = await to_thread.run_sync(self.store.cursor_position, call.account, after)
            if after_pos is None:
                raise errors.bad_request(f"Invalid 'after': no file {after!r} in this account.",
                                         param="after")
        create_after = _int_param(query, "create_after", None, "create_after")
        create_before = _int_param(query, "create_before", None, "create_before")
        records, has_more = await to_thread.run_sync(
            lambda: self.store.list(call.account, limit=limit, after=after_pos,
                                    purpose=query.get("purpose") or None,
                                    create_after=create_after, create_before=create_before,
                                    ascending=ascending))
        data = [self._file_json(r) for r in self._omit(records, has_more)]
        body: dict[str, Any] = {"object": "list", "data": data}
        if self.flavor.list_order:
            body["first_id"] = data[0]["id"] if data else None
            body["last_id"] = data[-1]["id"] if data else None
        body["has_more"] = has_more
        if self.settings.fault_trickle_list > 0:
            return self._trickled(call, body, self.settings.fault_trickle_list)
        return self._json(call, body)

    def _trickled(self, call: _Call, body: Any, per_second: float) -> Response:
        """``body`` as JSON, headers at once, then the bytes at ``per_second``: a slow or
        hostile link that keeps every read within any per-read timeout."""
        data = bytes(JSONResponse(body).body)
        step = max(1, int(per_second / 10))

        async def chunks() -> AsyncIterator[bytes]:
            for start in range(0, len(data), step):
                if start:
                    await asyncio.sleep(step / per_second)
                yield data[start:start + step]

        return StreamingResponse(chunks(), media_type="application/json", headers={
            "x-request-id": call.request_id, "content-length": str(len(data))})

    def _omit(self, records: list[FileRecord], has_more: bool) -> list[FileRecord]:
        """Leave out a seeded fraction of a page, like an eventually consistent listing.

        The last entry of a page with more to come is kept: clients page with its id, so
        the cursor moves past every entry left out and they are not seen on a later page.
        """
        fraction = self.settings.fault_list_omit
        eligible = len(records) - 1 if has_more else len(records)
        if fraction <= 0 or eligible <= 0:
            return records
        exact = fraction * eligible
        # Rounded up or down at random so small pages also lose F of their entries on average.
        count = math.floor(exact) + (1 if self.dice.uniform("list_omit", 0, 1) < exact % 1
                                     else 0)
        omitted = set(self.dice.sample("list_omit", eligible, min(count, eligible)))
        if omitted:
            self.stats.bump("faults", "list_omit", len(omitted))
        return [r for i, r in enumerate(records) if i not in omitted]

    async def _upload(self, call: _Call) -> Response | None:
        boundary = boundary_of(call.header("content-type") or "")
        flavor = self.flavor
        reader = UploadReader(boundary, self.store.new_temp_path(), flavor.size_cap)
        try:
            form = await self._read_form(call, reader)
            purpose = validate.check_purpose(flavor, form.purpose)
            expires_in = validate.expiry_seconds(
                flavor, purpose, form.fields.get("expires_after[anchor]"),
                form.fields.get("expires_after[seconds]"))
            if form.filename is None:
                raise errors.bad_request("Missing required parameter: 'file'.", param="file")
            validate.check_format(flavor, purpose, form.filename)
            cap = flavor.size_cap(purpose, validate.extension(form.filename))
            if form.over_cap or cap is None or form.size > cap:
                raise validate.too_large()
            if form.size == 0 or form.temp_path is None:
                raise validate.empty_file()
            if purpose == "batch":
                await to_thread.run_sync(validate.check_batch_file, form.temp_path,
                                         flavor.batch_urls)
            if self.dice.roll("reject_upload", self.settings.fault_reject_upload):
                raise errors.bad_request("The file is invalid.", code="invalid_file")
            settings = self.settings
            record = await to_thread.run_sync(
                self.store.commit_upload, call.account, form.temp_path,
                flavor.new_id(purpose), form.filename, purpose, form.size,
                settings.max_files, settings.max_bytes, expires_in)
        except BaseException:
            await to_thread.run_sync(reader.abort)
            raise
        self.stats.bump("mutations", "upload")
        if self.dice.roll("drop_after_store", self.settings.drop_after_store):
            self.stats.bump("faults", "drop_after_store")
            await drop_connection(call.send)
            raise _Dropped
        if self.settings.fault_trickle_upload > 0:
            return self._trickled(call, self._file_json(record), self.settings.fault_trickle_upload)
        return self._json(call, self._file_json(record))

    async def _read_form(self, call: _Call, reader: UploadReader) -> Any:
        buf = bytearray()
        more = True
        while more:
            message: Message = await call.receive()
            if message["type"] == "http.disconnect":
                raise _ClientGone
            body = message.get("body", b"")
            buf += body
            more = bool(message.get("more_body", False))
            await self.link.carried(len(body))
            # Batch small ASGI chunks so the hop to a worker thread is paid per MiB.
            if len(buf) >= FEED_BYTES or not more:
                chunk = bytes(buf)
                buf.clear()
                await to_thread.run_sync(reader.feed, chunk)
                early = _early_rejection(self.flavor, reader)
                if early is not None and more:
                    # uvicorn discards the unread rest of the body after we answer.
                    raise early
        return await to_thread.run_sync(reader.finish)

    # ---- introspection ------------------------------------------------------------------

    async def _admin(self, call: _Call, sub: str) -> Response:
        client = call.scope.get("client")
        host = client[0] if client else ""
        if not (host == "::1" or host.startswith(LOOPBACK)):
            raise errors.ApiError(403, "The emulator control API is only served on loopback.")
        method = call.scope["method"]
        if sub == "/health" and method == "GET":
            return self._json(call, {"status": "ok"})
        if sub == "/stats" and method == "GET":
            snapshot = self.stats.snapshot()
            snapshot["accounts"] = await to_thread.run_sync(self._accounts_usage)
            snapshot["upload_body_bytes"] = self.link.received
            return self._json(call, snapshot)
        if sub == "/reset" and method == "POST":
            self.stats.reset()
            self.limiter.reset()
            return self._json(call, {"reset": True})
        if sub == "/files" and method == "GET":
            if self.batches.due():
                await to_thread.run_sync(self.batches.advance)
            live = await to_thread.run_sync(self.store.live_files)
            return self._json(call, {"accounts": {
                acc[:12]: [self._file_json(r) for r in records]
                for acc, records in sorted(live.items())}})
        if sub == "/batches" and method == "GET":
            if self.batches.due():
                await to_thread.run_sync(self.batches.advance)
            everything = await to_thread.run_sync(self.batches.everything)
            return self._json(call, {"accounts": {
                acc[:12]: batches for acc, batches in sorted(everything.items())}})
        if sub == "/expire" and method == "POST":
            body = await _read_json(call.receive)
            ids = body.get("ids") if isinstance(body, dict) else None
            if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
                raise errors.bad_request("Expected {\"ids\": [file ids]}.")
            return self._json(call, {"expired": await to_thread.run_sync(self.store.expire, ids)})
        if sub == "/config" and method in ("GET", "POST"):
            if method == "POST":
                body = await _read_json(call.receive)
                self.apply_config(body)
            return self._json(call, self.config_view())
        raise errors.ApiError(404, f"Unknown path {ADMIN_PREFIX}{sub}.", code="not_found")

    def _accounts_usage(self) -> dict[str, dict[str, int]]:
        usage = self.store.all_usage()
        for account in self._accounts.values():
            usage.setdefault(account, (0, 0))
        return {acc[:12]: {"files": n, "bytes": b} for acc, (n, b) in sorted(usage.items())}

    def config_view(self) -> dict[str, Any]:
        s = self.settings
        return {
            "fault_5xx": s.fault_5xx, "fault_429": s.fault_429,
            "latency_ms": s.latency_ms, "jitter_ms": s.jitter_ms,
            "drop_before": s.drop_before, "drop_after_store": s.drop_after_store,
            "retry_after": s.retry_after, "rate_limit": s.rate_limit,
            "rate_profile": s.rate_profile, "rates": s.effective_rates(),
            "max_files": s.max_files, "max_bytes": s.max_bytes, "seed": s.seed,
            "fault_list_omit": s.fault_list_omit, "unknown_id_status": s.unknown_id_status,
            "clock_offset_s": s.clock_offset_s, "flavor": s.flavor,
            "fault_trickle_list": s.fault_trickle_list,
            "fault_trickle_upload": s.fault_trickle_upload,
            "fault_429_retry_after": s.fault_429_retry_after,
            "fault_reject_upload": s.fault_reject_upload, "fault_echo_auth": s.fault_echo_auth,
            "batch_step_s": s.batch_step_s, "batch_expire": s.batch_expire,
            "content_download": s.content_download,
            "fault_truncate_content": s.fault_truncate_content,
        }

    def apply_config(self, body: Any) -> None:
        if not isinstance(body, dict):
            raise errors.bad_request("Config must be a JSON object.")
        with self._config_lock:
            _apply_config(self.settings, body)
            if "batch_step_s" in body:
                self.batches.step_changed()
            if "seed" in body:
                self.dice.reseed(self.settings.seed)


def _apply_config(s: EmulatorSettings, body: dict[str, Any]) -> None:
    """Validate everything first so a bad request changes nothing."""
    floats = ("fault_5xx", "fault_429", "latency_ms", "jitter_ms", "drop_before",
              "drop_after_store", "fault_list_omit", "fault_reject_upload", "batch_expire",
              "fault_truncate_content")
    updates: dict[str, Any] = {}
    try:
        for name in floats:
            if name in body:
                value = float(body[name])
                if value < 0 or (not name.endswith("_ms") and value > 1):
                    raise ValueError(name)
                updates[name] = value
        for name in ("fault_trickle_list", "fault_trickle_upload", "batch_step_s"):
            if name in body:
                value = float(body[name])
                if not 0 <= value < math.inf:
                    raise ValueError(name)
                updates[name] = value
        if "fault_429_retry_after" in body:
            raw = body["fault_429_retry_after"]
            if raw is not None and int(raw) < 0:
                raise ValueError("fault_429_retry_after")
            updates["fault_429_retry_after"] = None if raw is None else int(raw)
        for name in ("retry_after", "rate_limit", "fault_echo_auth"):
            if name in body:
                value = body[name]
                updates[name] = value if isinstance(value, bool) else str(value) == "on"
        if "rate_profile" in body:
            if body["rate_profile"] not in RATE_PROFILES:
                raise ValueError("rate_profile")
            updates["rate_profile"] = body["rate_profile"]
            # A new profile starts from its own defaults unless rates come with it.
            updates.update(upload_rate=None, read_rate=None, delete_rate=None)
        for cls, value in (body.get("rates") or {}).items():
            if cls not in ("upload", "read", "delete") or int(value) < 1:
                raise ValueError(f"rates.{cls}")
            updates[f"{cls}_rate"] = int(value)
        for name in ("max_files", "max_bytes"):
            if name in body:
                updates[name] = int(body[name])
        if "seed" in body:
            updates["seed"] = None if body["seed"] is None else int(body["seed"])
        if "unknown_id_status" in body:
            if int(body["unknown_id_status"]) not in (400, 404):
                raise ValueError("unknown_id_status must be 404 or 400")
            updates["unknown_id_status"] = int(body["unknown_id_status"])
        if "clock_offset_s" in body:
            offset = float(body["clock_offset_s"])
            if not math.isfinite(offset):
                raise ValueError("clock_offset_s")
            updates["clock_offset_s"] = offset
        if "content_download" in body:
            if body["content_download"] not in CONTENT_DOWNLOAD:
                raise ValueError("content_download must be 'any' or 'provider'")
            updates["content_download"] = body["content_download"]
        # Ids, the URL prefix and stored files follow the flavour: it is fixed at start.
        if "flavor" in body and body["flavor"] != s.flavor:
            raise ValueError("flavor is fixed when the emulator starts")
    except (TypeError, ValueError) as exc:
        raise errors.bad_request(f"Invalid config value: {exc}") from None
    for name, value in updates.items():
        setattr(s, name, value)


async def _read_json(receive: Receive) -> Any:
    import json

    body = bytearray()
    while True:
        message = await receive()
        body += message.get("body", b"")
        if message["type"] != "http.request" or not message.get("more_body", False):
            break
        if len(body) > 1024 * 1024:
            raise errors.bad_request("Config body too large.")
    try:
        return json.loads(bytes(body) or b"{}")
    except ValueError:
        raise errors.bad_request("Config body is not valid JSON.") from None


def _head(path: Any, size: int) -> bytes:
    with open(path, "rb") as fh:
        return fh.read(size)


def _int_param(query: dict[str, str], name: str, default: int | None,
               param: str | None = None) -> int | None:
    raw = query.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(float(raw)) if param else int(raw)
    except ValueError:
        if param:
            raise errors.bad_request(f"Invalid {name!r}: expected unix seconds.",
                                     param=param) from None
        return None


def _early_rejection(flavor: validate.Flavor, reader: UploadReader) -> errors.ApiError | None:
    """An error already certain mid-body (purpose known and the file can't be accepted)."""
    form = reader.form
    if form.purpose is None or form.filename is None or not form.discarded:
        return None
    purpose = validate.check_purpose(flavor, form.purpose)
    validate.check_format(flavor, purpose, form.filename)
    return validate.too_large() if form.over_cap else None
