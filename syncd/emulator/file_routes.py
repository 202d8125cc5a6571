"""The Files API's routes: upload (streamed to disk through the shaped link, checked as
the provider checks it), retrieve, content, delete and list, with their injected faults."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from typing import Any

from anyio import to_thread
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.types import Message

from . import errors, validate
from .call import Call, ClientGone, Dropped, int_param
from .core import AppCore
from .multipart import UploadReader, boundary_of
from .store import FileRecord
from .transport import drop_connection

FEED_BYTES = 1024 * 1024


class FileRoutes(AppCore):
    async def _retrieve(self, call: Call) -> Response:
        file_id = call.scope["file_id"]
        record = await to_thread.run_sync(self.store.get, call.account, file_id)
        if record is None:
            raise self._not_found(file_id)
        return self._json(call, self._file_json(record))

    async def _content(self, call: Call) -> Response:
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
            raise Dropped
        return FileResponse(self.store.blob_path(file_id), media_type="application/octet-stream",
                            headers={"x-request-id": call.request_id})

    async def _truncated(self, call: Call, file_id: str, size: int) -> None:
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

    async def _delete(self, call: Call) -> Response:
        file_id = call.scope["file_id"]
        if not await to_thread.run_sync(self.store.delete, call.account, file_id):
            raise self._not_found(file_id)
        self.stats.bump("mutations", "delete")
        return self._json(call, {"object": "file", "deleted": True, "id": file_id})

    async def _list(self, call: Call) -> Response:
        query = call.query()
        list_max = self.flavor.list_max
        limit = int_param(query, "limit", list_max)
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
        create_after = int_param(query, "create_after", None, "create_after")
        create_before = int_param(query, "create_before", None, "create_before")
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

    def _trickled(self, call: Call, body: Any, per_second: float) -> Response:
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

    async def _upload(self, call: Call) -> Response | None:
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
            raise Dropped
        if self.settings.fault_trickle_upload > 0:
            return self._trickled(call, self._file_json(record), self.settings.fault_trickle_upload)
        return self._json(call, self._file_json(record))

    async def _read_form(self, call: Call, reader: UploadReader) -> Any:
        buf = bytearray()
        more = True
        while more:
            message: Message = await call.receive()
            if message["type"] == "http.disconnect":
                raise ClientGone
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


def _head(path: Any, size: int) -> bytes:
    with open(path, "rb") as fh:
        return fh.read(size)


def _early_rejection(flavor: validate.Flavor, reader: UploadReader) -> errors.ApiError | None:
    """An error already certain mid-body (purpose known and the file can't be accepted)."""
    form = reader.form
    if form.purpose is None or form.filename is None or not form.discarded:
        return None
    purpose = validate.check_purpose(flavor, form.purpose)
    validate.check_format(flavor, purpose, form.filename)
    return validate.too_large() if form.over_cap else None
