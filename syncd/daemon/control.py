"""The running daemon's control socket: ask it how it is, ask it to reconcile.

JSON over HTTP on a Unix socket, ``state_dir/control.sock``, served by uvicorn
(Starlette) on its own thread. The socket is the access control: it is created
mode 0600, so only the daemon's user (and root) can connect. It is bound under a
private temporary name and renamed into place, so it is never reachable with
wider permissions, not even for an instant (uvicorn's own ``uds=`` makes it 0666).

    GET  /v1/status     the daemon's live status (see ``Daemon.status``)
    POST /v1/reconcile  {"dry_run": bool, "paths": [str] | null,
                         "max_delete": "N" | "P%" | null,
                         "confirm_deletes": bool, "stream": bool} -> the run's outcome

``max_delete`` caps this run's remote deletes in place of ``sync.max_delete``,
for this run only (``syncd reconcile --max-delete``); ``confirm_deletes`` makes the
deletes an earlier refusal holds (``--confirm-deletes``). A body is at most
``MAX_BODY`` bytes: a request is a few paths, not a payload.

With ``"stream": true`` the answer is the run's progress as it happens, one JSON
object a line (``application/x-ndjson``), the engine's ``Progress`` calls as events:

    {"event": "accepted"}                                the request is queued
    {"event": "planned", "files": N, "bytes": B}         a full run's totals
    {"event": "done", "action": "upload", "path": P, "size": S}     one action ended
    {"event": "done", ..., "count": K}    K actions of a kind folded into one event
    {"event": "outcome", "outcome": {...}}               the outcome; the last line
    {"event": "error", "error": "..."}                   the run failed; the last line

The worker never waits for a reader: past ``MAX_PENDING`` unsent events, finished
actions are folded (counted, bytes summed, the newest name kept) until the client
catches up. A client that goes away ends its answer, not the run. Without
``stream`` the answer is the outcome alone, once the run ended.

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
from collections import deque
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, cast

import httpx
import structlog

from syncd.config import MaxDelete
from syncd.config import parse_max_delete as config_max_delete
from syncd.engine.progress import Action, Progress
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
# Events a streamed answer holds for a slow reader before folding finished actions.
MAX_PENDING = 256
STREAM_TYPE = "application/x-ndjson"
ACTIONS: tuple[Action, ...] = ("upload", "adopt", "delete")


@dataclass
class ReconcileRequest:
    """A reconcile asked for over the socket; the worker fills ``result``."""

    dry_run: bool = False
    paths: list[str] | None = None
    # This run's cap on remote deletes in place of sync.max_delete; None: the config's.
    max_delete: MaxDelete | None = None
    # Make the deletes an earlier refusal holds (``syncd reconcile --confirm-deletes``).
    confirm_deletes: bool = False
    # Told the run's totals and each action done, on the worker thread; None: nobody asks.
    progress: Progress | None = None
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
    from starlette.requests import ClientDisconnect, Request
    from starlette.responses import JSONResponse, Response, StreamingResponse
    from starlette.routing import Route
    from starlette.types import Receive, Scope, Send

    class Streamed(StreamingResponse):
        """A run's events; whatever ends the answer, the run's later events go nowhere."""

        def __init__(self, events: EventStream) -> None:
            super().__init__(events.lines(), media_type=STREAM_TYPE)
            self.events = events

        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            try:
                await super().__call__(scope, receive, send)
            except (ClientDisconnect, OSError):
                pass  # the client went away
            finally:
                if not self.events.ended:
                    log.info("the client of a streamed reconcile went away; the run goes on")
                self.events.close()

    async def status(_request: Request) -> JSONResponse:
        return JSONResponse(target.status())

    async def reconcile(request: Request) -> Response:
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
        if body.get("stream"):
            events = EventStream(asyncio.get_running_loop())
            job.progress = events
            job.result.add_done_callback(events.finish)
            target.submit(job)
            return Streamed(events)
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
    for flag in ("dry_run", "confirm_deletes", "stream"):
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


class EventStream:
    """One requested run's progress, from the worker thread to its streamed answer.

    ``planned``, ``done`` (the engine's ``Progress``) and ``finish`` are called on the
    worker thread (``done`` on the upload threads too): each hands its event to the
    server's event loop and returns at once, whatever the reader does. On the loop the
    events wait in a bounded queue; once ``MAX_PENDING`` wait, or while some are folded,
    finished actions are folded per action (one event with ``count``) until the reader
    has taken the rest. ``planned`` and the last event are never folded.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, limit: int = MAX_PENDING) -> None:
        self._loop = loop
        self._limit = limit
        self._pending: deque[dict[str, Any]] = deque()
        self._folded: dict[str, dict[str, Any]] = {}
        self._ready = asyncio.Event()
        # Set once the answer ended (sent, or the client went away): events are dropped.
        self.closed = False
        # Set once the last event (the outcome or the error) was handed to the answer.
        self.ended = False

    # -- the worker's side

    def planned(self, files: int, size: int) -> None:
        self._post({"event": "planned", "files": files, "bytes": size})

    def done(self, action: Action, path: str, size: int) -> None:
        self._post({"event": "done", "action": action, "path": path, "size": size})

    def finish(self, result: Future[dict[str, Any]]) -> None:
        """The run ended (a done callback of the request's future)."""
        if result.cancelled():
            self._post({"event": "error", "error": "the run was cancelled"})
        elif (exc := result.exception()) is not None:
            self._post({"event": "error", "error": str(exc) or type(exc).__name__})
        else:
            self._post({"event": "outcome", "outcome": result.result()})

    def _post(self, event: dict[str, Any]) -> None:
        if self.closed:
            return
        try:
            self._loop.call_soon_threadsafe(self._put, event)
        except RuntimeError:  # the server's loop is gone: nobody is left to tell
            self.closed = True

    # -- the event loop's side

    def close(self) -> None:
        self.closed = True
        self._pending.clear()
        self._folded.clear()

    def _put(self, event: dict[str, Any]) -> None:
        if self.closed:
            return
        if event["event"] == "done" and (self._folded or len(self._pending) >= self._limit):
            held = self._folded.get(event["action"])
            if held is None:
                self._folded[event["action"]] = {**event, "count": 1}
            else:
                held["count"] += 1
                held["size"] += event["size"]
                held["path"] = event["path"]
        else:
            self._unfold()
            self._pending.append(event)
        self._ready.set()

    def _unfold(self) -> None:
        self._pending.extend(self._folded.values())
        self._folded.clear()

    async def _next(self) -> dict[str, Any]:
        while not self._pending:
            if self._folded:
                self._unfold()
                break
            self._ready.clear()
            await self._ready.wait()
        return self._pending.popleft()

    async def lines(self) -> AsyncIterator[bytes]:
        """The answer's body: ``accepted``, the events, then the outcome or the error."""
        try:
            yield _line({"event": "accepted"})
            while True:
                event = await self._next()
                self.ended = event["event"] in ("outcome", "error")
                yield _line(event)
                if self.ended:
                    return
        finally:
            self.close()


