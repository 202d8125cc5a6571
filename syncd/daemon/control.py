"""The running daemon's control socket: ask it how it is, ask it to reconcile.

JSON over HTTP on a Unix socket, ``state_dir/control.sock``, served by uvicorn
(Starlette) on its own thread. The socket is the access control: it is created
mode 0600, so only the daemon's user (and root) can connect. It is bound under a
private temporary name and renamed into place, so it is never reachable with
wider permissions, not even for an instant (uvicorn's own ``uds=`` makes it 0666).

    GET  /v1/status     the daemon's live status (see ``Daemon.status``)
    POST /v1/reconcile  {"dry_run": bool, "paths": [str] | null,
                         "max_delete": "N" | "P%" | null,
                         "confirm_deletes": bool} -> the run's outcome

``max_delete`` caps this run's remote deletes in place of ``sync.max_delete``,
for this run only (``syncd reconcile --max-delete``); ``confirm_deletes`` makes the
deletes an earlier refusal holds (``--confirm-deletes``). A body is at most
``MAX_BODY`` bytes: a request is a few paths, not a payload.

Paths are relative to the root and stay inside it: an absolute path, or one whose
``..`` leaves the root, is refused (400) before anything runs.

A reconcile asked for here runs on the daemon's worker thread, like every engine
call: the same plan, the same deletion safety, never concurrently with a sync.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import tempfile
import threading
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import httpx
import structlog

from syncd.config import MaxDelete
from syncd.config import parse_max_delete as config_max_delete
from syncd.engine.scan import root_relative

log = structlog.get_logger("syncd.daemon")

SOCKET_NAME = "control.sock"
# sun_path holds 108 bytes with the terminating NUL.
MAX_SOCKET_PATH = 107
API = "http://syncd/v1"


def socket_path(state_dir: Path) -> Path:
    return state_dir / SOCKET_NAME


# The largest request body read: ample for thousands of paths.
MAX_BODY = 4 * 1024 * 1024


@dataclass
class ReconcileRequest:
    """A reconcile asked for over the socket; the worker fills ``result``."""

    dry_run: bool = False
    paths: list[str] | None = None
    # This run's cap on remote deletes in place of sync.max_delete; None: the config's.
    max_delete: MaxDelete | None = None
    # Make the deletes an earlier refusal holds (``syncd reconcile --confirm-deletes``).
    confirm_deletes: bool = False
    result: Future[dict[str, Any]] = field(default_factory=Future)


class Controlled(Protocol):
    """What the control socket needs from the daemon."""

    def status(self) -> dict[str, Any]: ...

    def submit(self, request: ReconcileRequest) -> None: ...


class ControlError(Exception):
    """The daemon could not be asked; the message says why."""


class NotRunning(ControlError):
    """No daemon answers on the socket (none started, or it crashed)."""


class BadRequest(ControlError):
    """The daemon refused what was asked (a usage error); the message says why."""


# ---------------------------------------------------------------- server


def _app(target: Controlled) -> Any:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def status(_request: Request) -> JSONResponse:
        return JSONResponse(target.status())

    async def reconcile(request: Request) -> JSONResponse:
        raw = bytearray()
        async for chunk in request.stream():
            raw += chunk
            if len(raw) > MAX_BODY:
                too_big = f"the body is over {MAX_BODY} bytes"
                return JSONResponse({"error": too_big}, status_code=413)
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            return JSONResponse({"error": "the body is not JSON"}, status_code=400)
        job = _request(body)
        if isinstance(job, str):
            return JSONResponse({"error": job}, status_code=400)
        target.submit(job)
        try:
            outcome = await asyncio.wrap_future(job.result)
        except Exception as exc:  # the worker stopped, or the run itself failed
            return JSONResponse({"error": str(exc)}, status_code=503)
        return JSONResponse(outcome)

    return Starlette(
        routes=[
            Route("/v1/status", status, methods=["GET"]),
            Route("/v1/reconcile", reconcile, methods=["POST"]),
        ]
    )


def _request(body: Any) -> ReconcileRequest | str:
    """The reconcile a request body asks for, or why it cannot be run."""
    if not isinstance(body, dict):
        return "the body must be a JSON object"
    for flag in ("dry_run", "confirm_deletes"):
        # "false" is a true string: only JSON's own booleans say yes or no.
        if not isinstance(body.get(flag, False), bool):
            return f"{flag} must be true or false, got {body[flag]!r}"
    paths = body.get("paths")
    if paths is not None and not (
        isinstance(paths, list) and paths and all(isinstance(p, str) and p for p in paths)
    ):
        return "paths must be a non-empty list of root-relative paths"
    if paths is not None and body.get("dry_run"):
        return "a dry run covers the whole folder; leave out paths"
    try:
        inside = [root_relative(p) for p in paths] if paths is not None else None
    except ValueError as exc:
        return f"paths: {exc}"
    cap = body.get("max_delete")
    try:
        max_delete = None if cap is None else parse_max_delete(cap)
    except ValueError as exc:
        return f"max_delete: {exc}"
    return ReconcileRequest(
        dry_run=bool(body.get("dry_run")),
        paths=inside,
        max_delete=max_delete,
        confirm_deletes=bool(body.get("confirm_deletes")),
    )


def parse_max_delete(value: object) -> MaxDelete:
    """A run's cap on deletes, ``N`` or ``P%``, read by the rule of ``sync.max_delete``;
    ValueError saying what is expected."""
    try:
        if isinstance(value, str | int) and not isinstance(value, bool):
            return config_max_delete(str(value))
    except ValueError:
        pass
    raise ValueError(
        f"expected a count such as 100 or a percentage such as 50%, got {value!r}"
    )


def bind_private(path: Path) -> socket.socket:
    """A listening Unix socket at ``path``, mode 0600 from the moment it is reachable."""
    if len(os.fsencode(path)) > MAX_SOCKET_PATH:
        raise ControlError(f"socket path too long for a Unix socket ({path})")
    tmp = Path(tempfile.mkdtemp(prefix=".ctl-", dir=path.parent))  # mode 0700
    staged = tmp / "s"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(staged))
        os.chmod(staged, 0o600)
        os.replace(staged, path)  # a stale socket of a crashed daemon is replaced
        sock.listen(64)
    except BaseException:
        sock.close()
        with contextlib.suppress(OSError):
            staged.unlink()
        raise
    finally:
        with contextlib.suppress(OSError):
            tmp.rmdir()
    return sock


class ControlServer:
    """uvicorn serving the control API on the socket, on a thread of its own."""

    def __init__(self, target: Controlled, path: Path) -> None:
        import uvicorn

        self.path = path
        self._sock = bind_private(path)
        config = uvicorn.Config(
            _app(target),
            log_config=None,
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=1,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=lambda: asyncio.run(self._server.serve(sockets=[self._sock])),
            name="syncd-control",
            daemon=True,
        )
        self._thread.start()

    def close(self) -> None:
        self._server.should_exit = True
        self._thread.join(5.0)
        self._sock.close()
        with contextlib.suppress(OSError):
            if self.path.is_socket():
                self.path.unlink()


# ---------------------------------------------------------------- client


def ask(
    state_dir: Path, method: str, path: str, body: Any = None, *, timeout: float | None = 10.0
) -> dict[str, Any]:
    """One request to the daemon of ``state_dir``; raises NotRunning when none answers."""
    where = socket_path(state_dir)
    if not where.exists():
        raise NotRunning(f"no control socket at {where}")
    transport = httpx.HTTPTransport(uds=str(where))
    try:
        with httpx.Client(transport=transport, timeout=httpx.Timeout(timeout, connect=5.0)) as c:
            response = c.request(method, f"{API}{path}", json=body)
    except httpx.ConnectError as exc:
        cause = exc.__cause__ or exc.__context__
        if isinstance(cause, PermissionError) or "ermission" in str(exc):
            raise ControlError(
                f"not allowed to use {where}: run this as the daemon's user"
            ) from None
        raise NotRunning(f"nothing answers on {where}") from None
    except httpx.HTTPError as exc:
        raise ControlError(f"the daemon did not answer on {where}: {exc}") from None
    try:
        data = response.json()
    except ValueError:
        raise ControlError(f"the daemon answered {response.status_code} without JSON") from None
    if response.status_code != 200:
        refused = BadRequest if response.status_code == 400 else ControlError
        raise refused(str(data.get("error") if isinstance(data, dict) else data))
    if not isinstance(data, dict):
        raise ControlError("the daemon answered something other than a JSON object")
    return data


def daemon_status(state_dir: Path) -> dict[str, Any]:
    return ask(state_dir, "GET", "/status")


def daemon_reconcile(
    state_dir: Path,
    *,
    dry_run: bool = False,
    paths: list[str] | None = None,
    max_delete: MaxDelete | None = None,
    confirm_deletes: bool = False,
) -> dict[str, Any]:
    """Ask the daemon to reconcile now and wait for the outcome, however long it takes."""
    body: dict[str, Any] = {"dry_run": dry_run}
    if paths:
        body["paths"] = paths
    if max_delete is not None:
        body["max_delete"] = str(max_delete)
    if confirm_deletes:
        body["confirm_deletes"] = True
    return ask(state_dir, "POST", "/reconcile", body, timeout=None)


# ---------------------------------------------------------------- outcomes


def dumps(data: Any) -> str:
    return json.dumps(data, ensure_ascii=False, indent=1)
