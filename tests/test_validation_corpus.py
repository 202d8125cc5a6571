"""The engine's local validator and the emulator's must judge every corpus file alike.

Each sample of `tests/corpus` goes through the local checks exactly as the scanner applies
them, and is uploaded to the emulator over HTTP; both verdicts must equal the sample's
expected one, per provider: the engine's validator with the provider's profile against the
emulator's flavour of the same name (DashScope, OpenAI). The generic profile has no
emulator counterpart: it checks nothing the config does not ask for.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from syncd.api.providers import DASHSCOPE, PROVIDERS, Provider
from syncd.engine.accepts import check_content, check_spec
from tests.corpus import SAMPLES, Sample, materialize
from tests.emulator_fixture import EmulatorHandle

Factory = Callable[..., EmulatorHandle]

_LINE = re.compile(r"line (\d+): ")
# Local reasons of a batch line -> the emulator's code for the same rule.
_LOCAL_LINE_CODES = (
    (re.compile(r"longer than 6.0 MiB"), "line_too_large"),
    (re.compile(r"more than \d+ requests"), "too_many_lines"),
    (re.compile(r"duplicate custom_id"), "duplicate_custom_id"),
    (re.compile(r"url .* differs"), "url_mismatch"),
    (re.compile(r"model .* differs"), "mismatched_model"),
)
_EMULATOR_CODES = {
    "BadRequest.EmptyFile": "empty",
    "BadRequest.UnsupportedFileFormat": "format",
    "BadRequest.TooLarge": "too_large",
}


def local_verdict(path: Path, purpose: str, provider: Provider) -> str:
    """What the scanner decides (see `engine/scan.py`), as a verdict."""
    spec = provider.spec(purpose)
    reason = check_spec(path.name, purpose, spec, path.stat().st_size)
    if reason is None:
        reason = check_content(path, spec)
    if reason is None:
        return "ok"
    if reason.startswith("empty file") or reason == "batch file has no requests":
        return "empty"
    if reason.startswith("unsupported format") or " files must be ." in reason:
        return "format"
    if reason.startswith("too large"):
        return "too_large"
    match = _LINE.match(reason)
    if match is None:
        return f"unclassified: {reason}"
    code = next((c for pattern, c in _LOCAL_LINE_CODES if pattern.search(reason)),
                "invalid_json_line")
    return f"{code}@{match.group(1)}"


def emulator_verdict(http: httpx.Client, path: Path, purpose: str) -> str:
    with path.open("rb") as fh:
        r = http.post("/files", data={"purpose": purpose}, files={"file": (path.name, fh)})
    if r.status_code == 200:
        assert http.delete(f"/files/{r.json()['id']}").status_code == 200
        return "ok"
    if r.status_code != 400:
        return f"http {r.status_code}: {r.text[:200]}"
    error = r.json()["error"]
    code = error.get("code")
    if code in _EMULATOR_CODES:
        return _EMULATOR_CODES[code]
    match = _LINE.search(error["message"])
    return f"{code}@{match.group(1) if match else '?'}"


@pytest.mark.parametrize("provider", sorted(SAMPLES))
def test_local_and_emulator_validators_agree_on_the_corpus(
        emulator_factory: Factory, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        provider: str) -> None:
    samples = SAMPLES[provider]()
    profile = PROVIDERS[provider]
    emu = emulator_factory(rate_limit="off", flavor=provider)
    rows: list[tuple[Sample, str, str]] = []
    with httpx.Client(base_url=emu.url, timeout=120,
                      headers={"Authorization": f"Bearer {emu.api_key}"}) as http:
        for sample in samples:
            path = materialize(sample, tmp_path / "corpus")
            try:
                rows.append((sample, local_verdict(path, sample.purpose, profile),
                             emulator_verdict(http, path, sample.purpose)))
            finally:
                path.unlink()
    disagreements = [(s.ident, local, remote) for s, local, remote in rows if local != remote]
    unexpected = [(s.ident, s.expect, local, remote) for s, local, remote in rows
                  if s.expect != local or s.expect != remote]
    verdicts = {s.expect for s in samples}
    with capsys.disabled():
        print(f"\nvalidation corpus ({provider}): {len(samples)} files x 2 validators,"
              f" {len(disagreements)} disagreements, {len(verdicts)} distinct verdicts")
    assert not disagreements, "\n".join(f"{i}: local {a!r} != emulator {b!r}"
                                        for i, a, b in disagreements)
    assert not unexpected, "\n".join(f"{i}: expected {e!r}, local {a!r}, emulator {b!r}"
                                     for i, e, a, b in unexpected)
    # The corpus exercises every kind of verdict, so a validator that accepts everything
    # (or refuses everything) cannot pass.
    assert {"ok", "format", "too_large", "empty"} <= verdicts
    assert {v.split("@")[0] for v in verdicts if "@" in v} == {
        "invalid_json_line", "duplicate_custom_id", "url_mismatch", "mismatched_model",
        "line_too_large", "too_many_lines"}
    # Every purpose of the provider is exercised.
    assert {s.purpose for s in samples} == set(profile.purposes)
    assert emu.truth_files() == []


def test_a_bad_batch_line_says_whether_its_bytes_or_its_json_are_wrong(tmp_path: Path) -> None:
    spec = DASHSCOPE.spec("batch")
    line = json.dumps({"custom_id": "1", "method": "POST", "url": "/v1/chat/completions",
                       "body": {"model": "qwen-plus", "messages": []}})  # fmt: skip
    cases = {
        "bytes.jsonl": (line + "\n" + line[:20] + "\xff" + "\n").encode("latin-1"),
        "json.jsonl": (line + "\n" + '{"custom_id": "2",' + "\n").encode(),
    }
    reasons = {}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        reasons[name] = check_content(tmp_path / name, spec)
    assert reasons["bytes.jsonl"] == "line 2: not valid UTF-8 (byte 21 of the line)"
    assert (reasons["json.jsonl"] or "").startswith("line 2: not valid JSON ("), reasons
