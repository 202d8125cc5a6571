"""The ASGI application: each request routed to the Files, Batch, vector store or
control routes, after the provider's order of checks (auth, rate limit, injected faults)."""

from __future__ import annotations

import asyncio
import logging
import uuid

from anyio import to_thread
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from . import errors
from .admin import ADMIN_PREFIX, AdminRoutes
from .batch_routes import BatchRoutes
from .call import Call, ClientGone, Dropped, Handler
from .file_routes import FileRoutes
from .transport import drop_connection

log = logging.getLogger("syncd.emulator")


class EmulatorApp(FileRoutes, BatchRoutes, AdminRoutes):
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        call = Call(scope, receive, send, request_id=str(uuid.uuid4()))
        path: str = scope["path"]
        response: Response | None
        try:
            if path.startswith(ADMIN_PREFIX + "/"):
                response = await self._admin(call, path[len(ADMIN_PREFIX):])
            else:
                response = await self._api(call, path)
        except Dropped:
            return
        except ClientGone:
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

    async def _api(self, call: Call, path: str) -> Response | None:
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
            raise Dropped
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
