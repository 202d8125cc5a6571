"""Vector stores (openai flavour): stores, the files attached to them, and file batches.

A store holds at most one attachment per file id: attaching an id already attached
returns that attachment unchanged, as OpenAI's does (the attachment's id is the file's).
An attachment is ``in_progress`` for ``EmulatorSettings.vs_step_s`` after it is made,
then ``completed``, or ``failed`` with ``last_error`` when ``file_search`` cannot read
the file (a type it does not take, or text that is binary), or ``cancelled`` when its
batch was cancelled first. Nothing runs in the background: each answer computes the
status from the clock. Detaching leaves the file itself, and deleting a file from the
Files API leaves its attachments listed (the caller detaches them). State lives in its
own SQLite file beside the files' (``vector_stores.sqlite3``), so it survives a restart.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import threading
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any

from anyio import to_thread
from starlette.responses import JSONResponse, Response
from starlette.types import Receive

from . import errors
from .call import Call, read_json
from .settings import EmulatorSettings
from .stats import Stats
from .store import Store

# What file_search reads (OpenAI's list of supported file types); of them, those whose
# content is text, where a NUL byte means the file cannot be parsed.
TEXT_TYPES = frozenset({".c", ".cpp", ".cs", ".css", ".go", ".html", ".java", ".js", ".json",
                        ".md", ".php", ".py", ".rb", ".sh", ".tex", ".ts", ".txt"})
SEARCHABLE = TEXT_TYPES | {".doc", ".docx", ".pdf", ".pptx"}
BATCH_MAX = 2000
LIST_MAX = 100
LIST_DEFAULT = 20
ATTR_MAX = 16
ATTR_KEY_MAX = 64
ATTR_VALUE_MAX = 512
STATUSES = ("in_progress", "completed", "failed", "cancelled")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS stores (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    account TEXT NOT NULL,
    body TEXT NOT NULL
);
-- One row per (store, file): the outcome is fixed when attached, shown once ready_at passes.
CREATE TABLE IF NOT EXISTS attached (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    store_id TEXT NOT NULL,
    file_id TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    ready_at REAL NOT NULL,
    outcome TEXT NOT NULL,
    last_error TEXT,
    usage_bytes INTEGER NOT NULL,
    attributes TEXT,
    chunking TEXT NOT NULL,
    batch_id TEXT,
    UNIQUE (store_id, file_id)
);
CREATE TABLE IF NOT EXISTS file_batches (
    id TEXT PRIMARY KEY,
    store_id TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    cancelled INTEGER NOT NULL DEFAULT 0
);
"""
_ATT = ("file_id, created_at, ready_at, outcome, last_error, usage_bytes, attributes,"
        " chunking, batch_id, store_id, seq")


Handler = Callable[[Any], Awaitable[Response]]
Dropper = Callable[[Any], Awaitable[None]]


def _new_id(prefix: str) -> str:
    return prefix + secrets.token_hex(12)


