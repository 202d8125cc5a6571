"""FilesClient's batch calls and downloads against the emulator over HTTP: typed jobs,
paging, cancel, lost create answers, byte-exact downloads through faults, refusals."""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from syncd.api.client import FilesClient
from syncd.api.errors import (
    AmbiguousCreateError,
    DownloadRefusedError,
    IncompleteDownloadError,
    InvalidRequestError,
    NotFoundError,
)
from syncd.api.models import Batch
from syncd.api.options import RetryPolicy
from tests.emulator_fixture import EmulatorHandle
from tests.helpers import wait_for
from tests.helpers_client import make_client

Factory = Callable[..., EmulatorHandle]
CHAT = "/v1/chat/completions"
RETRY = RetryPolicy(max_attempts=15, max_elapsed=120, initial_backoff=0.05, max_backoff=0.5)
WAIT_S = 60.0


def write_requests(path: Path, lines: int = 10, bad: tuple[int, ...] = (3,)) -> Path:
    out = []
    for i in range(lines):
        messages = [] if i in bad else [{"role": "user", "content": f"q{i}"}]
        out.append(json.dumps({"custom_id": f"req-{i}", "method": "POST", "url": CHAT,
                               "body": {"model": "qwen-plus", "messages": messages}}))
    path.write_text("\n".join(out) + "\n")
    return path


def ended(client: FilesClient, batch_id: str) -> Batch:
    def check() -> Batch | None:
        batch = client.retrieve_batch(batch_id)
        return batch if batch.terminal else None

    result: Batch = wait_for(check, WAIT_S, "the job to end", interval=0.1)
    return result


@pytest.mark.parametrize("flavor", ["dashscope", "openai"])
def test_batch_calls_are_typed(emulator_factory: Factory, tmp_path: Path, flavor: str) -> None:
    emu = emulator_factory(flavor=flavor, batch_step_s=0.2)
    with make_client(emu.url, emu.api_key, retry=RETRY) as client:
        model = "gpt-4o-mini" if flavor == "openai" else "qwen-plus"
        source = write_requests(tmp_path / "requests.jsonl")
        source.write_text(source.read_text().replace("qwen-plus", model))
        inp = client.upload(source, "batch")
        job = client.create_batch(inp.id, CHAT, "24h", {"syncd_intent": "i-1"})
        assert job.status == "validating" and job.meta("syncd_intent") == "i-1"
        assert job.input_file_id == inp.id and job.endpoint == CHAT and not job.terminal
        done = ended(client, job.id)
        assert done.status == "completed" and done.completed_at is not None
        assert (done.request_counts.total, done.request_counts.completed,
                done.request_counts.failed) == (10, 9, 1)
        assert done.output_file_id and done.error_file_id
        buf = io.BytesIO()
        got = client.download(done.output_file_id, buf)
        assert got.bytes == len(buf.getvalue()) and got.sha256 == hashlib.sha256(
            buf.getvalue()).hexdigest()
        ids = [json.loads(line)["custom_id"] for line in buf.getvalue().splitlines()]
        assert ids == [f"req-{i}" for i in range(10) if i != 3]
        # Paging: newest first, across pages of one.
        second = client.create_batch(inp.id, CHAT)
        assert [b.id for b in client.list_batches(page_size=1)] == [second.id, job.id]
        cancelled = client.cancel_batch(second.id)
        assert cancelled.status == "cancelling"
        assert client.cancel_batch(second.id).status in ("cancelling", "cancelled")
        assert ended(client, second.id).status == "cancelled"
        with pytest.raises(InvalidRequestError):
            client.cancel_batch(job.id)
        with pytest.raises(NotFoundError):
            client.retrieve_batch("batch_missing")
        failed = client.create_batch(inp.id, "/v1/embeddings")
        assert ended(client, failed.id).errors[0].code == "url_mismatch"


def test_a_lost_create_answer_is_ambiguous(emulator_factory: Factory, tmp_path: Path) -> None:
    emu = emulator_factory(batch_step_s=1)
    with make_client(emu.url, emu.api_key, retry=RETRY) as client:
        inp = client.upload(write_requests(tmp_path / "r.jsonl"), "batch")
        emu.configure(drop_after_store=1.0)
        with pytest.raises(AmbiguousCreateError) as lost:
            client.create_batch(inp.id, CHAT, metadata={"syncd_intent": "x"})
        assert lost.value.metadata == {"syncd_intent": "x"}
        emu.configure(drop_after_store=0.0, fault_5xx=1.0)
        with pytest.raises(AmbiguousCreateError) as failed:
            client.create_batch(inp.id, CHAT)
        assert failed.value.status in (500, 503)
        emu.configure(fault_5xx=0.0)
        # The client sent each once: one job made (the dropped answer's), none repeated.
        assert emu.stats()["mutations"]["batch_create"] == 1
        assert [b.meta("syncd_intent") for b in client.list_batches()] == ["x"]


def test_download_is_byte_exact_through_faults(emulator_factory: Factory,
                                               tmp_path: Path) -> None:
    emu = emulator_factory(fault_5xx=0.2, fault_truncate_content=0.5, drop_before=0.1,
                           seed=7)
    data = os.urandom(3 * 1024 * 1024 + 17)
    source = tmp_path / "blob.txt"
    source.write_bytes(data)
    with make_client(emu.url, emu.api_key, retry=RETRY) as client:
        emu.configure(fault_5xx=0.0, drop_before=0.0)
        remote = client.upload(source, "file-extract")
        emu.configure(fault_5xx=0.2, drop_before=0.1)
        for _ in range(8):
            dest = tmp_path / "out.bin"
            with open(dest, "wb") as fh:
                fh.write(b"kept")  # written from the position at the call
                got = client.download(remote.id, fh, size=remote.bytes)
            assert dest.read_bytes() == b"kept" + data
            assert got.bytes == len(data) and got.sha256 == hashlib.sha256(data).hexdigest()
        assert emu.stats()["mutations"]["truncated_content"] > 0
        # A size that is not the file's is an error, never a short file taken for whole.
        emu.configure(fault_5xx=0.0, drop_before=0.0, fault_truncate_content=0.0)
        with pytest.raises(IncompleteDownloadError):
            client.download(remote.id, io.BytesIO(), size=remote.bytes + 1)
        with pytest.raises(NotFoundError):
            client.download("file-fe-000000000000000000000000", io.BytesIO())


def test_refused_download_is_typed(emulator_factory: Factory, tmp_path: Path) -> None:
    emu = emulator_factory(content_download="provider")
    doc = tmp_path / "doc.txt"
    doc.write_text("hello")
    with make_client(emu.url, emu.api_key, retry=RETRY) as client:
        remote = client.upload(doc, "file-extract")
        with pytest.raises(DownloadRefusedError) as refused:
            client.download(remote.id, io.BytesIO())
        error = refused.value
        assert error.file_id == remote.id and error.purpose == "file-extract"
        assert error.status == 400 and error.code == "download_not_allowed"
        assert "file-extract" in str(error)
        # Refusals are not retried: one content request.
        assert emu.stats()["requests"]["read"] == 2  # the retrieve, and the content
