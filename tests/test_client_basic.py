"""FilesClient against the emulator: calls, typed results, the error hierarchy, retries."""

from __future__ import annotations

import logging
import socket
import threading
import time
import traceback
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog
from structlog.testing import capture_logs

from syncd import events
from syncd.api._http import error_for_response, parse_retry_after
from syncd.api.adoption import UploadWindow, find_own_upload
from syncd.api.client import upload_once
from syncd.api.errors import (
    AmbiguousUploadError,
    APIError,
    AuthenticationError,
    InvalidRequestError,
    NetworkError,
    NotFoundError,
    QuotaExceededError,
    RateLimitedError,
    ServerError,
)
from syncd.api.key import ApiKey
from syncd.api.models import RemoteFile
from syncd.api.options import RetryPolicy, Timeouts
from syncd.api.retry import backoff_cap, build_retrying, compute_wait
from tests.emulator_fixture import EmulatorHandle
from tests.helpers import wait_until
from tests.helpers_client import make_client, write_batch, write_text_files

FAST_RETRY = RetryPolicy(max_attempts=12, max_elapsed=60, initial_backoff=0.05, max_backoff=0.5)

# ---- pure logic -------------------------------------------------------------------------


def test_backoff_is_exponential_with_full_jitter() -> None:
    policy = RetryPolicy(initial_backoff=0.5, max_backoff=8.0)
    assert [backoff_cap(policy, n) for n in range(1, 7)] == [0.5, 1, 2, 4, 8, 8]
    assert compute_wait(policy, 3, ServerError("x"), rng=lambda lo, hi: hi) == 2.0
    assert compute_wait(policy, 3, ServerError("x"), rng=lambda lo, hi: lo) == 0.0
    hinted = RateLimitedError("slow down", retry_after=7.5)
    assert compute_wait(policy, 1, hinted, rng=lambda lo, hi: hi) == 7.5


def test_retrying_gives_up_on_final_errors_and_overlong_hints() -> None:
    policy = RetryPolicy(max_attempts=5, max_elapsed=2.0, initial_backoff=0.0)
    calls: list[str] = []

    def refuse() -> None:
        calls.append("x")
        raise InvalidRequestError("no", status=400)

    with pytest.raises(InvalidRequestError):
        build_retrying(policy, call_class="read", operation="t")(refuse)
    assert len(calls) == 1

    def throttled() -> None:
        calls.append("y")
        raise RateLimitedError("later", status=429, retry_after=30.0)

    start = time.monotonic()
    with pytest.raises(RateLimitedError) as info:
        build_retrying(policy, call_class="read", operation="t")(throttled)
    # A hint past the elapsed budget ends the call at once, hint attached.
    assert time.monotonic() - start < 0.5 and info.value.retry_after == 30.0
    assert calls.count("y") == 1

    def flaky() -> str:
        calls.append("z")
        if calls.count("z") < 3:
            raise ServerError("boom", status=503)
        return "ok"

    assert build_retrying(policy, call_class="read", operation="t")(flaky) == "ok"
    assert calls.count("z") == 3


def _response(
    status: int,
    body: Any = None,
    headers: dict[str, str] | None = None,
    content: bytes | None = None,
) -> httpx.Response:
    if content is None:
        return httpx.Response(status, json=body, headers=headers)
    return httpx.Response(status, content=content, headers=headers)


def test_retry_after_headers() -> None:
    assert parse_retry_after(httpx.Headers({"retry-after": "3"})) == 3.0
    assert parse_retry_after(httpx.Headers({"retry-after-ms": "250", "retry-after": "9"})) == 0.25
    assert parse_retry_after(httpx.Headers({"retry-after": "soon"})) is None
    assert parse_retry_after(httpx.Headers({})) is None
    date = "Wed, 21 Oct 2015 07:28:10 GMT"
    assert parse_retry_after(httpx.Headers({"retry-after": date}), now=1445412480.0) == 10.0