def _line(event: dict[str, Any]) -> bytes:
    # ASCII: a name that is not UTF-8 (a lone surrogate) travels as an escape.
    return (json.dumps(event) + "\n").encode()


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


@contextlib.contextmanager
def _answer(
    state_dir: Path, method: str, path: str, body: Any, timeout: float | None
) -> Iterator[httpx.Response]:
    """The daemon's answer to one request, its body not read yet; raises NotRunning when
    none answers, BadRequest or ControlError when it refuses. An HTTP error while the
    body is read (the daemon went away) is a ControlError too."""
    where = socket_path(state_dir)
    if not where.exists():
        raise NotRunning(f"no control socket at {where}")
    transport = httpx.HTTPTransport(uds=str(where))
    try:
        with (
            httpx.Client(transport=transport, timeout=httpx.Timeout(timeout, connect=5.0)) as c,
            c.stream(method, f"{API}{path}", json=body) as response,
        ):
            if response.status_code != 200:
                response.read()
                data = _json(response)
                refused = BadRequest if response.status_code == 400 else ControlError
                raise refused(str(data.get("error") if isinstance(data, dict) else data))
            yield response
    except httpx.ConnectError as exc:
        cause = exc.__cause__ or exc.__context__
        if isinstance(cause, PermissionError) or "ermission" in str(exc):
            raise ControlError(
                f"not allowed to use {where}: run this as the daemon's user"
            ) from None
        raise NotRunning(f"nothing answers on {where}") from None
    except httpx.HTTPError as exc:
        raise ControlError(f"the daemon did not answer on {where}: {exc}") from None


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        raise ControlError(f"the daemon answered {response.status_code} without JSON") from None


