"""Emulator modes that reproduce field situations: list pages that leave entries out, unknown
ids answered 400 with a non-OpenAI body, and a provider clock that is off."""

from __future__ import annotations

import time
from collections.abc import Callable
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from syncd.emulator.cli import build_parser, settings_from_args
from tests.emulator_fixture import EmulatorHandle

Factory = Callable[..., EmulatorHandle]


def client(emu: EmulatorHandle, key: str | None = None) -> httpx.Client:
    return httpx.Client(base_url=emu.url, timeout=30,
                        headers={"Authorization": f"Bearer {key or emu.api_key}"})


def upload_many(http: httpx.Client, n: int) -> list[str]:
    ids = []
    for i in range(n):
        r = http.post("/files", data={"purpose": "file-extract"},
                      files={"file": (f"f{i}.txt", f"file {i}".encode())})
        assert r.status_code == 200, r.text
        ids.append(r.json()["id"])
    return ids


def list_all(http: httpx.Client, limit: int) -> list[str]:
    """Page the way clients do: `after` = the last id of the previous page."""
    seen: list[str] = []
    params: dict[str, Any] = {"limit": limit}
    while True:
        page = http.get("/files", params=params)
        assert page.status_code == 200, page.text
        body = page.json()
        seen += [f["id"] for f in body["data"]]
        if not body["has_more"]:
            return seen
        params["after"] = body["data"][-1]["id"]


def date_of(r: httpx.Response) -> float:
    dates = r.headers.get_list("date")
    assert len(dates) == 1, f"expected one Date header, got {dates}"
    return parsedate_to_datetime(dates[0]).timestamp()


# ---- list omission ---------------------------------------------------------------------------

def test_list_omission_leaves_entries_out_but_retrieve_finds_them(emulator_factory: Factory
                                                                  ) -> None:
    emu = emulator_factory(rate_limit="off", fault_list_omit=0.2, seed=3)
    with client(emu) as http:
        ids = upload_many(http, 50)
        # One page holding everything: exactly 20% of it is left out.
        listed = list_all(http, limit=2000)
        assert len(listed) == 40 and set(listed) < set(ids)
        missing = set(ids) - set(listed)
        for file_id in missing:
            assert http.get(f"/files/{file_id}").status_code == 200
        assert emu.stats()["faults"]["list_omit"] == 10
        # Paged by 7: the cursor moves past what was left out, so no id is seen twice and
        # what a page lost does not come back on the next one.
        paged = list_all(http, limit=7)
        assert len(paged) == len(set(paged)) and set(paged) < set(ids)
        assert 50 - len(paged) >= 5
        # The control API's listing is the truth.
        assert {f["id"] for f in emu.truth_files()} == set(ids)
        # Seeded: the same seed leaves the same entries out.
        emu.configure(seed=11)
        first = list_all(http, limit=2000)
        emu.configure(seed=11)
        assert list_all(http, limit=2000) == first
        # Switched off at runtime.
        assert emu.configure(fault_list_omit=0)["fault_list_omit"] == 0
        assert set(list_all(http, limit=2000)) == set(ids)
        assert set(list_all(http, limit=7)) == set(ids)


def test_list_omission_switched_on_at_runtime_keeps_the_page_cursor(emulator_factory: Factory
                                                                    ) -> None:
    emu = emulator_factory(rate_limit="off")
    with client(emu) as http:
        ids = upload_many(http, 12)
        assert set(list_all(http, limit=2000)) == set(ids)
        emu.configure(fault_list_omit=1.0)
        # Everything that can be left out is: a page with more to come keeps only its last
        # entry (the cursor), the final page keeps nothing.
        page = http.get("/files", params={"limit": 5}).json()
        assert [f["id"] for f in page["data"]] == [ids[-5]] and page["has_more"] is True
        assert list_all(http, limit=5) == [ids[-5], ids[-10]]
        assert list_all(http, limit=2000) == []
        assert len(emu.truth_files()) == 12


# ---- unknown ids answered 400 ----------------------------------------------------------------

