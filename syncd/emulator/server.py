"""Running the emulator under uvicorn, in the foreground or in a background thread."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Callable

import uvicorn

from .app import EmulatorApp
from .settings import EmulatorSettings

STARTUP_TIMEOUT_S = 15.0


def bind_socket(host: str, port: int) -> socket.socket:
    """Bind up front so a taken port raises OSError in the caller, and port 0 resolves."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto must be IPPROTO_TCP: asyncio only sets TCP_NODELAY on accepted sockets that say
    # so, and without it Nagle plus delayed ACKs add ~40 ms to every keep-alive response.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except BaseException:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def root_url(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


def make_server(app: EmulatorApp, settings: EmulatorSettings) -> uvicorn.Server:
    config = uvicorn.Config(
        app,
        # Connection drops rely on h11's RequestResponseCycle internals.
        http="h11",
        loop="asyncio",
        lifespan="off",
        # The client address must be the real peer: /_emulator is loopback-only.
        proxy_headers=False,
        access_log=False,
        log_config=None,
        log_level=settings.log_level.lower(),
        timeout_graceful_shutdown=3,
        server_header=False,
        # The app stamps `Date` itself, from its clock with the configured offset; uvicorn's
        # would come as a second header.
        date_header=False,
    )
    return uvicorn.Server(config)


async def serve(server: uvicorn.Server, sock: socket.socket,
                on_started: Callable[[], None]) -> None:
    task = asyncio.ensure_future(server.serve(sockets=[sock]))
    while not server.started and not task.done():
        await asyncio.sleep(0.01)
    if server.started:
        on_started()
    await task


class RunningEmulator:
    """An emulator served from a daemon thread of this process."""

    def __init__(self, settings: EmulatorSettings) -> None:
        self.settings = settings
        self._sock = bind_socket(settings.host, settings.port)
        self.port: int = self._sock.getsockname()[1]
        self.root_url = root_url(settings.host, self.port)
        self.app = EmulatorApp(settings)
        self.url = self.root_url + self.app.flavor.api_prefix
        self._server = make_server(self.app, settings)
        self._started = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="syncd-emulator", daemon=True)

    def _run(self) -> None:
        try:
            asyncio.run(serve(self._server, self._sock, self._started.set))
        except BaseException as exc:  # surfaced to the starting thread
            self._error = exc
        finally:
            self._started.set()

    def start(self) -> RunningEmulator:
        self._thread.start()
        if not self._started.wait(STARTUP_TIMEOUT_S) or not self._server.started:
            self.stop()
            raise RuntimeError(f"emulator failed to start: {self._error!r}")
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        self._sock.close()
        self.app.close()

    def __enter__(self) -> RunningEmulator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_in_thread(settings: EmulatorSettings) -> RunningEmulator:
    """Serve the emulator from a daemon thread; returns once it accepts connections."""
    return RunningEmulator(settings).start()
