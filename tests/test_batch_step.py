"""batches.step end to end against the emulator over HTTP: one job per input content,
found again after a crash or a lost answer, results pulled home under the input's name,
edits, superseded jobs, the daily cap, dry runs, conflicts and deletes after pull."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from syncd.api.client import FilesClient
from syncd.api.options import RetryPolicy
from syncd.engine.batches import (
    BatchesConfig,
    BatchStore,
    KnownInput,
    Report,
    SubmitRule,
    intent_of,
    job_metadata,
    plan_submit,
    step,
)
from syncd.engine.pull import PullConfig
from tests.emulator_fixture import EmulatorHandle
from tests.helpers import wait_for
from tests.helpers_client import make_client

Factory = Callable[..., EmulatorHandle]
CHAT = "/v1/chat/completions"
RETRY = RetryPolicy(max_attempts=15, max_elapsed=120, initial_backoff=0.05, max_backoff=0.5)
WAIT_S = 90.0
RULE = SubmitRule(("*.jsonl",), CHAT)


def requests_text(lines: int = 10, bad: tuple[int, ...] = (3,), tag: str = "q",
                  model: str = "qwen-plus") -> str:
    out = []
    for i in range(lines):
        messages = [] if i in bad else [{"role": "user", "content": f"{tag}{i}"}]
        out.append(json.dumps({"custom_id": f"req-{i}", "method": "POST", "url": CHAT,
                               "body": {"model": model, "messages": messages}}))
    return "\n".join(out) + "\n"


@dataclass
class Rig:
    emu: EmulatorHandle
    client: FilesClient
    store: BatchStore
    config: BatchesConfig
    root: Path
    outbox: Path
    known: dict[str, KnownInput]
    reports: list[Report]

    def put(self, rel: str, text: str) -> KnownInput:
        """Write and "sync" an input, as the Syncer would (upload, then known)."""
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        sent = self.client.send(path, "batch", filename=path.name)
        assert sent.sha256 is not None
        self.known[rel] = KnownInput(sent.file.id, sent.sha256)
        return self.known[rel]

    def step(self, **kw: Any) -> Report:
        report = step(self.client, self.store, self.config, self.known, **kw)
        self.reports.append(report)
        return report

    def until(self, cond: Callable[[Report], bool], what: str) -> Report:
        def once() -> Report | None:
            report = self.step()
            return report if cond(report) else None

        result: Report = wait_for(once, WAIT_S, what, interval=0.1)
        return result

    def settled(self) -> Report:
        """Step until every job ended and a step pulled nothing more."""
        return self.until(lambda r: not r.pending and not r.pulled and not r.errors,
                          "jobs to end and their results to be pulled")

    def truth(self) -> list[dict[str, Any]]:
        accounts = httpx.get(f"{self.emu.root_url}/_emulator/batches").json()["accounts"]
        return [b for batches in accounts.values() for b in batches]

    def blob(self, file_id: str) -> bytes:
        return (self.emu.data_dir / "blobs" / file_id).read_bytes()


@pytest.fixture
def rig_factory(emulator_factory: Factory, tmp_path: Path) -> Iterator[Callable[..., Rig]]:
    rigs: list[Rig] = []

    def make(flavor: str = "dashscope", step_s: float = 0.1, **config: Any) -> Rig:
        emu = emulator_factory(flavor=flavor, batch_step_s=step_s, content_download="provider")
        base = tmp_path / f"rig{len(rigs)}"
        pull = PullConfig(outbox=base / "outbox",
                          delete_remote_after_pull=config.pop("delete_remote_after_pull", False))
        cfg = BatchesConfig(pull=pull, submit=(RULE,), confirm_listings=2, confirm_s=0.3)
        cfg = replace(cfg, **config)
        rig = Rig(emu, make_client(emu.url, emu.api_key, retry=RETRY),
                  BatchStore.open(base / "state"), cfg, base / "root", base / "outbox", {}, [])
        rigs.append(rig)
        return rig

    yield make
    for rig in rigs:
        rig.client.close()
        rig.store.close()


def jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.mark.parametrize("flavor", ["dashscope", "openai"])
def test_an_input_runs_once_and_its_results_come_home(rig_factory: Callable[..., Rig],
                                                      flavor: str) -> None:
    rig = rig_factory(flavor)
    model = "gpt-4o-mini" if flavor == "openai" else "qwen-plus"
    rig.put("sub/requests.jsonl", requests_text(model=model))
    first = rig.step()
    assert [p for p, _ in first.submitted] == ["sub/requests.jsonl"]
    rig.settled()
    output = rig.outbox / "sub" / "requests.output.jsonl"
    errors = rig.outbox / "sub" / "requests.errors.jsonl"
    assert sorted(p.relative_to(rig.outbox).as_posix() for p in rig.outbox.rglob("*")
                  if p.is_file()) == ["sub/requests.errors.jsonl", "sub/requests.output.jsonl"]
    out, err = jsonl(output), jsonl(errors)
    assert [o["custom_id"] for o in out] == [f"req-{i}" for i in range(10) if i != 3]
    assert [e["custom_id"] for e in err] == ["req-3"]
    [job] = rig.truth()
    assert output.read_bytes() == rig.blob(job["output_file_id"])
    assert errors.read_bytes() == rig.blob(job["error_file_id"])
    assert intent_of(rig.client.retrieve_batch(job["id"])) == rig.store.jobs()[0].intent
    [view] = rig.reports[-1].jobs
    assert (view.status, view.counts.completed, view.counts.failed) == ("completed", 9, 1)
    # Nothing more to do: no second job, no second download.
    again = rig.step()
    assert not again.submitted and not again.pulled
    assert len(rig.truth()) == 1 and rig.emu.stats()["mutations"]["batch_create"] == 1


def test_a_crash_between_intent_and_create_makes_one_job(rig_factory: Callable[..., Rig]
                                                         ) -> None:
    rig = rig_factory()
    known = rig.put("requests.jsonl", requests_text())
    # What a step does first, then the process dies before the create call.
    rig.store.add_intent("requests.jsonl", known.content, known.file_id, RULE)
    looked = rig.step()
    assert not looked.submitted and not rig.truth()  # looked for first, not created blindly
    rig.settled()
    [job] = rig.truth()
    assert job["metadata"]["syncd_intent"] == rig.store.jobs()[0].intent
    assert (rig.outbox / "requests.output.jsonl").exists()


@pytest.mark.parametrize("keys", ["both", "ds_name only", "syncd keys only"])
def test_a_crash_after_the_create_adopts_the_job(rig_factory: Callable[..., Rig],
                                                 keys: str) -> None:
    ds_name, syncd_keys = {"both": (True, True), "ds_name only": (True, False),
                           "syncd keys only": (False, True)}[keys]
    rig = rig_factory(ds_name=ds_name, syncd_keys=syncd_keys)
    known = rig.put("requests.jsonl", requests_text())
    intent = rig.store.add_intent("requests.jsonl", known.content, known.file_id, RULE)
    # The create reached the provider; the process died before recording its answer.
    metadata = job_metadata(intent, ds_name, syncd_keys)
    assert ("ds_name" in metadata) == ds_name and ("syncd_intent" in metadata) == syncd_keys
    made = rig.client.create_batch(known.file_id, CHAT, "24h", metadata)
    report = rig.step()
    assert report.adopted == [("requests.jsonl", made.id)] and not report.submitted
    rig.settled()
    assert [b["id"] for b in rig.truth()] == [made.id]


def test_a_lost_create_answer_makes_one_job(rig_factory: Callable[..., Rig]) -> None:
    rig = rig_factory()
    rig.put("a.jsonl", requests_text(tag="a"))
    rig.put("b.jsonl", requests_text(tag="b"))
    rig.emu.configure(drop_after_store=1.0)
    lost = rig.step()
    assert len(lost.errors) == 2 and not lost.submitted
    rig.emu.configure(drop_after_store=0.0)
    rig.settled()
    adopted = [r.adopted for r in rig.reports if r.adopted]
    assert sorted(p for a in adopted for p, _ in a) == ["a.jsonl", "b.jsonl"]
    assert len(rig.truth()) == 2
    assert {p.name for p in rig.outbox.iterdir()} == {
        "a.output.jsonl", "a.errors.jsonl", "b.output.jsonl", "b.errors.jsonl"}


def test_a_job_created_twice_keeps_one(rig_factory: Callable[..., Rig]) -> None:
    rig = rig_factory(step_s=2.0)
    known = rig.put("requests.jsonl", requests_text())
    intent = rig.store.add_intent("requests.jsonl", known.content, known.file_id, RULE)
    # The create made a job, but no listing showed it (a lagging listing), so syncd made
    # the intent's job again: when the first shows up at last, the later one is cancelled.
    first = rig.client.create_batch(known.file_id, CHAT, "24h", job_metadata(intent, True))
    second = rig.client.create_batch(known.file_id, CHAT, "24h", job_metadata(intent, True))
    for _ in range(2):
        rig.store.note_attempt(intent.intent, time.time())
    rig.store.bind(intent.intent, second)
    report = rig.step()
    assert report.duplicates == [first.id]
    rig.settled()
    states = {b["id"]: b["status"] for b in rig.truth()}
    assert states == {first.id: "cancelled", second.id: "completed"}


def test_an_edit_runs_one_new_job_and_replaces_its_results(
        rig_factory: Callable[..., Rig]) -> None:
    rig = rig_factory()
    rig.put("requests.jsonl", requests_text())
    rig.settled()
    before = (rig.outbox / "requests.output.jsonl").read_bytes()
    assert (rig.outbox / "requests.errors.jsonl").exists()
    # Uploaded again with the same content (a touch): no new job.
    rig.put("requests.jsonl", requests_text())
    assert not rig.step().submitted
    # Edited: one new job, whose results replace the old ones (no errors this time).
    rig.put("requests.jsonl", requests_text(bad=(), tag="edited "))
    rig.settled()
    assert len(rig.truth()) == 2
    after = jsonl(rig.outbox / "requests.output.jsonl")
    assert len(after) == 10 and (rig.outbox / "requests.output.jsonl").read_bytes() != before
    assert after[0]["response"]["body"]["choices"][0]["message"]["content"] == "echo: edited 0"
    assert not (rig.outbox / "requests.errors.jsonl").exists()
    assert sorted(p.name for p in rig.outbox.iterdir()) == ["requests.output.jsonl"]


def test_a_superseded_job_is_cancelled(rig_factory: Callable[..., Rig]) -> None:
    rig = rig_factory(step_s=3.0)
    rig.put("requests.jsonl", requests_text())
    [(_, old)] = rig.step().submitted
    rig.put("requests.jsonl", requests_text(tag="new"))
    report = rig.step()
    assert report.cancelled == [("requests.jsonl", old)]
    assert len(report.submitted) == 1
    rig.settled()
    states = sorted(b["status"] for b in rig.truth())
    assert states == ["cancelled", "completed"]


def test_superseded_jobs_run_on_when_configured(rig_factory: Callable[..., Rig]) -> None:
    rig = rig_factory(step_s=1.0, cancel_superseded=False)
    rig.put("requests.jsonl", requests_text())
    rig.step()
    rig.put("requests.jsonl", requests_text(tag="new"))
    assert not rig.step().cancelled
    rig.settled()
    assert sorted(b["status"] for b in rig.truth()) == ["completed", "completed"]
    out = jsonl(rig.outbox / "requests.output.jsonl")
    assert out[0]["response"]["body"]["choices"][0]["message"]["content"] == "echo: new0"


def test_the_daily_cap_and_dry_runs(rig_factory: Callable[..., Rig]) -> None:
    capped = replace(RULE, max_per_day=2)
    rig = rig_factory(submit=(capped,))
    for name in ("a", "b", "c"):
        rig.put(f"{name}.jsonl", requests_text(tag=name))
    dry = rig.step(dry_run=True)
    assert dry.dry_run and dry.submitted == [("a.jsonl", None), ("b.jsonl", None)]
    assert [p for p, _ in dry.deferred] == ["c.jsonl"] and "max_per_day" in dry.deferred[0][1]
    assert not rig.truth() and not rig.store.jobs()
    real = rig.step()
    assert [p for p, _ in real.submitted] == ["a.jsonl", "b.jsonl"]
    assert [p for p, _ in real.deferred] == ["c.jsonl"]
    rig.settled()
    # A dry run names what it would pull, and pulls nothing.
    rig.put("d.jsonl", requests_text(tag="d"))
    made = rig.client.create_batch(rig.known["d.jsonl"].file_id, CHAT)
    wait_for(lambda: rig.client.retrieve_batch(made.id).terminal, WAIT_S, "the job to end")
    dry = rig.step(dry_run=True)
    assert sorted(name for _, name in dry.pulled) == ["d.errors.jsonl", "d.output.jsonl"]
    assert not (rig.outbox / "d.output.jsonl").exists()


def test_a_changed_outbox_file_is_never_overwritten(rig_factory: Callable[..., Rig]) -> None:
    rig = rig_factory()
    rig.put("requests.jsonl", requests_text())
    rig.settled()
    mine = rig.outbox / "requests.output.jsonl"
    mine.write_text("my notes\n")
    rig.put("requests.jsonl", requests_text(tag="v2"))
    rig.settled()
    assert mine.read_text() == "my notes\n"
    conflicts = [c for r in rig.reports for c in r.conflicts]
    [(file_id, name, reason)] = [c for c in conflicts if "output" in c[1]]
    assert name.startswith("requests.output.conflict-") and name.endswith(".jsonl")
    assert "changed in the outbox" in reason
    assert (rig.outbox / name).read_bytes() == rig.blob(file_id)


def test_other_results_by_id_and_deletes_after_pull(rig_factory: Callable[..., Rig]) -> None:
    rig = rig_factory(submit=(), delete_remote_after_pull=True)
    ours = rig.put("requests.jsonl", requests_text())
    foreign_path = rig.root / "elsewhere.jsonl"
    foreign_path.write_text(requests_text(tag="x"))
    foreign = rig.client.upload(foreign_path, "batch")
    mine = rig.client.create_batch(ours.file_id, CHAT)
    theirs = rig.client.create_batch(foreign.id, CHAT)
    for job in (mine, theirs):
        wait_for(lambda j=job: rig.client.retrieve_batch(j.id).terminal, WAIT_S, "jobs")
    rig.settled()
    done_theirs = rig.client.retrieve_batch(theirs.id)
    assert done_theirs.output_file_id and done_theirs.error_file_id
    names = sorted(p.name for p in rig.outbox.iterdir())
    assert names == sorted(["requests.output.jsonl", "requests.errors.jsonl",
                            f"{done_theirs.output_file_id}.jsonl",
                            f"{done_theirs.error_file_id}.jsonl"])
    # Only the results of jobs over our inputs were deleted from the provider.
    left = {f["id"] for f in rig.emu.truth_files() if f["purpose"] == "batch_output"}
    assert left == {done_theirs.output_file_id, done_theirs.error_file_id}
    deleted = [d for r in rig.reports for d in r.deleted_remote]
    assert len(deleted) == 2


def test_many_running_jobs_are_followed_by_listing(rig_factory: Callable[..., Rig]) -> None:
    rig = rig_factory(step_s=0.5, poll_retrieve_max=1)
    for name in ("a", "b", "c", "d"):
        rig.put(f"{name}.jsonl", requests_text(tag=name))
    assert len(rig.step().submitted) == 4
    rig.emu.reset_stats()
    rig.settled()
    assert {j.status for j in rig.store.jobs()} == {"completed"}
    assert len(list(rig.outbox.iterdir())) == 8


def test_plan_submit_is_pure() -> None:
    known = {"a.jsonl": KnownInput("file-1", "h1"), "b.jsonl": KnownInput("file-2", "h1"),
             "c.txt": KnownInput("file-3", "h3")}
    plan = plan_submit(known, (RULE,), (), now=1000.0)
    # One job per content: a copy of a file runs nothing more.
    assert [(n.path, n.content) for n in plan.create] == [("a.jsonl", "h1")]
    assert not plan.deferred and not plan.cancel


def test_the_store_survives_reopening(rig_factory: Callable[..., Rig], tmp_path: Path) -> None:
    rig = rig_factory()
    rig.put("requests.jsonl", requests_text())
    rig.settled()
    path = rig.store.path
    rig.store.close()
    rig.store = BatchStore(path)
    assert not rig.step().submitted and len(rig.truth()) == 1
    assert os.path.exists(path)