class VectorStores:
    def __init__(self, store: Store, settings: EmulatorSettings, stats: Stats,
                 drop_after_store: Dropper) -> None:
        self.files = store
        self.settings = settings
        self.stats = stats
        self._drop_after_store = drop_after_store
        self._lock = threading.Lock()
        self._db = sqlite3.connect(Path(store.data_dir) / "vector_stores.sqlite3",
                                   check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # ---- routing ---------------------------------------------------------------------------

    def route(self, method: str, rest: str) -> tuple[str, Handler] | None:
        """(call class, handler) for a path under ``/vector_stores``; None when unknown.
        Writes (create, attach, cancel) are the upload class, detaches the delete class."""
        parts = [p for p in rest.split("/") if p]
        table: dict[str, tuple[str, Handler]] = {}
        n = len(parts)
        if n == 0:
            table = {"POST": ("upload", self._create_store), "GET": ("read", self._list_stores)}
        elif n == 1:
            table = {"GET": ("read", partial(self._get_store, parts[0]))}
        elif n == 2 and parts[1] == "files":
            table = {"POST": ("upload", partial(self._attach_one, parts[0])),
                     "GET": ("read", partial(self._list_files, parts[0], None))}
        elif n == 3 and parts[1] == "files":
            table = {"GET": ("read", partial(self._get_file, parts[0], parts[2])),
                     "DELETE": ("delete", partial(self._detach, parts[0], parts[2]))}
        elif n == 2 and parts[1] == "file_batches":
            table = {"POST": ("upload", partial(self._create_batch, parts[0]))}
        elif n == 3 and parts[1] == "file_batches":
            table = {"GET": ("read", partial(self._get_batch, parts[0], parts[2]))}
        elif n == 4 and parts[1] == "file_batches" and parts[3] == "cancel":
            table = {"POST": ("upload", partial(self._cancel_batch, parts[0], parts[2]))}
        elif n == 4 and parts[1] == "file_batches" and parts[3] == "files":
            table = {"GET": ("read", partial(self._list_files, parts[0], parts[2]))}
        else:
            return None
        if method not in table:
            raise errors.ApiError(405, f"Method {method} not allowed on this path.")
        return table[method]

    # ---- stores ----------------------------------------------------------------------------

    async def _create_store(self, call: Call) -> Response:
        request = await _read_json(call.receive)
        name = request.get("name")
        metadata = _metadata(request.get("metadata"))
        if name is not None and not isinstance(name, str):
            raise errors.bad_request("Invalid 'name': expected a string.", param="name")
        chunking = _chunking(request.get("chunking_strategy"))
        store_id = _new_id("vs_")
        now = self.files.now()
        body = {"id": store_id, "object": "vector_store", "created_at": now, "name": name,
                "metadata": metadata, "expires_after": request.get("expires_after"),
                "expires_at": None, "last_active_at": now, "chunking": chunking}

        def insert() -> None:
            with self._lock:
                self._db.execute("INSERT INTO stores (id, account, body) VALUES (?, ?, ?)",
                                 (store_id, call.account, json.dumps(body)))
        await to_thread.run_sync(insert)
        self.stats.bump("mutations", "vs_create")
        await self._drop_after_store(call)
        return _json(call, await to_thread.run_sync(self._store_json, body))

    def _store_row(self, account: str, store_id: str) -> dict[str, Any]:
        with self._lock:
            row = self._db.execute("SELECT body FROM stores WHERE id = ? AND account = ?",
                                   (store_id, account)).fetchone()
        if row is None:
            raise errors.ApiError(404, f"No vector store found with id '{store_id}'.",
                                  param="vector_store_id", code="not_found")
        return dict(json.loads(row[0]))

    def _store_json(self, body: dict[str, Any]) -> dict[str, Any]:
        counts = dict.fromkeys(STATUSES, 0)
        usage = 0
        for att in self._attachments(body["id"]):
            status = self._status(att)
            counts[status] += 1
            usage += att["usage_bytes"] if status == "completed" else 0
        counts["total"] = sum(counts.values())
        out = {k: v for k, v in body.items() if k != "chunking"}
        out.update(file_counts=counts, usage_bytes=usage,
                   status="in_progress" if counts["in_progress"] else "completed")
        return out

    async def _get_store(self, store_id: str, call: Call) -> Response:
        def read() -> dict[str, Any]:
            return self._store_json(self._store_row(call.account, store_id))
        return _json(call, await to_thread.run_sync(read))

    async def _list_stores(self, call: Call) -> Response:
        query = call.query()
        limit = _limit(query)
        after = query.get("after") or None

        def read() -> dict[str, Any]:
            with self._lock:
                rows = self._db.execute("SELECT id, body FROM stores WHERE account = ?"
                                        " ORDER BY seq DESC", (call.account,)).fetchall()
            ids = [r[0] for r in rows]
            start = ids.index(after) + 1 if after in ids else 0
            page = rows[start:start + limit]
            data = [self._store_json(json.loads(r[1])) for r in page]
            return _page(data, start + limit < len(rows))
        return _json(call, await to_thread.run_sync(read))

    # ---- attachments -----------------------------------------------------------------------

    def _attachments(self, store_id: str, batch_id: str | None = None) -> list[dict[str, Any]]:
        sql = f"SELECT {_ATT} FROM attached WHERE store_id = ?"
        args: list[Any] = [store_id]
        if batch_id is not None:
            sql += " AND batch_id = ?"
            args.append(batch_id)
        with self._lock:
            rows = self._db.execute(sql + " ORDER BY created_at DESC, seq DESC", args).fetchall()
        return [_att(r) for r in rows]

    def _status(self, att: dict[str, Any]) -> str:
        if att["outcome"] == "cancelled":
            return "cancelled"
        return "in_progress" if self.files.clock() < att["ready_at"] else str(att["outcome"])

    def _file_json(self, att: dict[str, Any]) -> dict[str, Any]:
        status = self._status(att)
        return {"id": att["file_id"], "object": "vector_store.file",
                "usage_bytes": att["usage_bytes"] if status == "completed" else 0,
                "created_at": att["created_at"], "vector_store_id": att["store_id"],
                "status": status,
                "last_error": att["last_error"] if status == "failed" else None,
                "chunking_strategy": att["chunking"], "attributes": att["attributes"]}

    def _attach(self, account: str, store_id: str, items: list[dict[str, Any]],
                default_chunking: dict[str, Any], batch_id: str | None) -> list[dict[str, Any]]:
        """Attach each item (a file id already attached is left as it is); validate all
        first, so a bad request changes nothing."""
        self._store_row(account, store_id)
        verdicts = [_verdict(self.files, account, item["file_id"]) for item in items]
        now = self.files.clock()
        step = max(0.0, self.settings.vs_step_s)
        with self._lock:
            for item, (outcome, error, usage) in zip(items, verdicts, strict=True):
                self._db.execute(
                    "INSERT OR IGNORE INTO attached (store_id, file_id, created_at, ready_at,"
                    " outcome, last_error, usage_bytes, attributes, chunking, batch_id)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (store_id, item["file_id"], int(now), now + step, outcome,
                     json.dumps(error) if error else None, usage,
                     json.dumps(item.get("attributes")),
                     json.dumps(item.get("chunking_strategy") or default_chunking), batch_id))
            marks = ", ".join("?" for _ in items)
            rows = self._db.execute(
                f"SELECT {_ATT} FROM attached WHERE store_id = ? AND file_id IN ({marks})",
                [store_id, *(i["file_id"] for i in items)]).fetchall()
        return [_att(r) for r in rows]

    async def _attach_one(self, store_id: str, call: Call) -> Response:
        request = await _read_json(call.receive)
        item = _item(request, "")

        def work() -> dict[str, Any]:
            chunking = self._store_row(call.account, store_id)["chunking"]
            return self._file_json(self._attach(call.account, store_id, [item], chunking,
                                                None)[0])
        body = await to_thread.run_sync(work)
        self.stats.bump("mutations", "vs_attach")
        await self._drop_after_store(call)
        return _json(call, body)

    async def _get_file(self, store_id: str, file_id: str, call: Call) -> Response:
        def read() -> dict[str, Any]:
            self._store_row(call.account, store_id)
            with self._lock:
                row = self._db.execute(f"SELECT {_ATT} FROM attached WHERE store_id = ?"
                                       " AND file_id = ?", (store_id, file_id)).fetchone()
            if row is None:
                raise _no_attachment(store_id, file_id)
            return self._file_json(_att(row))
        return _json(call, await to_thread.run_sync(read))

    async def _detach(self, store_id: str, file_id: str, call: Call) -> Response:
        def work() -> None:
            self._store_row(call.account, store_id)
            with self._lock:
                gone = self._db.execute("DELETE FROM attached WHERE store_id = ? AND file_id = ?",
                                        (store_id, file_id)).rowcount
            if not gone:
                raise _no_attachment(store_id, file_id)
        await to_thread.run_sync(work)
        self.stats.bump("mutations", "vs_detach")
        return _json(call, {"id": file_id, "object": "vector_store.file.deleted",
                            "deleted": True})

    async def _list_files(self, store_id: str, batch_id: str | None, call: Call) -> Response:
        query = call.query()
        limit = _limit(query)
        wanted = query.get("filter") or None
        if wanted is not None and wanted not in STATUSES:
            raise errors.bad_request(f"Invalid 'filter': expected one of {', '.join(STATUSES)}.",
                                     param="filter")
        ascending = query.get("order", "desc") == "asc"
        after = query.get("after") or None

        def read() -> dict[str, Any]:
            self._store_row(call.account, store_id)
            if batch_id is not None:
                self._batch_row(store_id, batch_id)
            atts = self._attachments(store_id, batch_id)
            if ascending:
                atts.reverse()
            data = [self._file_json(a) for a in atts]
            if wanted is not None:
                data = [d for d in data if d["status"] == wanted]
            ids = [d["id"] for d in data]
            start = ids.index(after) + 1 if after in ids else 0
            return _page(data[start:start + limit], start + limit < len(data))
        return _json(call, await to_thread.run_sync(read))

    # ---- file batches ----------------------------------------------------------------------

    async def _create_batch(self, store_id: str, call: Call) -> Response:
        request = await _read_json(call.receive)
        items = _batch_items(request)
        batch_id = _new_id("vsfb_")

        def work() -> dict[str, Any]:
            chunking = self._store_row(call.account, store_id)["chunking"]
            self._attach(call.account, store_id, items, chunking, batch_id)
            with self._lock:
                self._db.execute("INSERT INTO file_batches (id, store_id, created_at)"
                                 " VALUES (?, ?, ?)", (batch_id, store_id, self.files.now()))
            return self._batch_json(store_id, batch_id)
        body = await to_thread.run_sync(work)
        self.stats.bump("mutations", "vs_batch")
        await self._drop_after_store(call)
        return _json(call, body)

    def _batch_row(self, store_id: str, batch_id: str) -> tuple[int, bool]:
        with self._lock:
            row = self._db.execute("SELECT created_at, cancelled FROM file_batches"
                                   " WHERE id = ? AND store_id = ?", (batch_id, store_id)
                                   ).fetchone()
        if row is None:
            raise errors.ApiError(404, f"No file batch found with id '{batch_id}'.",
                                  param="batch_id", code="not_found")
        return int(row[0]), bool(row[1])

    def _batch_json(self, store_id: str, batch_id: str) -> dict[str, Any]:
        created_at, cancelled = self._batch_row(store_id, batch_id)
        counts = dict.fromkeys(STATUSES, 0)
        for att in self._attachments(store_id, batch_id):
            counts[self._status(att)] += 1
        counts["total"] = sum(counts.values())
        status = ("cancelled" if cancelled else
                  "in_progress" if counts["in_progress"] else "completed")
        return {"id": batch_id, "object": "vector_store.files_batch", "created_at": created_at,
                "vector_store_id": store_id, "status": status, "file_counts": counts}

    async def _get_batch(self, store_id: str, batch_id: str, call: Call) -> Response:
        def read() -> dict[str, Any]:
            self._store_row(call.account, store_id)
            return self._batch_json(store_id, batch_id)
        return _json(call, await to_thread.run_sync(read))

    async def _cancel_batch(self, store_id: str, batch_id: str, call: Call) -> Response:
        def work() -> dict[str, Any]:
            self._store_row(call.account, store_id)
            self._batch_row(store_id, batch_id)
            now = self.files.clock()
            with self._lock:
                self._db.execute("UPDATE file_batches SET cancelled = 1 WHERE id = ?",
                                 (batch_id,))
                self._db.execute("UPDATE attached SET outcome = 'cancelled' WHERE batch_id = ?"
                                 " AND ready_at > ?", (batch_id, now))
            return self._batch_json(store_id, batch_id)
        body = await to_thread.run_sync(work)
        self.stats.bump("mutations", "vs_cancel")
        return _json(call, body)


