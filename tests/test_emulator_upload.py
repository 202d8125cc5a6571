"""Upload validation, size caps, quotas, streaming memory bound and in-process embedding."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import openai
import pytest
from openai import OpenAI

from syncd.emulator import EmulatorSettings, start_in_thread
from tests.bench.bench_emulator_memory import MB, measure
from tests.emulator_fixture import EmulatorHandle

Factory = Callable[..., EmulatorHandle]


def client(emu: EmulatorHandle, key: str | None = None) -> httpx.Client:
    return httpx.Client(base_url=emu.url, timeout=60,
                        headers={"Authorization": f"Bearer {key or emu.api_key}"})


class Zeros:
    """A streamed file of n zero bytes that never exists in memory as a whole."""

    def __init__(self, n: int) -> None:
        self.left = n

    def read(self, size: int = -1) -> bytes:
        size = self.left if size < 0 else min(size, self.left)
        self.left -= size
        return b"\0" * size


def post(http: httpx.Client, name: str, body: bytes | Zeros,
         purpose: str = "file-extract") -> httpx.Response:
    return http.post("/files", data={"purpose": purpose}, files={"file": (name, body)})


def error(r: httpx.Response) -> dict[str, Any]:
    assert r.status_code == 400, r.text
    err: dict[str, Any] = r.json()["error"]
    assert err["type"] == "invalid_request_error"
    return err


def req(i: int | str, model: str = "qwen-plus", url: str = "/v1/chat/completions",
        **extra: Any) -> dict[str, Any]:
    line = {"custom_id": str(i), "method": "POST", "url": url,
            "body": {"model": model, "messages": [{"role": "user", "content": "hi"}]}}
    line.update(extra)
    return line


def jsonl(*lines: Any) -> bytes:
    return b"".join((x if isinstance(x, bytes) else json.dumps(x).encode()) + b"\n"
                    for x in lines)


def test_purpose_and_format_rules(emulator: EmulatorHandle) -> None:
    with client(emulator) as http:
        assert error(post(http, "a.txt", b"x", purpose="assistants"))["param"] == "purpose"
        missing = http.post("/files", files={"file": ("a.txt", b"x")})
        assert error(missing)["param"] == "purpose"
        no_file = http.post("/files", files={"purpose": (None, "batch")})
        assert error(no_file)["param"] == "file"
        for name in ("a.exe", "noext", "a.jsonl"):
            assert error(post(http, name, b"x"))["code"] == "BadRequest.UnsupportedFileFormat"
        assert error(post(http, "a.txt", b"x", "batch"))["code"] == \
            "BadRequest.UnsupportedFileFormat"
        for name in ("A.PDF", "b.Docx", "c.jpeg", "d.GIF", "e.json", "f.mobi"):
            assert post(http, name, b"x").status_code == 200, name
        empty = error(post(http, "empty.txt", b""))
        assert empty["param"] == "file"
        assert error(post(http, "empty.jsonl", b"", "batch"))["param"] == "file"


def test_size_caps(emulator: EmulatorHandle) -> None:
    with client(emulator) as http:
        ok = post(http, "img.png", b"\0" * (20 * MB))
        assert ok.status_code == 200
        big = error(post(http, "img.png", b"\0" * (20 * MB + 1)))
        assert (big["code"], big["message"]) == ("BadRequest.TooLarge", "Payload Too Large.")
        assert error(post(http, "doc.pdf", Zeros(151 * MB)))["code"] == "BadRequest.TooLarge"
        # The connection stays usable after an early rejection.
        assert http.get("/files").status_code == 200
    assert emulator.stats()["mutations"]["upload"] == 1
    assert not list((emulator.data_dir / "tmp").iterdir())


def test_batch_file_rules(emulator: EmulatorHandle) -> None:
    cases: list[tuple[bytes, str, int]] = [
        (jsonl(req(1), b"{not json"), "invalid_json_line", 2),
        (jsonl(req(1), b"[1, 2]"), "invalid_json_line", 2),
        (jsonl(req("a"), req("b"), req("a")), "duplicate_custom_id", 3),
        (jsonl(req(1), req(2, method="GET")), "invalid_json_line", 2),
        (jsonl(req(1, url="/v1/other")), "invalid_json_line", 1),
        (jsonl(req(1), req(2, url="/v1/embeddings")), "url_mismatch", 2),
        (jsonl(req(1), req(2, model="qwen-max")), "mismatched_model", 2),
        (jsonl(req(1), {"custom_id": "2", "method": "POST", "url": "/v1/chat/completions"}),
         "invalid_json_line", 2),
        (jsonl(req(1), b"\xff\xfe"), "invalid_json_line", 2),
    ]
    with client(emulator) as http:
        for body, code, line in cases:
            err = error(post(http, "in.jsonl", body, "batch"))
            assert err["code"] == code, (body, err)
            assert f"line {line}" in err["message"], err
        good = jsonl(req(1), b"", req(2, url="/v1/chat/completions"))
        r = post(http, "in.jsonl", good, "batch")
        assert r.status_code == 200 and r.json()["id"].startswith("file-batch-")
        assert r.json()["purpose"] == "batch"


def test_batch_line_count_and_line_size_caps(emulator: EmulatorHandle) -> None:
    line = json.dumps(req("{}")).encode()
    many = b"".join(line.replace(b'"{}"', f'"{i}"'.encode()) + b"\n" for i in range(50_001))
    long_line = json.dumps(req(1, pad="x" * (6 * MB))).encode()
    with client(emulator) as http:
        err = error(post(http, "many.jsonl", many, "batch"))
        assert err["code"] == "too_many_lines" and "line 50001" in err["message"]
        assert post(http, "max.jsonl", many[: -len(many.splitlines(True)[-1])], "batch") \
            .status_code == 200
        err = error(post(http, "long.jsonl", jsonl(req(0), long_line), "batch"))
        assert err["code"] == "line_too_large" and "line 2" in err["message"]


def test_quotas(emulator_factory: Factory) -> None:
    emu = emulator_factory(max_files=2, max_bytes="1KB")
    with client(emu) as http:
        assert post(http, "a.txt", b"x" * 600).status_code == 200
        capacity = error(post(http, "b.txt", b"x" * 600))
        assert capacity["message"] == "Upload file capacity exceed limit."
        assert capacity["code"] == "Throttling.AllocationQuota"
        assert post(http, "b.txt", b"x").status_code == 200
        number = error(post(http, "c.txt", b"x"))
        assert number["message"] == "Upload file number exceed limit."
        # Quotas are per account.
        with client(emu, emu.api_keys[1]) as other:
            assert post(other, "c.txt", b"x").status_code == 200
        # Deleting frees room; lowering the limit live takes effect at once.
        http.delete(f"/files/{emu.files()[0]['id']}")
        assert post(http, "d.txt", b"x").status_code == 200
        emu.configure(max_files=1)
        assert error(post(http, "e.txt", b"x"))["message"] == "Upload file number exceed limit."


def test_streamed_300mb_upload_keeps_rss_under_100mb(emulator_factory: Factory) -> None:
    emu = emulator_factory(rate_limit="off")
    result = measure(emu, 300 * MB)
    assert result.status == 200 and result.stored_bytes == 300 * MB
    assert result.peak_rss < 100 * MB, f"peak RSS {result.peak_rss / MB:.1f} MB"
    assert emu.files()[0]["bytes"] == 300 * MB


def test_start_in_thread(tmp_path: Any) -> None:
    settings = EmulatorSettings(data_dir=tmp_path / "data", api_keys=["sk-embedded"], port=0)
    running = start_in_thread(settings)
    try:
        assert running.url == f"http://127.0.0.1:{running.port}/compatible-mode/v1"
        sdk = OpenAI(api_key="sk-embedded", base_url=running.url, max_retries=0)
        created = sdk.files.create(file=("x.txt", b"hello"), purpose="file-extract")
        assert [f.id for f in sdk.files.list()] == [created.id]
        with pytest.raises(openai.AuthenticationError):
            OpenAI(api_key="sk-emulator", base_url=running.url, max_retries=0).files.list()
        with pytest.raises(OSError):
            start_in_thread(EmulatorSettings(data_dir=tmp_path / "other", port=running.port))
    finally:
        running.stop()
    with pytest.raises(httpx.ConnectError):
        httpx.get(running.root_url + "/_emulator/health")
    again = start_in_thread(settings)
    try:
        sdk = OpenAI(api_key="sk-embedded", base_url=again.url, max_retries=0)
        assert sdk.files.retrieve(created.id).bytes == 5
    finally:
        again.stop()


def test_client_disconnect_mid_upload_leaves_nothing(emulator: EmulatorHandle) -> None:
    import socket
    import time

    head = (b"--B\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nfile-extract\r\n"
            b"--B\r\nContent-Disposition: form-data; name=\"file\"; filename=\"cut.txt\"\r\n\r\n")
    request = (f"POST /compatible-mode/v1/files HTTP/1.1\r\nHost: x\r\n"
               f"Authorization: Bearer {emulator.api_key}\r\n"
               f"Content-Type: multipart/form-data; boundary=B\r\n"
               f"Content-Length: {10 * MB}\r\n\r\n").encode() + head
    with socket.create_connection(("127.0.0.1", emulator.port)) as sock:
        sock.sendall(request + b"x" * (3 * MB))
    tmp = emulator.data_dir / "tmp"
    deadline = time.monotonic() + 10
    while emulator.stats()["requests"]["upload"] == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    while any(tmp.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not any(tmp.iterdir())
    assert emulator.files() == []
    assert emulator.stats()["requests"]["upload"] == 1