def _object(data: Any) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ControlError("the daemon answered something other than a JSON object")
    return data


def ask(
    state_dir: Path, method: str, path: str, body: Any = None, *, timeout: float | None = 10.0
) -> dict[str, Any]:
    """One request to the daemon of ``state_dir``; raises NotRunning when none answers."""
    with _answer(state_dir, method, path, body, timeout) as response:
        response.read()
        return _object(_json(response))


def daemon_status(state_dir: Path) -> dict[str, Any]:
    return ask(state_dir, "GET", "/status")


class DaemonRun:
    """A reconcile the running daemon took on; ``outcome`` waits for its end."""

    def __init__(self, response: httpx.Response) -> None:
        self._response = response
        # False when the daemon answers with the outcome alone (one without streaming).
        self.streaming = response.headers.get("content-type", "").startswith(STREAM_TYPE)

    def outcome(self, progress: Progress | None = None) -> dict[str, Any]:
        """The run's outcome, however long it takes; ``progress`` is told its totals and
        each action done as the daemon reports them."""
        if not self.streaming:
            self._response.read()
            return _object(_json(self._response))
        for line in self._response.iter_lines():
            if not line.strip():
                continue
            try:
                event = json.loads(line)
            except ValueError:
                bad = f"the daemon sent a line that is not JSON: {line[:80]!r}"
                raise ControlError(bad) from None
            kind = event.get("event") if isinstance(event, dict) else None
            if kind == "outcome":
                return _object(event.get("outcome"))
            if kind == "error":
                raise ControlError(str(event.get("error")))
            if progress is not None:
                _tell(progress, event)
        raise ControlError("the daemon ended its answer before the run ended (see its log)")


def _tell(progress: Progress, event: dict[str, Any]) -> None:
    """One streamed event to ``progress``; an event not understood (of a newer daemon,
    say) is passed over."""
    kind = event.get("event")
    try:
        if kind == "planned":
            progress.planned(int(event["files"]), int(event["bytes"]))
        elif kind == "done" and event.get("action") in ACTIONS:
            action, path = cast(Action, event["action"]), str(event["path"])
            for _ in range(int(event.get("count", 1)) - 1):  # folded: the others' names are gone
                progress.done(action, path, 0)
            progress.done(action, path, int(event["size"]))
    except (KeyError, TypeError, ValueError):
        pass


@contextlib.contextmanager
def start_reconcile(
    state_dir: Path,
    *,
    dry_run: bool = False,
    paths: list[str] | None = None,
    max_delete: MaxDelete | None = None,
    confirm_deletes: bool = False,
    stream: bool = False,
) -> Iterator[DaemonRun]:
    """Ask the daemon to reconcile now; the run, once the daemon took it on. With
    ``stream``, the daemon reports the run's progress as it goes (see the module)."""
    body: dict[str, Any] = {"dry_run": dry_run}
    if paths:
        body["paths"] = paths
    if max_delete is not None:
        body["max_delete"] = str(max_delete)
    if confirm_deletes:
        body["confirm_deletes"] = True
    if stream:
        body["stream"] = True
    with _answer(state_dir, "POST", "/reconcile", body, None) as response:
        yield DaemonRun(response)


# ---------------------------------------------------------------- outcomes


def dumps(data: Any) -> str:
    return json.dumps(data, ensure_ascii=False, indent=1)