@pytest.mark.parametrize(
    ("status", "body", "cls", "code"),
    [
        (
            401,
            {"error": {"message": "Incorrect API key provided.", "code": "invalid_api_key"}},
            AuthenticationError,
            "invalid_api_key",
        ),
        (403, None, AuthenticationError, None),
        (404, {"error": {"message": "Not found!"}}, NotFoundError, None),
        (
            400,
            {
                "error": {
                    "message": "bad",
                    "type": "invalid_request_error",
                    "code": "BadRequest.UnsupportedFileFormat",
                },
                "request_id": "r1",
            },
            InvalidRequestError,
            "BadRequest.UnsupportedFileFormat",
        ),
        (400, {"error": {"message": "Upload file number exceed limit."}}, QuotaExceededError, None),
        (
            400,
            {"error": {"message": "Upload file capacity exceed limit.", "code": None}},
            QuotaExceededError,
            None,
        ),
        (
            413,
            {"error": {"message": "Payload Too Large.", "code": "BadRequest.TooLarge"}},
            InvalidRequestError,
            "BadRequest.TooLarge",
        ),
        (
            429,
            {"error": {"message": "Requests rate limit exceeded", "code": "limit_requests"}},
            RateLimitedError,
            "limit_requests",
        ),
        (
            503,
            {"error": {"message": "oops", "type": "internal_error"}},
            ServerError,
            "internal_error",
        ),
    ],
)
def test_error_mapping(status: int, body: Any, cls: type[APIError], code: str | None) -> None:
    error = error_for_response(_response(status, body, {"x-request-id": "hdr"}), "sk-secret")
    assert type(error) is cls
    assert error.status == status
    assert error.code == code
    assert error.request_id == ("r1" if body and "request_id" in body else "hdr")


def test_error_mapping_tolerates_odd_bodies() -> None:
    html = error_for_response(_response(502, content=b"<html>Bad Gateway</html>"), "k")
    assert isinstance(html, ServerError) and "Bad Gateway" in html.message
    empty = error_for_response(_response(400, content=b""), "k")
    assert type(empty) is InvalidRequestError and empty.message == "Bad Request"
    echoed = error_for_response(_response(400, {"error": {"message": "key sk-abc bad"}}), "sk-abc")
    assert "sk-abc" not in str(echoed)
    hinted = error_for_response(_response(429, {}, {"retry-after": "2"}), "k")
    assert isinstance(hinted, RateLimitedError) and hinted.retry_after == 2.0


