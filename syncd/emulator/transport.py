"""Dropping a connection without answering, which plain ASGI has no verb for.

uvicorn's h11 protocol hands the application the bound `send` method of its
RequestResponseCycle, which owns the asyncio transport. Closing that transport and marking
the cycle disconnected makes uvicorn skip its "returned without a response" 500, so the
client sees the connection end with no response at all.
"""

from __future__ import annotations

from typing import Any

from starlette.types import Receive, Send


class CannotDrop(RuntimeError):
    pass


async def drain(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] != "http.request" or not message.get("more_body", False):
            return


async def drop_connection(send: Send, receive: Receive | None = None) -> None:
    """Close the client connection with no response; read any unread body first if given.

    Reading the body first matters: closing a socket with unread input makes the kernel send
    RST, and a client still writing would then see a write error rather than a dropped
    response.
    """
    cycle: Any = getattr(send, "__self__", None)
    transport: Any = getattr(cycle, "transport", None)
    if transport is None or not hasattr(cycle, "disconnected"):
        raise CannotDrop("connection drops need uvicorn's h11 protocol")
    if receive is not None:
        await drain(receive)
    cycle.disconnected = True
    transport.close()
