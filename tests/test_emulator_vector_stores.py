"""The emulator's vector stores (openai flavour) over real HTTP: stores, attachments one by
one and in batches, processing to completed or failed, one attachment per file, paging
and filters, detach, cancel, counts and usage, and the write class's rate limit."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.emulator_fixture import EmulatorHandle
from tests.helpers import wait_for

Factory = Callable[..., EmulatorHandle]


@pytest.fixture
def emu(emulator_factory: Factory) -> EmulatorHandle:
    return emulator_factory(flavor="openai", rate_limit="off", vs_step_s=0.5)


def client(emu: EmulatorHandle) -> httpx.Client:
    return httpx.Client(base_url=emu.url, timeout=60,
                        headers={"Authorization": f"Bearer {emu.api_key}"})


def upload(http: httpx.Client, name: str, body: bytes) -> str:
    r = http.post("/files", data={"purpose": "assistants"}, files={"file": (name, body)})
    assert r.status_code == 200, r.text
    return str(r.json()["id"])


def unthrottled(send: Callable[[], httpx.Response]) -> httpx.Response:
    """The answer once the emulator's rate limit lets the request through."""
    return wait_for(lambda: (r := send()).status_code != 429 and r, timeout=20,
                    what="a request within the rate limit", interval=0.1)


def every(http: httpx.Client, url: str, **params: Any) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    after: str | None = None
    while True:
        page = http.get(url, params={**params, **({"after": after} if after else {})}).json()
        out += page["data"]
        if not page["has_more"]:
            return out
        after = page["last_id"]


def test_batch_attach_processes_pages_and_detaches(emu: EmulatorHandle) -> None:
    http = client(emu)
    store = http.post("/vector_stores", json={"name": "docs", "metadata": {"k": "v"}}).json()
    assert store["object"] == "vector_store" and store["id"].startswith("vs_")
    ids = [upload(http, f"n{i}.md", f"note {i}".encode()) for i in range(25)]
    bad_type = upload(http, "sheet.xlsx", b"PK\x03\x04 not a sheet")
    binary = upload(http, "blob.txt", b"text\0with a nul")
    base = f"/vector_stores/{store['id']}"
    r = http.post(f"{base}/file_batches", json={
        "files": [{"file_id": f, "attributes": {"folder": "n", "i": i}}
                  for i, f in enumerate([*ids, bad_type, binary])]})
    assert r.status_code == 200, r.text
    batch = r.json()
    assert batch["status"] == "in_progress" and batch["file_counts"]["total"] == 27
    # The same id twice keeps one attachment, and returns it.
    again = http.post(f"{base}/files", json={"file_id": ids[0]}).json()
    assert again["id"] == ids[0] and again["attributes"] == {"folder": "n", "i": 0}

    def done() -> dict[str, Any] | None:
        b = http.get(f"{base}/file_batches/{batch['id']}").json()
        return b if b["status"] == "completed" else None
    finished = wait_for(done, timeout=20, what="batch completed", interval=0.1)
    assert finished["file_counts"] == {"in_progress": 0, "completed": 25, "failed": 2,
                                       "cancelled": 0, "total": 27}
    listed = every(http, f"{base}/files", limit=10)
    assert sorted(f["id"] for f in listed) == sorted([*ids, bad_type, binary])
    failed = {f["id"]: f["last_error"] for f in every(http, f"{base}/files", filter="failed")}
    assert failed[bad_type]["code"] == "unsupported_file" and ".xlsx" in failed[bad_type]["message"]
    assert failed[binary]["code"] == "invalid_file"
    in_batch = every(http, f"{base}/file_batches/{batch['id']}/files", limit=100)
    assert len(in_batch) == 27
    got = http.get(base).json()
    assert got["file_counts"]["completed"] == 25 and got["usage_bytes"] > 0
    # Detaching leaves the file; a second detach is not found.
    assert http.delete(f"{base}/files/{ids[1]}").json()["deleted"] is True
    assert http.delete(f"{base}/files/{ids[1]}").status_code == 404
    assert http.get(f"/files/{ids[1]}").status_code == 200
    assert len(every(http, f"{base}/files", limit=100)) == 26
    stores = every(http, "/vector_stores")
    assert [s["id"] for s in stores] == [store["id"]]


def test_refusals_cancel_and_the_write_limit(emulator_factory: Factory) -> None:
    emu = emulator_factory(flavor="openai", vs_step_s=30, upload_rate=5)
    http = client(emu)
    store = http.post("/vector_stores", json={"name": "s"}).json()
    base = f"/vector_stores/{store['id']}"
    assert unthrottled(lambda: http.post(f"{base}/files", json={"file_id": "file-nope"})
                       ).status_code == 404
    assert http.get("/vector_stores/vs_nope").status_code == 404
    assert unthrottled(lambda: http.post(f"{base}/file_batches", json={})).status_code == 400
    fid = upload(http, "a.txt", b"a")
    bad = unthrottled(lambda: http.post(f"{base}/files",
                                        json={"file_id": fid, "attributes": {"k": [1]}}))
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "attributes"
    batch = unthrottled(lambda: http.post(f"{base}/file_batches", json={"file_ids": [fid]}))
    cancel = f"{base}/file_batches/{batch.json()['id']}/cancel"
    cancelled = unthrottled(lambda: http.post(cancel)).json()
    assert cancelled["status"] == "cancelled"
    assert cancelled["file_counts"]["cancelled"] == 1
    # Writes to stores share the upload class's limit: some of 12 quick ones are refused.
    codes = [http.post("/vector_stores", json={}).status_code for _ in range(12)]
    assert 429 in codes
    stats = httpx.get(f"{emu.root_url}/_emulator/stats").json()
    assert stats["throttled"]["upload"] >= codes.count(429) >= 1


def test_dashscope_flavour_has_no_vector_stores(emulator_factory: Factory) -> None:
    emu = emulator_factory(rate_limit="off")
    assert client(emu).get("/vector_stores").status_code == 404