def test_api_key_loading(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "sk-load-me-123"
    keyfile = tmp_path / "key"
    keyfile.write_text(f"  {secret}\n")
    assert ApiKey.load(file=keyfile).reveal() == secret
    monkeypatch.setenv("SYNCD_TEST_KEY", f"{secret}\n")
    assert ApiKey.load(env="SYNCD_TEST_KEY").reveal() == secret
    monkeypatch.setenv("SYNCD_TEST_KEY", "")
    assert ApiKey.load(env="SYNCD_TEST_KEY", file=keyfile).reveal() == secret
    with pytest.raises(ValueError, match="SYNCD_TEST_KEY"):
        ApiKey.load(env="SYNCD_TEST_KEY")
    with pytest.raises(ValueError, match="nope"):
        ApiKey.load(file=tmp_path / "nope")
    keyfile.write_text("sk-a b")
    with pytest.raises(ValueError, match=str(keyfile)) as info:
        ApiKey.load(file=keyfile)
    assert "sk-a" not in str(info.value)
    key = ApiKey(secret)
    assert secret not in repr(key) and secret not in str(key) and secret not in f"{key}"
    assert key.fingerprint() == ApiKey(secret).fingerprint() != ApiKey("sk-other").fingerprint()


# ---- against the emulator ---------------------------------------------------------------


def test_upload_retrieve_content_delete_roundtrip(emulator: EmulatorHandle, tmp_path: Path) -> None:
    cjk = tmp_path / "季度报告 2024 — 草稿.txt"
    cjk.write_text("第一季度\n", encoding="utf-8")
    batch = write_batch(tmp_path / "requests.jsonl", 3)
    with make_client(emulator.url, emulator.api_key) as client:
        doc = client.upload(cjk, "file-extract")
        assert isinstance(doc, RemoteFile)
        assert doc.filename == cjk.name
        assert doc.bytes == cjk.stat().st_size
        assert doc.purpose == "file-extract" and doc.id.startswith("file-fe-")
        renamed = client.upload(cjk, "file-extract", filename="другое имя.txt")
        assert renamed.filename == "другое имя.txt"
        job = client.upload(batch, "batch")
        assert job.id.startswith("file-batch-") and job.purpose == "batch"

        assert client.retrieve(doc.id) == doc
        assert client.content(doc.id) == cjk.read_bytes()
        assert client.content(job.id) == batch.read_bytes()
        remote = {f["id"]: f["filename"] for f in emulator.files()}
        assert remote == {doc.id: cjk.name, renamed.id: "другое имя.txt", job.id: batch.name}

        client.delete(doc.id)
        assert doc.id not in {f["id"] for f in emulator.files()}
        with pytest.raises(NotFoundError) as info:
            client.retrieve(doc.id)
        assert info.value.status == 404
        with pytest.raises(NotFoundError):
            client.delete(doc.id)


def test_list_follows_the_cursor_newest_first(emulator: EmulatorHandle, tmp_path: Path) -> None:
    paths = write_text_files(tmp_path, 20)
    with make_client(emulator.url, emulator.api_key) as client:
        uploaded = [client.upload(p, "file-extract") for p in paths]
        emulator.reset_stats()
        listed = list(client.iter_files(page_size=7))
        # ceil(20 / 7) = 3 pages; a 4th, empty request only if has_more lied.
        assert emulator.stats()["requests"]["read"] == 3
        assert [f.id for f in listed] == [f.id for f in reversed(uploaded)]
        assert client.list_files() == listed
        assert client.list_files(purpose="batch") == []
        with pytest.raises(ValueError):
            list(client.iter_files(page_size=2001))


def test_error_classes_from_the_emulator(emulator_factory: Any, tmp_path: Path) -> None:
    emulator = emulator_factory(max_files=2)
    ok = write_text_files(tmp_path, 3)
    exe = tmp_path / "tool.exe"
    exe.write_bytes(b"MZ\x00\x01")
    with make_client(emulator.url, "sk-wrong-key") as bad:
        with pytest.raises(AuthenticationError) as auth:
            bad.list_files()
        assert auth.value.status == 401 and auth.value.code == "invalid_api_key"
    with make_client(emulator.url, emulator.api_key) as client:
        with pytest.raises(InvalidRequestError) as fmt:
            client.upload(exe, "file-extract")
        assert fmt.value.code == "BadRequest.UnsupportedFileFormat" and fmt.value.status == 400
        assert not isinstance(fmt.value, QuotaExceededError)
        with pytest.raises(InvalidRequestError) as purpose:
            client.upload(ok[0], "fine-tune")
        assert purpose.value.status == 400
        client.upload(ok[0], "file-extract")
        client.upload(ok[1], "file-extract")
        with pytest.raises(QuotaExceededError) as quota:
            client.upload(ok[2], "file-extract")
        assert "exceed limit" in quota.value.message
        with pytest.raises(NotFoundError):
            client.retrieve("file-fe-000000000000000000000000")
    # Nothing was retried: 4xx are final.
    stats = emulator.stats()
    assert stats["requests"]["upload"] == 5 and stats["mutations"]["upload"] == 2


def test_429_with_no_retry_budget_raises_rate_limited(
    emulator_factory: Any, tmp_path: Path
) -> None:
    emulator = emulator_factory(upload_rate=1)
    a, b = write_text_files(tmp_path, 2)
    policy = RetryPolicy(max_attempts=1)
    with make_client(emulator.url, emulator.api_key, retry=policy) as client:
        client.upload(a, "file-extract")
        with pytest.raises(RateLimitedError) as info:
            client.upload(b, "file-extract")
    assert info.value.status == 429 and info.value.code == "limit_requests"
    assert emulator.stats()["throttled"]["upload"] == 1


def test_retry_after_is_obeyed(emulator_factory: Any, tmp_path: Path) -> None:
    emulator = emulator_factory(upload_rate=1, retry_after=True)
    a, b = write_text_files(tmp_path, 2)
    with make_client(emulator.url, emulator.api_key) as client, capture_logs() as logs:
        client.upload(a, "file-extract")
        start = time.monotonic()
        second = client.upload(b, "file-extract")
        elapsed = time.monotonic() - start
    stats = emulator.stats()
    # Exactly one refusal, then the retry got through: it waited for the window to free.
    assert stats["throttled"]["upload"] == 1
    assert stats["requests"]["upload"] == 3 and stats["mutations"]["upload"] == 2
    retries = [e for e in logs if e["event"] == "api.retry"]
    assert [r["wait"] for r in retries] == [1.0]  # the emulator's Retry-After: 1
    assert elapsed >= 1.0
    assert second.filename == b.name


def test_5xx_on_upload_is_ambiguous_and_resent_from_the_start(
    emulator_factory: Any, tmp_path: Path
) -> None:
    # A 5xx may follow a stored file, so the client never re-sends an upload by itself;
    # upload_once looks first and only then sends the file again, from its first byte.
    emulator = emulator_factory(fault_5xx=0.5)
    big = tmp_path / "big.txt"
    big.write_bytes(b"0123456789abcdef" * 40_000)  # 640 KB: several multipart chunks
    with make_client(emulator.url, emulator.api_key, retry=FAST_RETRY) as client:
        with pytest.raises(AmbiguousUploadError):
            for _ in range(20):
                client.upload(big, "file-extract", filename="probe.txt")
        for f in client.list_files():
            client.delete(f.id)
        results = [
            upload_once(client, big, "file-extract", filename=f"big-{i}.txt", max_tries=12)
            for i in range(6)
        ]
        for remote in results:
            assert client.content(remote.id) == big.read_bytes()
    stats = emulator.stats()
    assert stats["faults"]["5xx"] > 0
    emulator.configure(fault_5xx=0.0)
    assert sorted(f["filename"] for f in emulator.files()) == [f"big-{i}.txt" for i in range(6)]


def test_server_error_after_budget(emulator_factory: Any, tmp_path: Path) -> None:
    emulator = emulator_factory(fault_5xx=1.0)
    policy = RetryPolicy(max_attempts=3, initial_backoff=0.01, max_backoff=0.02)
    with (
        make_client(emulator.url, emulator.api_key, retry=policy) as client,
        pytest.raises(ServerError) as info,
    ):
        client.list_files()
    assert info.value.status in (500, 503)
    assert emulator.stats()["requests"]["read"] == 3


def test_lost_upload_response_is_ambiguous_and_resolved(
    emulator_factory: Any, tmp_path: Path
) -> None:
    emulator = emulator_factory(drop_after_store=1.0)
    (path,) = write_text_files(tmp_path, 1)
    with make_client(emulator.url, emulator.api_key, retry=FAST_RETRY) as client:
        with pytest.raises(AmbiguousUploadError) as info:
            client.upload(path, "file-extract")
        error = info.value
        assert (error.filename, error.size) == (path.name, path.stat().st_size)
        assert error.window.earliest <= time.time() + 30
        assert error.window.latest - error.window.earliest < 30
        # Not re-sent blindly.
        assert emulator.stats()["requests"]["upload"] == 1
        listed = list(client.find_uploaded(error.window))
        found = find_own_upload(error.filename, error.size, error.window, listed, ())
        assert found is not None and found.filename == path.name
        assert find_own_upload(error.filename, error.size + 1, error.window, listed, ()) is None
        assert find_own_upload(error.filename, error.size, error.window, listed, {found.id}) is None
        later = UploadWindow(time.time() + 60, time.time() + 90)
        assert list(client.find_uploaded(later)) == []

        adopted = upload_once(client, path, "file-extract")
        assert adopted.filename == path.name
    # upload_once's own attempt was stored (and its response dropped) and then adopted.
    assert len(emulator.files()) == 2
    assert emulator.stats()["requests"]["upload"] == 2


def test_upload_read_timeout_is_ambiguous(emulator_factory: Any, tmp_path: Path) -> None:
    emulator = emulator_factory(latency_ms=600)
    (path,) = write_text_files(tmp_path, 1)
    timeouts = Timeouts(read=0.2)
    with make_client(emulator.url, emulator.api_key, timeouts=timeouts) as client:
        with pytest.raises(AmbiguousUploadError) as info:
            client.upload(path, "file-extract")
        assert "ReadTimeout" in str(info.value)
        # Not re-sent by the client itself.
        assert emulator.stats()["requests"]["upload"] == 1
        emulator.configure(latency_ms=0)
        # The emulator drops an upload whose client went away, so nothing to adopt:
        # upload_once looks, finds nothing, and sends it again.
        assert upload_once(client, path, "file-extract").filename == path.name
    assert emulator.stats()["requests"]["upload"] == 2
    assert len(emulator.files()) == 1


def test_connect_failure_is_not_ambiguous(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (path,) = write_text_files(tmp_path, 1)
    policy = RetryPolicy(max_attempts=2, initial_backoff=0.01, max_backoff=0.01)
    url = f"http://127.0.0.1:{port}/compatible-mode/v1"
    with make_client(url, "sk-x", retry=policy) as client:
        with pytest.raises(NetworkError) as info:
            client.upload(path, "file-extract")
        assert info.value.phase == "connect"
        assert not isinstance(info.value, AmbiguousUploadError)
        with pytest.raises(NetworkError):
            client.retrieve("file-fe-1")


def test_delete_whose_response_was_lost_then_404s_is_success(
    emulator_factory: Any, tmp_path: Path
) -> None:
    emulator = emulator_factory()
    (path,) = write_text_files(tmp_path, 1)
    with make_client(emulator.url, emulator.api_key) as setup:
        remote = setup.upload(path, "file-extract")
    emulator.configure(latency_ms=400)
    policy = RetryPolicy(max_attempts=30, initial_backoff=0.05, max_backoff=0.1)
    timeouts = Timeouts(read=0.15)

    def heal() -> None:
        # Once the first (timed-out) delete has taken effect server-side, let replies through.
        wait_until(lambda: emulator.stats()["mutations"]["delete"] >= 1, 10, 0.02)
        emulator.configure(latency_ms=0)

    healer = threading.Thread(target=heal)
    healer.start()
    with (
        make_client(emulator.url, emulator.api_key, retry=policy, timeouts=timeouts) as client,
        capture_logs() as logs,
    ):
        client.delete(remote.id)
    healer.join()
    assert any(e["event"] == events.API_DELETE_ALREADY_GONE for e in logs)
    stats = emulator.stats()
    assert stats["requests"]["delete"] >= 2
    assert stats["mutations"]["delete"] == 1
    assert emulator.files() == []


# ---- the key never leaks ----------------------------------------------------------------

SECRET = "sk-test-1"


def _collect_errors(emulator: EmulatorHandle, tmp_path: Path) -> list[BaseException]:
    errors: list[BaseException] = []
    ok, other = write_text_files(tmp_path, 2)
    exe = tmp_path / "x.exe"
    exe.write_bytes(b"MZ")
    one_try = RetryPolicy(max_attempts=1)

    def expect(fn: Any, cls: type[BaseException]) -> None:
        with pytest.raises(cls) as info:
            fn()
        errors.append(info.value)

    with make_client(emulator.url, SECRET, retry=one_try) as client:
        expect(lambda: client.retrieve("file-fe-nope"), NotFoundError)
        expect(lambda: client.upload(exe, "file-extract"), InvalidRequestError)
        client.upload(ok, "file-extract")
        expect(lambda: client.upload(other, "file-extract"), QuotaExceededError)  # max_files=1
        emulator.configure(fault_5xx=1.0)
        expect(client.list_files, ServerError)
        emulator.configure(fault_5xx=0.0, rates={"read": 1})
        with pytest.raises(RateLimitedError) as throttled:
            for _ in range(3):
                client.list_files()
        errors.append(throttled.value)
        emulator.configure(rates={"read": 20}, drop_before=1.0)
        expect(lambda: client.upload(ok, "file-extract", filename="d.txt"), AmbiguousUploadError)
        expect(lambda: client.retrieve("file-fe-x"), NetworkError)
        emulator.configure(drop_before=0.0, latency_ms=500)
    with make_client(emulator.url, SECRET, retry=one_try, timeouts=Timeouts(read=0.1)) as slow:
        expect(lambda: slow.retrieve("file-fe-x"), NetworkError)
    emulator.configure(latency_ms=0)
    with make_client(emulator.url, SECRET + "-wrong", retry=one_try) as wrong:
        expect(wrong.list_files, AuthenticationError)
    with make_client("http://127.0.0.1:9/compatible-mode/v1", SECRET, retry=one_try) as down:
        expect(down.list_files, NetworkError)
    return errors


def test_key_never_appears_in_errors_logs_or_reprs(
    emulator_factory: Any,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    emulator = emulator_factory(max_files=1)
    caplog.set_level(logging.DEBUG)
    structlog.reset_defaults()  # every level: a test before may have left a filter on
    structlog.configure(
        processors=[structlog.processors.KeyValueRenderer()],
        logger_factory=structlog.PrintLoggerFactory(),
    )
    try:
        errors = _collect_errors(emulator, tmp_path)
    finally:
        structlog.reset_defaults()
    kinds = {type(e).__name__ for e in errors}
    assert {
        "NotFoundError",
        "InvalidRequestError",
        "QuotaExceededError",
        "RateLimitedError",
        "AmbiguousUploadError",
        "NetworkError",
        "AuthenticationError",
    } <= kinds
    for error in errors:
        texts = [str(error), repr(error), "".join(traceback.format_exception(error))]
        texts += [repr(v) for v in vars(error).values()]
        for text in texts:
            assert SECRET not in text, (type(error).__name__, text)
    out = capsys.readouterr()
    assert SECRET not in out.out + out.err
    assert "api.retry" in out.out or "api.pacer" in out.out  # the logs were captured
    assert SECRET not in caplog.text
    with make_client(emulator.url, SECRET) as client:
        assert SECRET not in repr(client) and SECRET not in str(client)
        assert SECRET not in repr(vars(client))


def test_requests_that_never_connected_leave_the_pace_to_the_rest(
    emulator: EmulatorHandle, tmp_path: Path
) -> None:
    """Attempts refused a connection reached no server: the processes on the key are
    not slowed by them (a grant stays held only while its request may still leave)."""
    from tests.helpers import free_port

    pacing = tmp_path / "pacing"
    nowhere = f"http://127.0.0.1:{free_port()}/compatible-mode/v1"
    dead = make_client(nowhere, emulator.api_key, pacing_dir=pacing,
                       retry=RetryPolicy(max_attempts=1))  # fmt: skip
    live = make_client(emulator.url, emulator.api_key, pacing_dir=pacing)
    try:
        for _ in range(40):  # two windows' worth of reads at 20/s
            with pytest.raises(NetworkError):
                dead.retrieve("file-nowhere")
        started = time.monotonic()
        for _ in range(20):
            live.list_files()
        # One window's burst: well under a second, not the 30 s the refused
        # attempts would otherwise hold their places for.
        assert time.monotonic() - started < 5.0
    finally:
        dead.close()
        live.close()
