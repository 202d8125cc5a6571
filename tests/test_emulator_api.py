"""The emulator's Files API over real HTTP, driven by the official openai SDK and raw httpx."""

from __future__ import annotations

import io
import re
from pathlib import Path

import httpx
import openai
import pytest
from openai import OpenAI

from tests.emulator_fixture import EmulatorHandle

ID_RE = re.compile(r"^file-(fe|batch)-[0-9a-f]{24}$")


def sdk(emu: EmulatorHandle, key: str | None = None) -> OpenAI:
    return OpenAI(api_key=key or emu.api_key, base_url=emu.url, max_retries=0)


def raw(emu: EmulatorHandle, key: str | None = None) -> httpx.Client:
    return httpx.Client(base_url=emu.url, timeout=30,
                        headers={"Authorization": f"Bearer {key or emu.api_key}"})


def test_sdk_create_retrieve_list_content_delete(emulator: EmulatorHandle,
                                                 tmp_path: Path) -> None:
    client = sdk(emulator)
    src = tmp_path / "notes.md"
    src.write_bytes(b"# hello\n")
    created = client.files.create(file=src, purpose="file-extract")
    assert ID_RE.match(created.id) and created.id.startswith("file-fe-")
    assert (created.filename, created.bytes, created.purpose, created.status) == (
        "notes.md", 8, "file-extract", "processed")

    cjk = client.files.create(file=("报告 2024.txt", "中文内容".encode()), purpose="file-extract")
    assert cjk.filename == "报告 2024.txt"

    assert client.files.retrieve(created.id).model_dump() == created.model_dump()
    assert client.files.content(cjk.id).read() == "中文内容".encode()
    listed = [f.id for f in client.files.list()]
    assert listed == [cjk.id, created.id]

    deleted = client.files.delete(created.id)
    assert (deleted.id, deleted.deleted) == (created.id, True)
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(created.id)
    with pytest.raises(openai.NotFoundError):
        client.files.delete(created.id)
    assert [f["id"] for f in emulator.files()] == [cjk.id]


def test_file_object_shape(emulator: EmulatorHandle) -> None:
    with raw(emulator) as http:
        r = http.post("/files", data={"purpose": "file-extract"},
                      files={"file": ("a.txt", b"abc")})
        assert r.status_code == 200
        body = r.json()
        assert set(body) == {"id", "object", "bytes", "created_at", "filename", "purpose",
                             "status", "status_details"}
        assert body["object"] == "file" and body["status_details"] is None
        assert r.headers["x-request-id"]
        gone = http.delete(f"/files/{body['id']}")
        assert gone.json() == {"object": "file", "deleted": True, "id": body["id"]}


def test_sdk_auto_pagination_across_pages(emulator: EmulatorHandle) -> None:
    client = sdk(emulator)
    ids = [client.files.create(file=(f"f{i}.txt", b"x"), purpose="file-extract").id
           for i in range(7)]
    seen = [f.id for f in client.files.list(limit=3)]
    # Same-second uploads are common: insertion order breaks created_at ties, newest first.
    assert seen == ids[::-1]


def test_sdk_error_classes(emulator_factory) -> None:  # type: ignore[no-untyped-def]
    emu = emulator_factory(upload_rate=2)
    with pytest.raises(openai.AuthenticationError) as auth:
        sdk(emu, key="sk-wrong").files.list()
    body = auth.value.body
    assert isinstance(body, dict)
    assert body["code"] == "invalid_api_key" and body["message"] == "Incorrect API key provided."

    client = sdk(emu)
    with pytest.raises(openai.BadRequestError):
        client.files.create(file=("a.exe", b"x"), purpose="file-extract")
    client.files.create(file=("a.txt", b"x"), purpose="file-extract")
    with pytest.raises(openai.RateLimitError) as limited:
        client.files.create(file=("b.txt", b"x"), purpose="file-extract")
    assert limited.value.code == "limit_requests"

    emu.configure(fault_5xx=1.0)
    with pytest.raises(openai.InternalServerError):
        client.files.list()
    assert emu.stats()["faults"]["5xx"] == 1


