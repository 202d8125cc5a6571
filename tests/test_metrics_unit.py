"""The pure parts behind status and metrics: phase names, addresses, the request tally
(fed through a real httpx transport against a local HTTP server), units."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import httpx
import pytest

from syncd.config import parse_address
from syncd.daemon.metrics import ObservedTransport, Recorder
from syncd.daemon.phase import REPORTED, Phase
from syncd.daemon.status import exit_code
from syncd.units import human_bytes


@pytest.mark.parametrize(
    ("activity", "down", "phase"),
    [
        (Phase.IDLE, False, "idle"),
        (Phase.IDLE, True, "remote unreachable"),
        (Phase.RECONCILING, False, "syncing"),
        (Phase.BATCHES, False, "syncing"),
        (Phase.SYNCING, True, "remote unreachable"),
        (Phase.CATCHING_UP, False, "catching up"),
        (Phase.WAITING_FOR_ROOT, True, "waiting for root"),
        (Phase.ROOT_SETTLING, False, "waiting for root"),
        (Phase.STOPPING, True, "stopping"),
    ],
)
def test_phase(activity: Phase, down: bool, phase: str) -> None:
    assert activity.reported(down) == phase
    assert phase in REPORTED


def test_address() -> None:
    assert parse_address("127.0.0.1:9464") == ("127.0.0.1", 9464)
    assert parse_address("[::1]:9464") == ("::1", 9464)
    for bad in ("9464", "host:", ":80", "h:0", "h:70000", "h:x"):
        with pytest.raises(ValueError, match="HOST:PORT"):
            parse_address(bad)


def test_units_are_binary_and_spelled_so() -> None:
    assert human_bytes(100 * 1024**3) == "100.0 GiB"
    assert human_bytes(1536) == "1.5 KiB"
    assert human_bytes(12) == "12 B"


def test_status_exit_code() -> None:
    ok = {"counts": {"synced": 2}, "not_synced": [], "last_reconcile": {"exit_code": 0}}
    assert exit_code(ok) == 0
    assert exit_code({**ok, "not_synced": [{"status": "skipped", "path": "a"}]}) == 0
    assert exit_code({**ok, "not_synced": [{"status": "error", "path": "a"}]}) == 1
    # Nothing known because the first reconcile failed (remote down): not a success.
    assert exit_code({"counts": {}, "not_synced": [], "last_reconcile": {"exit_code": 1}}) == 1
    assert exit_code({"counts": {}, "not_synced": [], "last_reconcile": None}) == 1
    down = {**ok, "source": "daemon", "remote": {"reachable": False}}
    assert exit_code(down) == 1


class _Flaky(BaseHTTPRequestHandler):
    """Answers 503 to the first GET of each path, 200 after; POST 429; DELETE 503."""

    seen: ClassVar[set[str]] = set()

    def do_GET(self) -> None:
        status = 200 if self.path in self.seen else 503
        self.seen.add(self.path)
        self._answer(status)

    def do_DELETE(self) -> None:
        self._answer(503)

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length") or 0))
        self._answer(429)

    def _answer(self, status: int) -> None:
        self.send_response(status)
        self.send_header("content-length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *_args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Flaky)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_tally_counts_outcomes_and_retries(server: str) -> None:
    recorder = Recorder()
    transport = ObservedTransport(httpx.HTTPTransport(), recorder)
    with httpx.Client(transport=transport, base_url=server) as http:
        assert http.get("/files/a").status_code == 503
        assert http.get("/files/a").status_code == 200  # the retry of the same request
        assert http.get("/files/b").status_code == 503  # a new request, not a retry
        assert http.post("/files", content=b"x").status_code == 429
        assert http.delete("/files/a").status_code == 503
    tally = recorder.snapshot()
    assert tally["requests"]["read"] == {"ok": 1, "4xx": 0, "429": 0, "5xx": 2, "network": 0}
    assert tally["requests"]["upload"]["429"] == 1
    assert tally["requests"]["delete"]["5xx"] == 1
    assert tally["retries"] == {"upload": 0, "read": 1, "delete": 0}

    closed = ObservedTransport(httpx.HTTPTransport(retries=0), recorder)
    with httpx.Client(transport=closed, timeout=2) as http, pytest.raises(httpx.ConnectError):
        http.get("http://127.0.0.1:1/files")
    assert recorder.snapshot()["requests"]["read"]["network"] == 1


def test_a_failed_path_whose_name_holds_a_colon_space_is_not_counted_as_synced() -> None:
    """Latency is observed for the paths a run synced, read from the run's typed
    failures: a name such as ``notes: draft.txt`` is one path, not a prefix."""
    from dataclasses import dataclass, field

    from syncd.daemon.metrics import Recorder

    @dataclass
    class Run:
        exit_code: int = 1
        errors: list[str] = field(default_factory=lambda: ["notes: draft.txt: error: boom"])
        failed_paths: set[str] = field(default_factory=lambda: {"notes: draft.txt"})

    recorder = Recorder()
    events = {"notes: draft.txt": 0.0, "ok.txt": 0.0}
    recorder.run_finished("sync", Run(), duration_s=0.1, first_events=events, now=1.0)
    sample = recorder.registry.get_sample_value
    assert sample("syncd_event_to_mapping_seconds_count") == 1  # only ok.txt
    assert sample("syncd_event_to_mapping_seconds_sum") == 1.0
