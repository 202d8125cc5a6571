"""The Batch API's routes: create, retrieve, cancel and list jobs (the jobs themselves
live in ``batches``)."""

from __future__ import annotations

from anyio import to_thread
from starlette.responses import Response

from . import errors
from .batches import LIST_DEFAULT, LIST_MAX
from .call import Call, Handler, int_param, read_json
from .core import AppCore


class BatchRoutes(AppCore):
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

    async def _create_batch(self, call: Call) -> Response:
        request = await read_json(call.receive)
        body = await to_thread.run_sync(self.batches.create, call.account, request)
        await self._maybe_drop_after_store(call)
        return self._json(call, body)

    async def _retrieve_batch(self, call: Call) -> Response:
        body = await to_thread.run_sync(self.batches.get, call.account, call.scope["file_id"])
        return self._json(call, body)

    async def _cancel_batch(self, call: Call) -> Response:
        body = await to_thread.run_sync(self.batches.cancel, call.account,
                                        call.scope["file_id"])
        await self._maybe_drop_after_store(call)
        return self._json(call, body)

    async def _list_batches(self, call: Call) -> Response:
        query = call.query()
        limit = int_param(query, "limit", LIST_DEFAULT)
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
