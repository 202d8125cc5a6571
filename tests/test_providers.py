"""Provider profiles end to end: OpenAI against the emulator's OpenAI flavour, and the
generic profile against a keyless, OpenAI-compatible server whose errors are
``{"detail": ...}`` (the emulator's OpenAI flavour behind a small loopback front that
adds the emulator's key and refuses some names the way such servers do).
"""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from syncd.api.client import FilesClient
from syncd.api.errors import NotFoundError
from syncd.api.key import ApiKey
from syncd.api.options import ClientOptions
from syncd.api.providers import OPENAI
from syncd.bootstrap import open_syncer
from syncd.config import ConfigError, load_config, parse_config
from syncd.engine.accepts import check_file
from syncd.engine.sync import RunReport
from tests.emulator_fixture import EmulatorHandle
from tests.engine_helpers import (
    KEY_ENV,
    MB,
    fast_emulator,
    read_mapping,
    remote_files,
    run_syncd,
    write_config,
)

Factory = Callable[..., EmulatorHandle]

def _line(cid: str, url: str = "/v1/responses") -> str:
    return json.dumps({"custom_id": cid, "method": "POST", "url": url,
                       "body": {"model": "gpt-4o-mini", "input": "hi"}}) + "\n"


# Path -> (content, purpose) of a tree using every OpenAI purpose, with files DashScope
# would refuse (.py, no extension, a .jsonl under assistants).
OPENAI_TREE: dict[str, tuple[bytes, str]] = {
    "docs/readme.md": (b"# readme\n", "assistants"),
    "docs/tool.py": (b"print('hi')\n", "assistants"),
    "docs/LICENSE": (b"MIT\n", "assistants"),
    "docs/log.jsonl": (b'{"free": "form"}\n', "assistants"),
    "images/cat.png": (b"\x89PNG fake", "vision"),
    "data/table.csv": (b"a,b\n1,2\n", "user_data"),
    "batch/requests.jsonl": ((_line("1") + _line("2")).encode(), "batch"),
    "tune/train.jsonl": (b'{"messages": []}\n', "fine-tune"),
    "evals/cases.jsonl": (b'{"item": 1}\n', "evals"),
}
OPENAI_PURPOSES = [
    {"match": "batch/**", "purpose": "batch"},
    {"match": "tune/**", "purpose": "fine-tune"},
    {"match": "evals/**", "purpose": "evals"},
    {"match": "images/**", "purpose": "vision"},
    {"match": "data/**", "purpose": "user_data"},
    {"match": "**", "purpose": "assistants"},
]


def _write(root: Path, files: dict[str, bytes]) -> None:
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)


def assert_mirrors(emu: EmulatorHandle, root: Path, mapping_path: Path,
                   expected: list[str]) -> None:
    """The mapping names exactly ``expected``, each with a live remote file of its size and
    content hash; the remote holds nothing else. (Identical content may share one remote
    file, named after the path first uploaded, so names are not compared.)"""
    remote = remote_files(emu)
    mapping = read_mapping(mapping_path)
    assert sorted(mapping) == sorted(expected)
    for path, entry in mapping.items():
        local = (root / path).read_bytes()
        assert entry["sha256"] == hashlib.sha256(local).hexdigest(), path
        assert int(remote[entry["file_id"]]["bytes"]) == len(local), path
    assert {m["file_id"] for m in mapping.values()} == set(remote), "orphans on the remote"


def _reconcile(config_path: Path) -> RunReport:
    syncer = open_syncer(load_config(config_path))
    try:
        return syncer.reconcile()
    finally:
        syncer.close()


