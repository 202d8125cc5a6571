"""One request as the emulator's routes see it, and the small pieces every route uses."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from . import errors


class Dropped(Exception):
    """The connection was dropped on purpose; nothing more to send."""


class ClientGone(Exception):
    pass


@dataclass
class Call:
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


Handler = Callable[[Call], Awaitable[Response | None]]


async def read_json(receive: Receive, *, limit: int = 1024 * 1024) -> Any:
    """The request's JSON body (``{}`` when empty); 400 when over ``limit`` bytes or not
    JSON."""
    body = bytearray()
    while True:
        message = await receive()
        body += message.get("body", b"")
        if message["type"] != "http.request" or not message.get("more_body", False):
            break
        if len(body) > limit:
            raise errors.bad_request("Request body too large.")
    try:
        return json.loads(bytes(body) or b"{}")
    except ValueError:
        raise errors.bad_request("The request body is not valid JSON.") from None


def int_param(query: dict[str, str], name: str, default: int | None,
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
