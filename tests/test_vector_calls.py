"""The client's vector store calls against the emulator over HTTP: a store made and found,
files attached in a batch with their attributes, listed across pages and by status,
detached (twice is harmless), and a create whose answer is lost named as ambiguous."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from syncd.api.errors import AmbiguousCreateError
from syncd.api.options import Rates, RetryPolicy
from syncd.api.vector_calls import Attach
from tests.emulator_fixture import EmulatorHandle
from tests.helpers import wait_for
from tests.helpers_client import make_client, write_text_files

FAST = Rates(upload=200, read=200, delete=200)
Factory = Callable[..., EmulatorHandle]
RETRY = RetryPolicy(max_attempts=10, max_elapsed=60, initial_backoff=0.05, max_backoff=0.5)


def test_store_batch_list_detach(emulator_factory: Factory, tmp_path: Path) -> None:
    emu = emulator_factory(flavor="openai", vs_step_s=0.3, rate_limit="off")
    client = make_client(emu.url, emu.api_key, retry=RETRY, rates=FAST)
    store = client.create_vector_store("docs", {"syncd_rule": "0"})
    assert store.name == "docs" and store.meta("syncd_rule") == "0"
    ids = [client.upload(p, "assistants").id for p in write_text_files(tmp_path, 120)]
    # From here every call is retried through a tenth of 5xx answers.
    httpx.post(f"{emu.root_url}/_emulator/config", json={"fault_5xx": 0.1}).raise_for_status()
    batch = client.create_file_batch(
        store.id, [Attach(f, {"path": f"d/{i}.txt", "n": i}) for i, f in enumerate(ids)])
    done = wait_for(lambda: (b := client.retrieve_file_batch(store.id, batch.id)).status
                    == "completed" and b, timeout=30, what="batch completed", interval=0.2)
    assert done.file_counts["completed"] == 120
    listed = list(client.list_vector_files(store.id))
    assert sorted(f.id for f in listed) == sorted(ids)
    assert {f.attributes["path"] for f in listed} == {f"d/{i}.txt" for i in range(120)}
    assert len(list(client.list_vector_files(store.id, status="failed"))) == 0
    assert len(list(client.list_file_batch_files(store.id, batch.id))) == 120
    assert client.detach_file(store.id, ids[0]) is True
    assert client.detach_file(store.id, ids[0]) is False
    assert [s.id for s in client.list_vector_stores()] == [store.id]
    assert client.retrieve_vector_store(store.id).file_counts["total"] == 119


def test_lost_create_answer_is_ambiguous(emulator_factory: Factory) -> None:
    emu = emulator_factory(flavor="openai", drop_after_store=1.0, rate_limit="off")
    client = make_client(emu.url, emu.api_key, retry=RETRY)
    with pytest.raises(AmbiguousCreateError) as caught:
        client.create_vector_store("docs", {"syncd_rule": "0"})
    assert caught.value.metadata == {"syncd_rule": "0"}
    # It was made: the listing finds it by its metadata.
    assert [s.meta("syncd_rule") for s in client.list_vector_stores()] == ["0"]