# ---- request parsing ---------------------------------------------------------------------


def _verdict(files: Store, account: str, file_id: str) -> tuple[str, dict[str, str] | None, int]:
    """What processing will make of a file: its outcome, error and usage."""
    record = files.get(account, file_id)
    if record is None:
        raise errors.ApiError(404, f"No file found with id '{file_id}'.", param="file_id",
                              code="not_found")
    suffix = Path(record.filename).suffix.lower()
    if suffix not in SEARCHABLE:
        return "failed", {"code": "unsupported_file", "message":
                          f"The file type {suffix or '(none)'} is not supported."}, 0
    if suffix in TEXT_TYPES and _binary(files.blob_path(file_id)):
        return "failed", {"code": "invalid_file",
                          "message": "The file could not be parsed: it is not text."}, 0
    return "completed", None, record.bytes


def _item(raw: Any, where: str) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise errors.bad_request(f"Invalid '{where or 'body'}': expected an object.")
    file_id = raw.get("file_id")
    if not isinstance(file_id, str) or not file_id:
        raise errors.bad_request(f"Missing required parameter: '{where}file_id'.",
                                 param="file_id")
    item: dict[str, Any] = {"file_id": file_id, "attributes": _attributes(raw.get("attributes"))}
    if raw.get("chunking_strategy") is not None:
        item["chunking_strategy"] = _chunking(raw["chunking_strategy"])
    return item