def test_openai_every_purpose_syncs_edits_deletes_moves_converge(
        emulator_factory: Factory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    emu = fast_emulator(emulator_factory, flavor="openai")
    monkeypatch.setenv(KEY_ENV, emu.api_key)
    root = tmp_path / "root"
    _write(root, {rel: content for rel, (content, _p) in OPENAI_TREE.items()})
    # Over OpenAI's 512 MB cap: refused here, never sent.
    with (root / "docs" / "huge.bin").open("wb") as fh:
        fh.truncate(600 * MB)
    cfg = write_config(tmp_path, root, emu.url, api={"provider": "openai"},
                       rules={"purposes": OPENAI_PURPOSES})

    report = _reconcile(cfg)
    assert set(report.unsynced) == {"docs/huge.bin"}
    status, reason = report.unsynced["docs/huge.bin"]
    assert status == "invalid" and "512.0 MiB limit" in reason, reason
    assert emu.stats()["requests"].get("upload", 0) == len(OPENAI_TREE)
    expected = sorted(OPENAI_TREE)
    assert_mirrors(emu, root, tmp_path / "mapping.json", expected)
    remote = remote_files(emu)
    mapping = read_mapping(tmp_path / "mapping.json")
    assert {p: remote[m["file_id"]]["purpose"] for p, m in mapping.items()} == {
        p: purpose for p, (_c, purpose) in OPENAI_TREE.items()}
    assert {m["purpose"] for m in mapping.values()} == set(OPENAI.purposes)
    assert all(m["file_id"].startswith("file-") for m in mapping.values())
    first = {p: m["file_id"] for p, m in mapping.items()}

    # Edit, delete, move (across purposes: user_data -> assistants), and a second run.
    (root / "docs" / "tool.py").write_bytes(b"print('edited')\n")
    (root / "evals" / "cases.jsonl").unlink()
    (root / "docs" / "table.csv").write_bytes((root / "data" / "table.csv").read_bytes())
    (root / "data" / "table.csv").unlink()
    (root / "batch" / "requests.jsonl").rename(root / "batch" / "renamed.jsonl")
    report = _reconcile(cfg)
    assert set(report.unsynced) == {"docs/huge.bin"}
    expected = sorted({*OPENAI_TREE, "docs/table.csv", "batch/renamed.jsonl"}
                      - {"evals/cases.jsonl", "data/table.csv", "batch/requests.jsonl"})
    assert_mirrors(emu, root, tmp_path / "mapping.json", expected)
    mapping = read_mapping(tmp_path / "mapping.json")
    assert mapping["docs/tool.py"]["file_id"] != first["docs/tool.py"]
    assert mapping["docs/table.csv"]["purpose"] == "assistants"
    assert mapping["batch/renamed.jsonl"]["purpose"] == "batch"
    assert mapping["docs/readme.md"]["file_id"] == first["docs/readme.md"]
    # Replaced and removed versions are deleted (a move with the same purpose may keep its
    # remote file; one to another purpose is a new upload).
    gone = {first[p] for p in ("docs/tool.py", "evals/cases.jsonl", "data/table.csv")}
    assert not gone & set(remote_files(emu))

    # A third run has nothing to do.
    report = _reconcile(cfg)
    assert (report.outcome.uploaded, report.outcome.deleted) == (0, 0)


def test_check_config_names_the_purposes_of_the_provider(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    cfg = write_config(tmp_path, root, "http://127.0.0.1:9/v1",
                       rules={"purposes": [{"match": "**", "purpose": "assistants"}]})
    refused = run_syncd("check-config", cfg, key="sk-x")
    assert refused.returncode == 2, refused.output
    assert "rules.purposes[0].purpose" in refused.stderr
    assert "'assistants' is not a purpose of provider dashscope" in refused.stderr
    cfg = write_config(tmp_path, root, "http://127.0.0.1:9/v1", api={"provider": "openai"},
                       rules={"purposes": [{"match": "**", "purpose": "file-extract"}]})
    refused = run_syncd("check-config", cfg, key="sk-x")
    assert refused.returncode == 2, refused.output
    assert "expected one of assistants, batch, fine-tune" in refused.stderr


# ------------------------------------------------------------------ a keyless server


class KeylessFront:
    """A keyless OpenAI-compatible Files server, made of the emulator (OpenAI flavour)
    and this loopback front: it takes requests without a key, forwards them with the
    emulator's key, and refuses uploads named ``*.refused`` with a plain
    ``{"detail": ...}`` body, as some self-hosted servers word their errors."""

    DETAIL = "this server does not take .refused files (policy 7)"

    def __init__(self, emu: EmulatorHandle) -> None:
        self.upstream = httpx.Client(base_url=emu.root_url, timeout=60,
                                     headers={"Authorization": f"Bearer {emu.api_key}"})
        self.keyed_requests = 0
        self.requests = 0
        front = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_args: Any) -> None:
                pass

            def _forward(self) -> None:
                front.requests += 1
                if self.headers.get("Authorization"):
                    front.keyed_requests += 1
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                if self.command == "POST" and b'.refused"' in body:
                    out = json.dumps({"detail": front.DETAIL}).encode()
                    self._answer(400, {"content-type": "application/json"}, out)
                    return
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() in ("content-type",)}
                r = front.upstream.request(self.command, self.path, content=body,
                                           headers=headers)
                keep = {k: v for k, v in r.headers.items()
                        if k.lower() in ("content-type", "date", "x-request-id")}
                self._answer(r.status_code, keep, r.content)

            def _answer(self, status: int, headers: dict[str, str], body: bytes) -> None:
                self.send_response_only(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_DELETE = _forward

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.upstream.close()


@pytest.fixture
def keyless(emulator_factory: Factory) -> Iterator[tuple[KeylessFront, EmulatorHandle]]:
    emu = fast_emulator(emulator_factory, flavor="openai")
    front = KeylessFront(emu)
    yield front, emu
    front.close()


def _generic_config(tmp_path: Path, root: Path, url: str) -> Path:
    cfg = write_config(tmp_path, root, url, api={"provider": "generic", "list_page_size": 10000},
                       rules={"purposes": [{"match": "**", "purpose": "assistants"}]})
    # No key anywhere: the config names none.
    data = yaml.safe_load(cfg.read_text("utf-8"))
    del data["api"]["api_key_env"]
    cfg.write_text(yaml.safe_dump(data, sort_keys=False), "utf-8")
    return cfg


def test_generic_without_key_passes_check_config_and_converges(
        keyless: tuple[KeylessFront, EmulatorHandle], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    front, emu = keyless
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv(KEY_ENV, raising=False)
    root = tmp_path / "root"
    files = {f"src/mod{i}.py": f"x = {i}\n".encode() for i in range(30)}
    files |= {"data/rows.jsonl": b"not even json\n", "README": b"readme\n", "a.md": b"# a\n"}
    _write(root, files)
    cfg = _generic_config(tmp_path, root, front.url)
    env = {"OPENAI_API_KEY": ""}

    checked = run_syncd("check-config", cfg, "--online", key=None, env=env)
    assert checked.returncode == 0, checked.output
    assert "ok" in checked.stdout

    report = _reconcile(cfg)
    assert report.exit_code == 0, report.errors
    assert_mirrors(emu, root, tmp_path / "mapping.json", sorted(files))
    # Moves and deletes converge too.
    (root / "src" / "mod0.py").rename(root / "moved.py")
    (root / "README").unlink()
    report = _reconcile(cfg)
    assert report.exit_code == 0, report.errors
    expected = sorted({*files, "moved.py"} - {"src/mod0.py", "README"})
    assert_mirrors(emu, root, tmp_path / "mapping.json", expected)
    assert front.requests > 0 and front.keyed_requests == 0


def test_generic_without_key_against_a_server_wanting_one_says_none_is_configured(
        emulator_factory: Factory, tmp_path: Path) -> None:
    emu = fast_emulator(emulator_factory, flavor="openai")  # answers 401 to no key
    root = tmp_path / "root"
    _write(root, {"a.txt": b"hi\n"})
    cfg = _generic_config(tmp_path, root, emu.url)
    line = next(i for i, t in enumerate(cfg.read_text("utf-8").splitlines(), 1)
                if t.strip() == "provider: generic")
    needed = ("the server requires an API key and none is configured: "
              "set api.api_key_env or api.api_key_file")
    env = {"OPENAI_API_KEY": ""}

    checked = run_syncd("check-config", cfg, "--online", key=None, env=env)
    assert checked.returncode == 2, checked.output
    assert f"{cfg}:{line}: api.provider: {needed}" in checked.stderr, checked.output
    run = run_syncd("reconcile", cfg, key=None, env=env)
    assert run.returncode == 2, run.output
    assert needed in run.stderr and f"{cfg}:{line}: api.provider" in run.stderr, run.output
    for got in (checked, run):
        assert "api_key_env:" not in got.stderr and "no key configured" not in got.stderr
    assert not (tmp_path / "mapping.json").exists()

    # A variable named but unset is said as such, at its line.
    data = yaml.safe_load(cfg.read_text("utf-8"))
    data["api"]["api_key_env"] = "SYNCD_UNSET_KEY"
    cfg.write_text(yaml.safe_dump(data, sort_keys=False), "utf-8")
    line = next(i for i, t in enumerate(cfg.read_text("utf-8").splitlines(), 1)
                if t.strip().startswith("api_key_env:"))
    checked = run_syncd("check-config", cfg, "--online", key=None,
                        env={**env, "SYNCD_UNSET_KEY": ""})
    assert checked.returncode == 2, checked.output
    assert (f"{cfg}:{line}: api.api_key_env: the server requires an API key and "
            "SYNCD_UNSET_KEY (api.api_key_env) is not set") in checked.stderr, checked.output


def test_a_detail_error_body_reaches_the_report_and_status(
        keyless: tuple[KeylessFront, EmulatorHandle], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    front, emu = keyless
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    root = tmp_path / "root"
    _write(root, {"ok.txt": b"fine\n", "bad.refused": b"no\n"})
    cfg = _generic_config(tmp_path, root, front.url)

    report = _reconcile(cfg)
    assert report.exit_code == 1
    status, reason = report.unsynced["bad.refused"]
    assert status == "invalid" and front.DETAIL in reason, reason
    assert_mirrors(emu, root, tmp_path / "mapping.json", ["ok.txt"])

    shown = run_syncd("status", cfg, key=None, env={"OPENAI_API_KEY": ""})
    assert front.DETAIL in shown.stdout, shown.output
    as_json = run_syncd("status", cfg, "--json", key=None, env={"OPENAI_API_KEY": ""})
    rows = {r["path"]: r for r in json.loads(as_json.stdout)["not_synced"]}
    assert front.DETAIL in rows["bad.refused"]["reason"]
    assert os.environ.get(KEY_ENV) is None


def test_each_profile_sets_its_defaults_and_the_project_cap_applies(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    base = f"project: p\nroot: {root}\nstate_dir: {tmp_path / 'state'}\n"
    dashscope = parse_config(base)
    assert dashscope.api.api_key_env == "DASHSCOPE_API_KEY"
    assert dashscope.api.profile.list_page_size == 2000
    assert [r.purpose for r in dashscope.rules.purposes] == ["batch", "file-extract"]
    openai = parse_config(base + "api:\n  provider: openai\n  base_url: http://h/v1\n")
    assert openai.api.api_key_env == "OPENAI_API_KEY"
    assert openai.api.profile.list_page_size == 10_000
    assert openai.limits.max_bytes > dashscope.limits.max_bytes
    assert [r.purpose for r in openai.rules.purposes] == ["assistants"]
    generic = parse_config(
        base + "api:\n  provider: generic\n  base_url: http://h/v1\n  list_page_size: 50000\n"
        "rules:\n  max_file_bytes: 1KB\n  purposes: [{match: '**', purpose: my-own}]\n")
    assert generic.api.api_key_env is None
    assert generic.api.profile.list_page_size == 50_000
    (rule,) = generic.rules.purposes
    assert check_file("x.anything", rule, 1024) is None
    assert check_file("empty", rule, 0) is None
    reason = check_file("big.bin", rule, 1025)
    assert reason is not None and "rules.max_file_bytes" in reason
    with pytest.raises(ConfigError, match="at most 2000 for provider dashscope"):
        parse_config(base + "api:\n  list_page_size: 5000\n")
    with pytest.raises(ConfigError, match="embedded emulator speaks dashscope"):
        parse_config(base + "api:\n  provider: openai\n")


def test_expiry_is_read_from_file_objects_and_an_expired_file_is_gone(
        emulator_factory: Factory, tmp_path: Path) -> None:
    emu = fast_emulator(emulator_factory, flavor="openai")
    batch = tmp_path / "requests.jsonl"
    batch.write_text(_line("1"), "utf-8")
    doc = tmp_path / "notes.txt"
    doc.write_text("notes", "utf-8")
    with FilesClient(emu.url, ApiKey(emu.api_key), ClientOptions(), provider=OPENAI) as client:
        up = client.upload(batch, "batch")
        kept = client.upload(doc, "assistants")
        thirty_days = 30 * 24 * 3600
        assert up.expires_at == up.created_at + thirty_days and kept.expires_at is None
        assert client.retrieve(up.id).expires_at == up.expires_at
        assert {f.id: f.expires_at for f in client.list_files()} == {
            up.id: up.expires_at, kept.id: None}
        assert not up.expired(up.created_at) and up.expired(up.created_at + thirty_days)
        # Within a margin before the deadline it already counts as expiring.
        assert up.expired(up.created_at + thirty_days - 3600, margin_s=7200)
        assert not kept.expired(float("inf"))
        # Once expired, it is gone from the listing and retrieve says not found: a
        # confirmed absence, not a listing gap.
        assert emu.expire(up.id) == 1
        assert [f.id for f in client.list_files()] == [kept.id]
        with pytest.raises(NotFoundError):
            client.retrieve(up.id)
