"""What every route of the emulator shares: the settings and the parts they drive (store,
limiter, stats, fault dice, shaped link, batch runner, vector stores), the provider's clock
and ``Date`` header, authentication, the rate limit, and the answers' common shapes."""

from __future__ import annotations

import threading
import time
from email.utils import formatdate
from typing import Any

from starlette.responses import JSONResponse
from starlette.types import Message, Send

from . import errors, validate
from .batches import BatchRunner
from .call import Call, Dropped
from .faults import FaultDice
from .limits import RateLimiter, retry_after_header
from .link import Link
from .settings import EmulatorSettings
from .stats import Stats
from .store import FileRecord, Store, account_of
from .transport import drop_connection
from .vector_stores import VectorStores


class AppCore:
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

    async def _maybe_drop_after_store(self, call: Call) -> None:
        """The change is made; the answer may still be lost on the way."""
        if self.dice.roll("drop_after_store", self.settings.drop_after_store):
            self.stats.bump("faults", "drop_after_store")
            await drop_connection(call.send)
            raise Dropped

    def _authenticate(self, call: Call) -> str:
        auth = call.header("authorization") or ""
        scheme, _, key = auth.partition(" ")
        account = self._accounts.get(key.strip()) if scheme.lower() == "bearer" else None
        if account is None:
            raise errors.bad_key()
        return account

    def _rate_limit(self, call: Call, cls: str) -> None:
        settings = self.settings
        if not settings.rate_limit:
            return
        bucket = settings.buckets()[cls]
        wait = self.limiter.try_acquire(call.account, bucket, settings.effective_rates()[cls])
        if wait is not None:
            self.stats.bump("throttled", cls)
            raise errors.throttled(retry_after_header(wait) if settings.retry_after else None)

    def _json(self, call: Call, body: Any, status: int = 200) -> JSONResponse:
        return JSONResponse(body, status_code=status, headers={"x-request-id": call.request_id})

    def _not_found(self, file_id: str) -> errors.ApiError:
        return errors.not_found(file_id, self.settings.unknown_id_status)

    def _file_json(self, record: FileRecord) -> dict[str, Any]:
        return record.to_json(with_expiry=self.flavor.expiry)
