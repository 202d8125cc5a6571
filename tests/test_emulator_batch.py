"""The emulator's Batch API over real HTTP, in both flavours: the lifecycle, validation,
output and error files, cancel, paging, content downloads, and the fault flags."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.emulator_fixture import EmulatorHandle
from tests.helpers import wait_for

Factory = Callable[..., EmulatorHandle]
FLAVORS = ("dashscope", "openai")
CHAT = "/v1/chat/completions"
MODEL = {"dashscope": "qwen-plus", "openai": "gpt-4o-mini"}
WAIT_S = 60.0


def client(emu: EmulatorHandle) -> httpx.Client:
    return httpx.Client(base_url=emu.url, timeout=30,
                        headers={"Authorization": f"Bearer {emu.api_key}"})


def requests_jsonl(flavor: str, lines: int = 10, bad: tuple[int, ...] = (3,),
                   url: str = CHAT) -> bytes:
    """``lines`` chat requests; those in ``bad`` have an empty ``messages`` list: valid
    batch input (the upload takes it), refused by the model endpoint."""
    out = []
    for i in range(lines):
        messages = [] if i in bad else [{"role": "user", "content": f"question {i}"}]
        out.append(json.dumps({"custom_id": f"req-{i}", "method": "POST", "url": url,
                               "body": {"model": MODEL[flavor], "messages": messages}}))
    return ("\n".join(out) + "\n").encode()


def upload(http: httpx.Client, name: str, data: bytes, purpose: str = "batch") -> dict[str, Any]:
    r = http.post("/files", data={"purpose": purpose}, files={"file": (name, data)})
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def create(http: httpx.Client, file_id: str, **extra: Any) -> httpx.Response:
    body = {"input_file_id": file_id, "endpoint": CHAT, "completion_window": "24h", **extra}
    return http.post("/batches", json=body)


def until_ended(http: httpx.Client, batch_id: str) -> tuple[dict[str, Any], list[str]]:
    seen: list[str] = []

    def ended() -> dict[str, Any] | None:
        batch: dict[str, Any] = http.get(f"/batches/{batch_id}").json()
        if not seen or seen[-1] != batch["status"]:
            seen.append(batch["status"])
        return batch if batch["status"] in ("completed", "failed", "expired", "cancelled") \
            else None

    return wait_for(ended, WAIT_S, "the batch to end", interval=0.1), seen


def lines(data: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in data.decode().splitlines() if line.strip()]


@pytest.mark.parametrize("flavor", FLAVORS)
def test_lifecycle_output_and_error_files(emulator_factory: Factory, flavor: str) -> None:
    emu = emulator_factory(flavor=flavor, batch_step_s=0.3, content_download="provider")
    with client(emu) as http:
        source = requests_jsonl(flavor)
        inp = upload(http, "requests.jsonl", source)
        r = create(http, inp["id"], metadata={"syncd_intent": "abc", "ds_name": "syncd:abc"})
        assert r.status_code == 200, r.text
        job = r.json()
        assert job["object"] == "batch" and job["status"] == "validating"
        assert job["metadata"] == {"syncd_intent": "abc", "ds_name": "syncd:abc"}
        assert job["expires_at"] == job["created_at"] + 24 * 3600
        assert re.fullmatch(r"batch_[0-9a-f-]{32,36}", job["id"])
        done, seen = until_ended(http, job["id"])
        assert seen[-1] == "completed" and seen[0] == "validating", seen
        assert done["request_counts"] == {"total": 10, "completed": 9, "failed": 1}
        for stamp in ("in_progress_at", "finalizing_at", "completed_at"):
            assert done[stamp] is not None and done[stamp] >= done["created_at"]
        out_id, err_id = done["output_file_id"], done["error_file_id"]
        if flavor == "dashscope":
            assert re.fullmatch(r"file-batch_output-[0-9a-f]{24}", out_id)
            assert re.fullmatch(r"file-batch_error-[0-9a-f]{24}", err_id)
        else:
            assert re.fullmatch(r"file-[A-Za-z0-9]{24}", out_id) and out_id != err_id
        listed = {f["id"]: f for f in http.get("/files").json()["data"]}
        assert listed[out_id]["purpose"] == listed[err_id]["purpose"] == "batch_output"
        output = http.get(f"/files/{out_id}/content")
        errors = http.get(f"/files/{err_id}/content")
        assert output.status_code == errors.status_code == 200
        assert len(output.content) == listed[out_id]["bytes"]
        out, err = lines(output.content), lines(errors.content)
        assert [o["custom_id"] for o in out] == [f"req-{i}" for i in range(10) if i != 3]
        assert [e["custom_id"] for e in err] == ["req-3"]
        assert all(o["error"] is None and o["response"]["status_code"] == 200 for o in out)
        answer = out[0]["response"]["body"]
        assert answer["choices"][0]["message"]["content"] == "echo: question 0"
        assert answer["model"] == MODEL[flavor]
        assert err[0]["error"]["code"] and err[0]["response"]["status_code"] == 400
        # The answers are deterministic: the same request, the same body (but for
        # `created`, the job's own time).
        again = create(http, inp["id"]).json()
        done2, _ = until_ended(http, again["id"])
        out2 = lines(http.get(f"/files/{done2['output_file_id']}/content").content)

        def bodies(out: list[dict[str, Any]]) -> list[dict[str, Any]]:
            return [{k: v for k, v in o["response"]["body"].items() if k != "created"}
                    for o in out]

        assert bodies(out2) == bodies(out)


@pytest.mark.parametrize("flavor", FLAVORS)
def test_a_job_whose_lines_do_not_match_its_endpoint_fails(emulator_factory: Factory,
                                                           flavor: str) -> None:
    emu = emulator_factory(flavor=flavor, batch_step_s=0)
    with client(emu) as http:
        inp = upload(http, "emb.jsonl", requests_jsonl(flavor, 3, bad=(), url="/v1/embeddings"))
        job = create(http, inp["id"]).json()
        done, _ = until_ended(http, job["id"])
        assert done["status"] == "failed" and done["failed_at"] is not None
        codes = {e["code"] for e in done["errors"]["data"]}
        assert codes == {"url_mismatch"}
        assert [e["line"] for e in done["errors"]["data"]] == [1, 2, 3]
        assert done["output_file_id"] is None and done["error_file_id"] is None


@pytest.mark.parametrize("flavor", FLAVORS)
def test_create_refusals(emulator_factory: Factory, flavor: str) -> None:
    emu = emulator_factory(flavor=flavor, rate_limit="off")
    with client(emu) as http:
        inp = upload(http, "requests.jsonl", requests_jsonl(flavor, 2, bad=()))
        other = "assistants" if flavor == "openai" else "file-extract"
        doc = upload(http, "doc.txt", b"hello", purpose=other)

        def refused(r: httpx.Response, param: str, status: int = 400) -> None:
            assert r.status_code == status, r.text
            assert r.json()["error"]["param"] == param

        refused(http.post("/batches", json={"endpoint": CHAT, "completion_window": "24h"}),
                "input_file_id")
        refused(create(http, inp["id"], endpoint="/v1/nothing"), "endpoint")
        refused(create(http, inp["id"], completion_window="2h"), "completion_window")
        refused(create(http, doc["id"]), "input_file_id")
        refused(create(http, "file-nope"), "file_id", 404)
        refused(create(http, inp["id"], metadata={"k": 1}), "metadata")
        refused(create(http, inp["id"], metadata={f"k{i}": "v" for i in range(17)}), "metadata")
        fortnight = create(http, inp["id"], completion_window="14d")
        if flavor == "dashscope":
            assert fortnight.status_code == 200
            assert fortnight.json()["expires_at"] == fortnight.json()["created_at"] + 336 * 3600
            refused(create(http, inp["id"], metadata={"ds_name": "x" * 101}), "metadata")
        else:
            refused(fortnight, "completion_window")
        refused(http.get("/batches/batch_nope"), "batch_id", 404)


@pytest.mark.parametrize("flavor", FLAVORS)
def test_cancel_and_paging(emulator_factory: Factory, flavor: str) -> None:
    emu = emulator_factory(flavor=flavor, batch_step_s=1.0, rate_limit="off")
    with client(emu) as http:
        inp = upload(http, "requests.jsonl", requests_jsonl(flavor, 2, bad=()))
        ids = [create(http, inp["id"]).json()["id"] for _ in range(5)]
        cancelling = http.post(f"/batches/{ids[0]}/cancel")
        assert cancelling.status_code == 200 and cancelling.json()["status"] == "cancelling"
        # A second cancel answers the job as it is: a retried cancel is harmless.
        assert http.post(f"/batches/{ids[0]}/cancel").json()["status"] in ("cancelling",
                                                                             "cancelled")
        done, _ = until_ended(http, ids[0])
        assert done["status"] == "cancelled" and done["output_file_id"] is None
        assert until_ended(http, ids[1])[0]["status"] == "completed"
        late = http.post(f"/batches/{ids[1]}/cancel")
        assert late.status_code == 400 and late.json()["error"]["code"] == "invalid_batch_status"
        # Newest first, two at a time, with the cursor.
        pages: list[list[str]] = []
        after: str | None = None
        while True:
            params: dict[str, Any] = {"limit": 2, **({"after": after} if after else {})}
            page = http.get("/batches", params=params).json()
            pages.append([b["id"] for b in page["data"]])
            if not page["has_more"]:
                break
            after = page["last_id"]
        assert [i for p in pages for i in p] == ids[::-1] and len(pages) == 3
        assert http.get("/batches", params={"limit": 101}).status_code == 400
        assert http.get("/batches", params={"after": "batch_nope"}).status_code == 400


def test_content_download_refused_where_the_provider_refuses(emulator_factory: Factory) -> None:
    emu = emulator_factory(batch_step_s=0, content_download="provider")
    with client(emu) as http:
        doc = upload(http, "doc.txt", b"hello", purpose="file-extract")
        inp = upload(http, "requests.jsonl", requests_jsonl("dashscope", 2, bad=()))
        for file_id, purpose in ((doc["id"], "file-extract"), (inp["id"], "batch")):
            r = http.get(f"/files/{file_id}/content")
            assert r.status_code == 400
            error = r.json()["error"]
            assert error["code"] == "download_not_allowed" and purpose in error["message"]
        done, _ = until_ended(http, create(http, inp["id"]).json()["id"])
        assert http.get(f"/files/{done['output_file_id']}/content").status_code == 200
        # By default every file's content is served (tests read back what they upload).
        emu.configure(content_download="any")
        assert http.get(f"/files/{doc['id']}/content").content == b"hello"
        bad = httpx.post(f"{emu.root_url}/_emulator/config", json={"content_download": "x"})
        assert bad.status_code == 400


def test_faults_apply_to_batch_calls(emulator_factory: Factory) -> None:
    emu = emulator_factory(batch_step_s=0, rate_limit="off")
    with client(emu) as http:
        inp = upload(http, "requests.jsonl", requests_jsonl("dashscope", 2, bad=()))
        emu.configure(fault_5xx=1.0)
        assert create(http, inp["id"]).status_code in (500, 503)
        assert http.get("/batches").status_code in (500, 503)
        emu.configure(fault_5xx=0.0, drop_after_store=1.0)
        with pytest.raises(httpx.RemoteProtocolError):
            create(http, inp["id"], metadata={"syncd_intent": "lost"})
        emu.configure(drop_after_store=0.0)
        # The answer was lost, the job was made.
        truth = httpx.get(f"{emu.root_url}/_emulator/batches").json()["accounts"]
        jobs = [b for account in truth.values() for b in account]
        assert [b["metadata"] for b in jobs] == [{"syncd_intent": "lost"}]
        stats = emu.stats()
        assert stats["mutations"]["batch_create"] == 1
        assert stats["faults"]["drop_after_store"] == 1 and stats["faults"]["5xx"] == 2
        emu.configure(fault_429=1.0)
        assert http.get(f"/batches/{jobs[0]['id']}").status_code == 429


def test_expired_jobs_answer_half(emulator_factory: Factory) -> None:
    emu = emulator_factory(batch_step_s=0, batch_expire=1.0)
    with client(emu) as http:
        inp = upload(http, "requests.jsonl", requests_jsonl("dashscope", 10, bad=()))
        done, _ = until_ended(http, create(http, inp["id"]).json()["id"])
        assert done["status"] == "expired" and done["expired_at"] is not None
        assert done["request_counts"] == {"total": 10, "completed": 5, "failed": 5}
        err = lines(http.get(f"/files/{done['error_file_id']}/content").content)
        assert {e["error"]["code"] for e in err} == {"batch_expired"}
        assert len(lines(http.get(f"/files/{done['output_file_id']}/content").content)) == 5


def test_jobs_carry_on_after_a_restart_and_catch_up(emulator_factory: Factory) -> None:
    emu = emulator_factory(batch_step_s=0.5)
    with client(emu) as http:
        inp = upload(http, "requests.jsonl", requests_jsonl("dashscope", 4))
        job = create(http, inp["id"]).json()
        # The input may go: the job has its own copy.
        assert http.delete(f"/files/{inp['id']}").status_code == 200
    emu.restart()
    with client(emu) as http:
        done, _ = until_ended(http, job["id"])
        assert done["status"] == "completed"
        assert done["request_counts"] == {"total": 4, "completed": 3, "failed": 1}
        # Each step is stamped when it would have happened, however late it was looked at.
        assert done["in_progress_at"] <= done["finalizing_at"] <= done["completed_at"]


def test_truncated_content_is_cut_off(emulator_factory: Factory) -> None:
    emu = emulator_factory(fault_truncate_content=1.0, rate_limit="off")
    with client(emu) as http:
        doc = upload(http, "doc.txt", b"x" * 100_000, purpose="file-extract")
        with pytest.raises(httpx.RemoteProtocolError):
            http.get(f"/files/{doc['id']}/content")
        assert emu.stats()["mutations"]["truncated_content"] == 1