def test_unknown_id_status_400_with_a_detail_body(emulator_factory: Factory) -> None:
    emu = emulator_factory()
    unknown = "file-fe-" + "0" * 24
    with client(emu) as http:
        (kept, gone) = upload_many(http, 2)
        assert http.delete(f"/files/{gone}").status_code == 200
        r = http.get(f"/files/{unknown}")
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"

        assert emu.configure(unknown_id_status=400)["unknown_id_status"] == 400
        for file_id in (unknown, gone):
            for method, path in (("GET", f"/files/{file_id}"), ("DELETE", f"/files/{file_id}"),
                                 ("GET", f"/files/{file_id}/content")):
                r = http.request(method, path)
                assert r.status_code == 400, (method, path)
                assert r.json() == {"detail": "File not found"}
        # Known ids are unaffected.
        assert http.get(f"/files/{kept}").status_code == 200
        assert http.get(f"/files/{kept}/content").content == b"file 0"
        # Other errors keep the envelope.
        r = http.post("/files", data={"purpose": "nope"}, files={"file": ("a.txt", b"x")})
        assert r.status_code == 400 and r.json()["error"]["param"] == "purpose"

        bad = httpx.post(f"{emu.root_url}/_emulator/config", json={"unknown_id_status": 500})
        assert bad.status_code == 400
        emu.configure(unknown_id_status=404)
        assert http.get(f"/files/{unknown}").status_code == 404


def test_unknown_id_status_flag(emulator_factory: Factory) -> None:
    emu = emulator_factory(unknown_id_status=400)
    with client(emu) as http:
        r = http.delete("/files/file-fe-" + "1" * 24)
        assert (r.status_code, r.json()) == (400, {"detail": "File not found"})
    assert emu.configure()["unknown_id_status"] == 400


# ---- clock offset ----------------------------------------------------------------------------

def test_date_header_on_every_response_without_offset(emulator: EmulatorHandle) -> None:
    with client(emulator) as http:
        responses = [
            http.get("/files"),
            http.get("/files/file-fe-" + "2" * 24),
            httpx.get(f"{emulator.url}/files"),  # no key: 401
            httpx.get(f"{emulator.root_url}/_emulator/health"),
            httpx.get(f"{emulator.root_url}/nowhere"),
        ]
    for r in responses:
        assert abs(date_of(r) - time.time()) < 5, r.request.url


def test_clock_offset_shifts_created_at_and_date(emulator_factory: Factory) -> None:
    emu = emulator_factory(clock_offset_s=-600)
    with client(emu) as http:
        before = time.time()
        r = http.post("/files", data={"purpose": "file-extract"},
                      files={"file": ("a.txt", b"a")})
        after = time.time()
        assert r.status_code == 200
        created = r.json()["created_at"]
        assert before - 600 - 1 <= created <= after - 600
        for resp in (r, http.get("/files"), http.get("/files/file-fe-" + "3" * 24),
                     httpx.get(f"{emu.root_url}/_emulator/stats")):
            assert abs(date_of(resp) - (time.time() - 600)) < 5
        # create_after / create_before speak the provider's time.
        page = http.get("/files", params={"create_after": created, "create_before": created})
        assert [f["id"] for f in page.json()["data"]] == [r.json()["id"]]

        # Changed at runtime; files already stored keep their created_at.
        assert emu.configure(clock_offset_s=7.5)["clock_offset_s"] == 7.5
        r2 = http.post("/files", data={"purpose": "file-extract"},
                       files={"file": ("b.txt", b"b")})
        assert abs(r2.json()["created_at"] - (time.time() + 7.5)) < 5
        assert abs(date_of(r2) - (time.time() + 7.5)) < 5
        assert http.get(f"/files/{r.json()['id']}").json()["created_at"] == created
        # Newest first in the provider's time.
        assert [f["id"] for f in http.get("/files").json()["data"]] == [
            r2.json()["id"], r.json()["id"]]


def test_new_flags_parse() -> None:
    args = build_parser().parse_args([
        "--fault-list-omit", "0.25", "--unknown-id-status", "400", "--clock-offset-s", "-600",
        "--flavor", "openai"])
    s = settings_from_args(args)
    assert (s.fault_list_omit, s.unknown_id_status, s.clock_offset_s, s.flavor) == (
        0.25, 400, -600.0, "openai")
    defaults = settings_from_args(build_parser().parse_args([]))
    assert (defaults.fault_list_omit, defaults.unknown_id_status, defaults.clock_offset_s,
            defaults.flavor) == (0.0, 404, 0.0, "dashscope")
