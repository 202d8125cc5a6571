"""The emulator's OpenAI flavour over real HTTP: purposes, ids, caps, list paging and order,
error envelope, and expiry."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai import OpenAI

from tests.emulator_fixture import EmulatorHandle
from tests.helpers import wait_for

Factory = Callable[..., EmulatorHandle]
MB = 1024 * 1024
ID_RE = re.compile(r"^file-[A-Za-z0-9]{24}$")
THIRTY_DAYS = 30 * 24 * 3600


@pytest.fixture
def emu(emulator_factory: Factory) -> EmulatorHandle:
    return emulator_factory(flavor="openai", rate_limit="off")


def client(emu: EmulatorHandle) -> httpx.Client:
    return httpx.Client(base_url=emu.url, timeout=60,
                        headers={"Authorization": f"Bearer {emu.api_key}"})


def batch_line(i: int, url: str = "/v1/responses") -> bytes:
    return json.dumps({"custom_id": f"r{i}", "method": "POST", "url": url,
                       "body": {"model": "gpt-4o-mini", "input": "hi"}}).encode() + b"\n"


class Zeros:
    def __init__(self, n: int) -> None:
        self.left = n

    def read(self, size: int = -1) -> bytes:
        size = self.left if size < 0 else min(size, self.left)
        self.left -= size
        return b"\0" * size


def post(http: httpx.Client, name: str, body: bytes | Zeros, purpose: str,
         **fields: str) -> httpx.Response:
    return http.post("/files", data={"purpose": purpose, **fields}, files={"file": (name, body)})


def error(r: httpx.Response, status: int = 400) -> dict[str, Any]:
    assert r.status_code == status, r.text
    body = r.json()
    # OpenAI's envelope: the error object only, no request_id in the body.
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    assert r.headers["x-request-id"]
    err: dict[str, Any] = body["error"]
    return err


def test_every_purpose_id_shape_and_expiry_default(emu: EmulatorHandle) -> None:
    assert emu.url.endswith("/v1") and "/compatible-mode/" not in emu.url
    uploads = {
        "assistants": ("tool.py", b"print(1)\n"),
        "batch": ("requests.jsonl", batch_line(1) + batch_line(2)),
        "fine-tune": ("train.JSONL", b'{"messages": []}\n'),
        "vision": ("cat.png", b"\x89PNG"),
        "user_data": ("notes", b"no extension"),
        "evals": ("eval.jsonl", b'{"item": 1}\n'),
    }
    with client(emu) as http:
        for purpose, (name, body) in uploads.items():
            r = post(http, name, body, purpose)
            assert r.status_code == 200, (purpose, r.text)
            obj = r.json()
            assert ID_RE.match(obj["id"]), obj["id"]
            assert (obj["purpose"], obj["filename"], obj["bytes"]) == (purpose, name, len(body))
            expected = obj["created_at"] + THIRTY_DAYS if purpose == "batch" else None
            assert obj["expires_at"] == expected
            assert http.get(f"/files/{obj['id']}").json() == obj
        assert {f["purpose"] for f in emu.files()} == set(uploads)


def test_openai_rules_and_error_envelope(emu: EmulatorHandle) -> None:
    with client(emu) as http:
        err = error(post(http, "a.txt", b"x", "file-extract"))
        assert err["param"] == "purpose" and "'assistants'" in err["message"]
        for purpose in ("batch", "fine-tune", "evals"):
            err = error(post(http, "data.csv", b"a,b\n", purpose))
            assert err["code"] == "BadRequest.UnsupportedFileFormat", purpose
        assert error(post(http, "e.txt", b"", "assistants"))["code"] == "BadRequest.EmptyFile"
        # OpenAI's batch endpoints; DashScope's test url is not one of them.
        err = error(post(http, "b.jsonl", batch_line(1, "/v1/chat/ds-test"), "batch"))
        assert err["code"] == "invalid_json_line" and "line 1" in err["message"]
        assert post(http, "c.jsonl", batch_line(1, "/v1/completions"), "batch").status_code == 200
        err = error(http.get("/files/file-" + "A" * 24), 404)
        assert err["code"] == "not_found"
        err = error(httpx.get(f"{emu.url}/files"), 401)
        assert err["code"] == "invalid_api_key"


def test_size_caps(emu: EmulatorHandle) -> None:
    with client(emu) as http:
        # Batch files: 200 MB; every other purpose: 512 MB (MB = MiB).
        assert post(http, "big.jsonl", Zeros(200 * MB + 1), "batch").status_code == 400
        err = error(post(http, "big.bin", Zeros(512 * MB + 1), "user_data"))
        assert err["code"] == "BadRequest.TooLarge"
        # The file part first: the cap for an unknown purpose is 512 MB, then the batch cap.
        r = http.post("/files", files=[("file", ("late.jsonl", Zeros(200 * MB + 1))),
                                       ("purpose", (None, b"batch"))])
        assert error(r)["code"] == "BadRequest.TooLarge"
    assert emu.truth_files() == []


def test_list_limit_order_and_cursor(emu: EmulatorHandle) -> None:
    with client(emu) as http:
        ids = [post(http, f"f{i}.txt", b"x", "assistants").json()["id"] for i in range(7)]
        desc = http.get("/files").json()
        assert [f["id"] for f in desc["data"]] == ids[::-1] and desc["has_more"] is False
        assert (desc["first_id"], desc["last_id"]) == (ids[-1], ids[0])
        asc = http.get("/files", params={"order": "asc", "limit": 3}).json()
        assert [f["id"] for f in asc["data"]] == ids[:3] and asc["has_more"] is True
        assert asc["last_id"] == ids[2]
        rest = http.get("/files", params={"order": "asc", "after": asc["last_id"]}).json()
        assert [f["id"] for f in rest["data"]] == ids[3:]
        assert http.get("/files", params={"limit": 10_000}).status_code == 200
        assert error(http.get("/files", params={"limit": 10_001}))["param"] == "limit"
        assert error(http.get("/files", params={"order": "up"}))["param"] == "order"
    # The SDK pages with `after` and `order`.
    sdk = OpenAI(api_key=emu.api_key, base_url=emu.url, max_retries=0)
    assert [f.id for f in sdk.files.list(limit=2, order="asc")] == ids


def test_expires_after_and_expiry(emu: EmulatorHandle, tmp_path: Path) -> None:
    sdk = OpenAI(api_key=emu.api_key, base_url=emu.url, max_retries=0)
    path = tmp_path / "soon.jsonl"
    path.write_bytes(batch_line(1))
    # Seconds below OpenAI's minimum of 3600 are accepted so a file can expire in a test.
    soon = sdk.files.create(file=path, purpose="batch",
                            expires_after={"anchor": "created_at", "seconds": 1})
    assert soon.expires_at == soon.created_at + 1
    (tmp_path / "keep.txt").write_bytes(b"keep")
    keep = sdk.files.create(file=tmp_path / "keep.txt", purpose="assistants")
    assert keep.expires_at is None
    # An expired file is gone from retrieve, content, delete and the listing.
    wait_for(lambda: soon.id not in {f.id for f in sdk.files.list()}, timeout=10,
             what="the file to expire")
    with pytest.raises(openai.NotFoundError):
        sdk.files.retrieve(soon.id)
    with pytest.raises(openai.NotFoundError):
        sdk.files.delete(soon.id)
    assert [f["id"] for f in emu.truth_files()] == [keep.id]

    with client(emu) as http:
        err = error(post(http, "x.jsonl", batch_line(1), "batch",
                         **{"expires_after[anchor]": "last_active_at",
                            "expires_after[seconds]": "3600"}))
        assert err["param"] == "expires_after[anchor]"
        err = error(post(http, "x.jsonl", batch_line(1), "batch",
                         **{"expires_after[anchor]": "created_at",
                            "expires_after[seconds]": str(THIRTY_DAYS + 1)}))
        assert err["param"] == "expires_after[seconds]"
        # Any purpose may be given an expiry.
        r = post(http, "y.txt", b"y", "user_data",
                 **{"expires_after[anchor]": "created_at", "expires_after[seconds]": "3600"})
        assert r.json()["expires_at"] == r.json()["created_at"] + 3600

    # The control API expires a file at once, whatever its expiry.
    assert emu.expire(keep.id, "file-unknown") == 1
    with pytest.raises(openai.NotFoundError):
        sdk.files.retrieve(keep.id)


def test_expiry_follows_the_clock_offset(emu: EmulatorHandle) -> None:
    with client(emu) as http:
        batch = post(http, "b.jsonl", batch_line(1), "batch").json()
        other = post(http, "a.txt", b"a", "assistants").json()
        emu.configure(clock_offset_s=THIRTY_DAYS + 5)
        assert http.get(f"/files/{batch['id']}").status_code == 404
        assert [f["id"] for f in http.get("/files").json()["data"]] == [other["id"]]
        emu.configure(clock_offset_s=0)
        assert http.get(f"/files/{batch['id']}").status_code == 200


def test_dashscope_ignores_expiry_fields(emulator: EmulatorHandle) -> None:
    with client(emulator) as http:
        r = post(http, "b.jsonl", json.dumps(
            {"custom_id": "1", "method": "POST", "url": "/v1/chat/completions",
             "body": {"model": "qwen-plus"}}).encode(), "batch",
            **{"expires_after[anchor]": "created_at", "expires_after[seconds]": "1"})
        assert r.status_code == 200 and "expires_at" not in r.json()
        assert set(r.json()) == {"id", "object", "bytes", "created_at", "filename", "purpose",
                                 "status", "status_details"}
        assert http.get(f"/files/{r.json()['id']}").status_code == 200
        body = http.get("/files", params={"order": "asc"}).json()
        assert set(body) == {"object", "data", "has_more"}
        err = http.get("/files/nope").json()
        assert set(err) == {"error", "request_id"}