def _batch_items(request: Any) -> list[dict[str, Any]]:
    if not isinstance(request, dict):
        raise errors.bad_request("The request body must be a JSON object.")
    ids, files = request.get("file_ids"), request.get("files")
    if (ids is None) == (files is None):
        raise errors.bad_request("Give exactly one of 'file_ids' and 'files'.", param="file_ids")
    raw = files if files is not None else ids
    if not isinstance(raw, list) or not 1 <= len(raw) <= BATCH_MAX:
        raise errors.bad_request(f"Expected 1 to {BATCH_MAX} files in a batch.",
                                 param="files" if files is not None else "file_ids")
    if files is not None:
        return [_item(f, f"files[{i}].") for i, f in enumerate(raw)]
    shared = {"attributes": request.get("attributes"),
              "chunking_strategy": request.get("chunking_strategy")}
    return [_item({"file_id": f, **shared}, "file_ids.") for f in raw]


def _attributes(raw: Any) -> dict[str, Any] | None:
    if raw is None:
        return None
    ok = isinstance(raw, dict) and len(raw) <= ATTR_MAX and all(
        isinstance(k, str) and len(k) <= ATTR_KEY_MAX
        and (isinstance(v, (bool, int, float))
             or (isinstance(v, str) and len(v) <= ATTR_VALUE_MAX))
        for k, v in raw.items())
    if not ok:
        raise errors.bad_request(
            f"Invalid 'attributes': at most {ATTR_MAX} pairs, keys of at most {ATTR_KEY_MAX}"
            f" characters, values strings of at most {ATTR_VALUE_MAX}, numbers or booleans.",
            param="attributes")
    return dict(raw)