def test_raw_multipart_purpose_after_file_and_utf8_filename(emulator: EmulatorHandle) -> None:
    name = "数据-é.csv"
    body = (
        b"--BOUND\r\n"
        b'Content-Disposition: form-data; name="file"; filename="' + name.encode() + b'"\r\n'
        b"Content-Type: text/csv\r\n\r\n"
        b"a,b\n1,2\n"
        b"\r\n--BOUND\r\n"
        b'Content-Disposition: form-data; name="purpose"\r\n\r\n'
        b"file-extract"
        b"\r\n--BOUND--\r\n"
    )
    with raw(emulator) as http:
        r = http.post("/files", content=body,
                      headers={"Content-Type": "multipart/form-data; boundary=BOUND"})
        assert r.status_code == 200, r.text
        assert r.json()["filename"] == name
        assert r.json()["bytes"] == 8


def test_rfc5987_filename_star(emulator: EmulatorHandle) -> None:
    body = (
        b"--B\r\n"
        b'Content-Disposition: form-data; name="purpose"\r\n\r\nfile-extract\r\n--B\r\n'
        b"Content-Disposition: form-data; name=\"file\"; filename=\"fallback.txt\"; "
        b"filename*=UTF-8''%E6%96%87%E4%BB%B6.txt\r\n\r\nhello\r\n--B--\r\n"
    )
    with raw(emulator) as http:
        r = http.post("/files", content=body,
                      headers={"Content-Type": "multipart/form-data; boundary=B"})
        assert r.json()["filename"] == "文件.txt"


def test_list_limits_cursor_and_filters(emulator: EmulatorHandle) -> None:
    with raw(emulator) as http:
        for bad in ("0", "2001", "abc"):
            r = http.get("/files", params={"limit": bad})
            assert r.status_code == 400 and r.json()["error"]["param"] == "limit"
        ids = [http.post("/files", data={"purpose": "file-extract"},
                         files={"file": (f"{i}.txt", b"x")}).json()["id"] for i in range(3)]
        page = http.get("/files", params={"limit": 2}).json()
        assert [f["id"] for f in page["data"]] == ids[:0:-1] and page["has_more"] is True
        rest = http.get("/files", params={"limit": 2, "after": page["data"][-1]["id"]}).json()
        assert [f["id"] for f in rest["data"]] == [ids[0]] and rest["has_more"] is False
        empty = http.get("/files", params={"after": ids[0]}).json()
        assert empty == {"object": "list", "data": [], "has_more": False}
        unknown = http.get("/files", params={"after": "file-fe-" + "0" * 24})
        assert unknown.status_code == 400 and unknown.json()["error"]["param"] == "after"
        # A cursor naming a file deleted between two pages still works.
        http.delete(f"/files/{ids[1]}")
        assert [f["id"] for f in http.get("/files", params={"after": ids[1]}).json()["data"]] \
            == [ids[0]]

        created = http.get(f"/files/{ids[0]}").json()["created_at"]
        assert len(http.get("/files", params={"create_after": created}).json()["data"]) == 2
        assert http.get("/files", params={"create_after": created + 10}).json()["data"] == []
        assert http.get("/files", params={"create_before": created - 10}).json()["data"] == []
        assert http.get("/files", params={"purpose": "batch"}).json()["data"] == []


def test_per_key_isolation(emulator: EmulatorHandle) -> None:
    one, two = sdk(emulator, emulator.api_keys[0]), sdk(emulator, emulator.api_keys[1])
    f = one.files.create(file=("a.txt", b"abc"), purpose="file-extract")
    assert [x.id for x in two.files.list()] == []
    with pytest.raises(openai.NotFoundError):
        two.files.retrieve(f.id)
    with pytest.raises(openai.NotFoundError):
        two.files.delete(f.id)
    accounts = emulator.stats()["accounts"]
    assert sorted(v["files"] for v in accounts.values()) == [0, 1]
    assert all(emulator.api_key not in k for k in accounts)


def test_persistence_across_restart(emulator: EmulatorHandle) -> None:
    client = sdk(emulator)
    # A nameless stream goes as "upload", which has no accepted extension.
    with pytest.raises(openai.BadRequestError) as nameless:
        client.files.create(file=io.BytesIO(b"persist me"), purpose="file-extract")
    assert nameless.value.code == "BadRequest.UnsupportedFileFormat"
    f = client.files.create(file=("keep.txt", io.BytesIO(b"persist me")), purpose="file-extract")
    port = emulator.port
    emulator.restart()
    assert emulator.port == port
    client = sdk(emulator)
    assert client.files.retrieve(f.id).bytes == 10
    assert client.files.content(f.id).read() == b"persist me"
