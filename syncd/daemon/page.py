"""The daemon's read-only HTTP listener: ``/metrics``, the status page and its JSON.

One small stdlib server on the ``daemon.metrics`` address serves:

* ``/metrics``: the Prometheus exposition, as before;
* ``/``: the status page, with ``/static/page.css`` and ``/static/page.js`` (package
  data, read once at start: no build step, nothing fetched from elsewhere);
* ``/api/status`` and ``/api/log``: the documents of :mod:`syncd.daemon.page_data`.

Safe by construction: only GET and HEAD are answered (anything else is 405, and no
route changes anything); every response forbids every origin but this one (the
Content-Security-Policy below), sniffing and referrers; the page writes every name
with ``textContent``. While the listener is on loopback, a request whose Host is not
a loopback name is refused, so a web page elsewhere cannot read the status through a
DNS name rebound to 127.0.0.1.
"""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

import structlog
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from syncd.config import is_loopback
from syncd.daemon.page_data import BadQuery

if TYPE_CHECKING:
    from collections.abc import Callable

    from syncd.daemon.page_data import Documents

log = structlog.get_logger("syncd.daemon")

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}
ASSETS = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/static/page.css": ("page.css", "text/css; charset=utf-8"),
    "/static/page.js": ("page.js", "text/javascript; charset=utf-8"),
}
def load_assets() -> dict[str, tuple[bytes, str]]:
    folder = resources.files("syncd.daemon").joinpath("static")
    return {route: (folder.joinpath(name).read_bytes(), kind)
            for route, (name, kind) in ASSETS.items()}  # fmt: skip


class PageServer(ThreadingHTTPServer):
    """The listener, with what its handlers serve."""

    daemon_threads = True
    # A few open pages and a scraper: a short backlog is plenty.
    request_queue_size = 16

    def __init__(
        self,
        address: tuple[str, int],
        registry: CollectorRegistry,
        documents: Documents | None,
    ) -> None:
        host = address[0]
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.registry = registry
        self.documents = documents
        self.assets = load_assets() if documents is not None else {}
        self.loopback_only = is_loopback(host)
        super().__init__(address, Handler)


class Handler(BaseHTTPRequestHandler):
    server: PageServer
    server_version = "syncd"
    sys_version = ""
    protocol_version = "HTTP/1.1"
    # A connection that sends nothing for this long is closed: an idle keep-alive, or a
    # client that opened one and stalled, holds no thread for good.
    timeout = 30.0

    def do_GET(self) -> None:
        self._answer(body=True)

    def do_HEAD(self) -> None:
        self._answer(body=False)

    def __getattr__(self, name: str) -> Callable[[], None]:
        # Every other method (POST, PUT, DELETE, ...) is refused: nothing here acts.
        if name.startswith("do_"):
            return self._refuse
        raise AttributeError(name)

    def _refuse(self) -> None:
        # A body it may carry is not read: the connection ends with this answer.
        self.close_connection = True
        self._send(405, b'{"error": "read only: GET and HEAD"}\n', "application/json",
                   extra={"Allow": "GET, HEAD", "Connection": "close"})  # fmt: skip

    def _answer(self, *, body: bool) -> None:
        if self.server.loopback_only and not self._host_is_loopback():
            self._send(421, b'{"error": "unknown host"}\n', "application/json", body=body)
            return
        parts = urlsplit(self.path)
        try:
            status, payload, kind = self._route(parts.path, dict(parse_qsl(parts.query)))
        except BadQuery as exc:
            status, payload, kind = 400, _json({"error": str(exc)}), "application/json"
        except Exception as exc:  # the state is busy or closing: say so, keep serving
            log.debug("status page request failed", path=parts.path, exc_info=True)
            reason = type(exc).__name__
            status, payload, kind = 503, _json({"error": f"unavailable ({reason})"}), \
                "application/json"  # fmt: skip
        self._send(status, payload, kind, body=body)

    def _route(self, path: str, query: dict[str, str]) -> tuple[int, bytes, str]:
        if path == "/metrics":
            return 200, generate_latest(self.server.registry), CONTENT_TYPE_LATEST
        documents = self.server.documents
        if documents is not None:
            if path in self.server.assets:
                payload, kind = self.server.assets[path]
                return 200, payload, kind
            if path == "/api/status":
                return 200, _json(documents.status(query)), "application/json"
            if path == "/api/log":
                return 200, _json(documents.log(query)), "application/json"
            if path == "/favicon.ico":
                return 204, b"", "image/x-icon"
        return 404, b'{"error": "not found"}\n', "application/json"

    def _host_is_loopback(self) -> bool:
        host = self.headers.get("Host", "")
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        return is_loopback(name)

    def _send(
        self, status: int, payload: bytes, kind: str, *, body: bool = True,
        extra: dict[str, str] | None = None,
    ) -> None:  # fmt: skip
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(payload)))
        for name, value in {**HEADERS, **(extra or {})}.items():
            self.send_header(name, value)
        self.end_headers()
        if body and status != 204:
            self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        # One line per poll would bury the daemon's log; requests are not events.
        pass


def _json(data: Any) -> bytes:
    return json.dumps(data, ensure_ascii=False).encode("utf-8")


def serve(server: PageServer) -> threading.Thread:
    # serve_forever wakes twice a second to look for a shutdown, as prometheus_client's
    # own server did: nothing else runs until a request comes.
    thread = threading.Thread(target=server.serve_forever, name="syncd-http", daemon=True)
    thread.start()
    if server.documents is not None:
        host, port = str(server.server_address[0]), server.server_address[1]
        shown = f"[{host}]" if ":" in host else host
        log.info("serving the status page", url=f"http://{shown}:{port}/")
    return thread