def _chunking(raw: Any) -> dict[str, Any]:
    if raw is None or raw == {"type": "auto"}:
        return {"type": "static", "static": {"max_chunk_size_tokens": 800,
                                             "chunk_overlap_tokens": 400}}
    static = raw.get("static") if isinstance(raw, dict) and raw.get("type") == "static" else None
    size = static.get("max_chunk_size_tokens") if isinstance(static, dict) else None
    overlap = static.get("chunk_overlap_tokens") if isinstance(static, dict) else None
    if not (isinstance(size, int) and isinstance(overlap, int) and 100 <= size <= 4096
            and 0 <= overlap <= size // 2):
        raise errors.bad_request(
            "Invalid 'chunking_strategy': 'auto', or 'static' with max_chunk_size_tokens"
            " 100-4096 and chunk_overlap_tokens at most half of it.", param="chunking_strategy")
    return {"type": "static", "static": {"max_chunk_size_tokens": size,
                                         "chunk_overlap_tokens": overlap}}


def _metadata(raw: Any) -> dict[str, str] | None:
    if raw is None:
        return None
    if not isinstance(raw, dict) or len(raw) > ATTR_MAX or not all(
            isinstance(v, str) and len(v) <= ATTR_VALUE_MAX for v in raw.values()):
        raise errors.bad_request("Invalid 'metadata': at most 16 string values.",
                                 param="metadata")
    return dict(raw)


def _limit(query: dict[str, str]) -> int:
    raw = query.get("limit") or str(LIST_DEFAULT)
    if not raw.isdigit() or not 1 <= int(raw) <= LIST_MAX:
        raise errors.bad_request(f"Invalid 'limit': must be an integer between 1 and {LIST_MAX}.",
                                 param="limit")
    return int(raw)


def _page(data: list[dict[str, Any]], has_more: bool) -> dict[str, Any]:
    return {"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None, "has_more": has_more}


def _att(row: Any) -> dict[str, Any]:
    return {"file_id": row[0], "created_at": int(row[1]), "ready_at": float(row[2]),
            "outcome": row[3], "last_error": json.loads(row[4]) if row[4] else None,
            "usage_bytes": int(row[5]), "attributes": json.loads(row[6]) if row[6] else None,
            "chunking": json.loads(row[7]), "batch_id": row[8], "store_id": row[9]}


def _no_attachment(store_id: str, file_id: str) -> errors.ApiError:
    return errors.ApiError(404, f"No file '{file_id}' in vector store '{store_id}'.",
                           param="file_id", code="not_found")


def _binary(path: Path) -> bool:
    with open(path, "rb") as fh:
        return b"\0" in fh.read(8192)


def _json(call: Call, body: Any) -> JSONResponse:
    return JSONResponse(body, headers={"x-request-id": call.request_id})


async def _read_json(receive: Receive) -> Any:
    """A JSON object body (a file batch's ids can be many: up to 8 MiB)."""
    parsed = await read_json(receive, limit=8 * 1024 * 1024)
    if not isinstance(parsed, dict):
        raise errors.bad_request("The request body must be a JSON object.")
    return parsed
