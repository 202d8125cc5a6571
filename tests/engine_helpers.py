"""Shared bits of the end-to-end engine tests: fixture trees, configs, running the CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.emulator_fixture import EmulatorHandle
from tests.helpers_client import BATCH_LINE

KEY_ENV = "SYNCD_TEST_API_KEY"
FAST_RATE = 200
MB = 1024 * 1024

EXTRACT_FORMATS = (
    "txt", "docx", "pdf", "xlsx", "epub", "mobi", "md", "csv", "json",
    "bmp", "png", "jpg", "jpeg", "gif",
)  # fmt: skip


# ------------------------------------------------------------------ running syncd


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str

    @property
    def json(self) -> Any:
        return json.loads(self.stdout)

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def syncd_cmd(command: str, config: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "syncd", command, "-c", str(config), *extra]


def syncd_env(key: str | None, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.pop(KEY_ENV, None)
    if key is not None:
        env[KEY_ENV] = key
    env.update(extra)
    return env


def run_syncd(
    command: str,
    config: Path,
    *extra: str,
    key: str | None,
    timeout: float = 120,
    env: Mapping[str, str] | None = None,
) -> Run:
    proc = subprocess.run(
        syncd_cmd(command, config, *extra),
        env=syncd_env(key, **(env or {})),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return Run(proc.returncode, proc.stdout, proc.stderr)


def reconcile(config: Path, key: str | None, *extra: str, timeout: float = 120) -> Run:
    return run_syncd("reconcile", config, "--json", *extra, key=key, timeout=timeout)


def status(config: Path) -> dict[str, Any]:
    run = run_syncd("status", config, "--json", key=None)
    assert run.returncode in (0, 1), run.output
    data: dict[str, Any] = run.json
    return data


def spawn_reconcile(config: Path, key: str, *, stdout: Any = subprocess.DEVNULL,
                    stderr: Any = subprocess.DEVNULL) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        syncd_cmd("reconcile", config, "--json"), env=syncd_env(key), stdout=stdout,
        stderr=stderr, preexec_fn=_interruptible,
    )


def _interruptible() -> None:
    # A test worker may ignore SIGINT, and an ignored signal stays ignored across exec:
    # give the child the default a person's terminal would give it.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


# ------------------------------------------------------------------ configs


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def write_config(
    where: Path,
    root: Path,
    emulator: EmulatorHandle | str,
    *,
    rate: float = FAST_RATE,
    name: str = "syncd.yaml",
    **sections: Any,
) -> Path:
    """A project YAML pointing at the emulator, with its state under ``where``."""
    url = emulator if isinstance(emulator, str) else emulator.url
    data: dict[str, Any] = {
        "project": "e2e",
        "root": str(root),
        "state_dir": str(where / "state"),
        "mapping_file": str(where / "mapping.json"),
        "api": {"base_url": url, "api_key_env": KEY_ENV, "read_timeout_s": 30},
        "limits": {
            "upload_qps": rate,
            "read_qps": rate,
            "delete_qps": rate,
            "pacing_dir": str(where / "pacing"),
        },
        "logging": {"format": "json", "level": "info"},
    }
    data = _merge(data, sections)
    path = where / name
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), "utf-8")
    return path


def fast_emulator(factory: Callable[..., EmulatorHandle], **flags: Any) -> EmulatorHandle:
    rates = {"upload_rate": FAST_RATE, "read_rate": FAST_RATE, "delete_rate": FAST_RATE}
    return factory(**{**rates, **flags})


# ------------------------------------------------------------------ remote and mapping


def remote_files(emulator: EmulatorHandle, key: str | None = None) -> dict[str, dict[str, Any]]:
    return {f["id"]: f for f in emulator.files(key)}


def name_bytes(files: Mapping[str, Mapping[str, Any]]) -> Counter[tuple[str, int]]:
    return Counter((f["filename"], int(f["bytes"])) for f in files.values())


def read_mapping(path: Path) -> dict[str, dict[str, Any]]:
    files: dict[str, dict[str, Any]] = json.loads(path.read_text("utf-8"))["files"]
    return files


def local_multiset(root: Path, paths: Mapping[str, Any] | list[str]) -> Counter[tuple[str, int]]:
    return Counter((p.rsplit("/", 1)[-1], (root / p).stat().st_size) for p in paths)


def account_files(emulator: EmulatorHandle) -> int:
    """Files in the (only used) account, from the control API; cheap to poll."""
    accounts = emulator.stats()["accounts"]
    return sum(int(a["files"]) for a in accounts.values())


def assert_converged(emulator: EmulatorHandle, root: Path, mapping_path: Path,
                     expected: list[str], *, foreign: set[str] = frozenset()) -> None:  # type: ignore[assignment]
    """The mapping names exactly ``expected``, each with an existing id of its size; the
    remote (minus foreign ids) holds one file per distinct content and purpose
    (identical copies share one), and nothing else."""
    remote = remote_files(emulator)
    ours = {fid: f for fid, f in remote.items() if fid not in foreign}
    mapping = read_mapping(mapping_path)
    assert sorted(mapping) == sorted(expected)
    holders: dict[str, set[str]] = {}
    for path, entry in mapping.items():
        f = remote[entry["file_id"]]
        assert int(f["bytes"]) == entry["bytes"] == (root / path).stat().st_size
        holders.setdefault(entry["file_id"], set()).add(path)
    assert set(holders) == set(ours), "remote files not in the mapping (orphans) or vice versa"
    for file_id, paths in holders.items():
        contents = {((root / p).read_bytes(), mapping[p]["purpose"]) for p in paths}
        # The remote name is the first holder's (a renamed file keeps its remote copy).
        assert len(contents) == 1, f"{sorted(paths)} share {file_id} with different content"
    distinct = {((root / p).read_bytes(), mapping[p]["purpose"]) for p in mapping}
    assert len(distinct) == len(holders), "identical content uploaded twice"


# ------------------------------------------------------------------ fixture trees


def batch_text(n: int, *, model: str = "qwen-plus", url: str = "/v1/chat/completions",
               prefix: str = "req") -> str:
    lines = []
    for i in range(n):
        item = {**BATCH_LINE, "custom_id": f"{prefix}-{i}", "url": url,
                "body": {**BATCH_LINE["body"], "model": model}}  # type: ignore[dict-item]
        lines.append(json.dumps(item, separators=(",", ":")))
    return "\n".join(lines) + "\n"


def _line(custom_id: str, **changes: Any) -> str:
    item: dict[str, Any] = {"custom_id": custom_id, **BATCH_LINE}
    item["body"] = dict(item["body"])
    for k, v in changes.items():
        if k == "model":
            item["body"]["model"] = v
        elif v is None:
            item.pop(k, None)
        else:
            item[k] = v
    return json.dumps(item, separators=(",", ":"))


# Invalid batch files: name -> (content, text the reason must contain).
INVALID_BATCH: dict[str, tuple[str, str]] = {
    "bad-json.jsonl": (_line("a") + "\n" + _line("b") + "\n{not json\n", "line 3"),
    "dup-custom-id.jsonl": (_line("a") + "\n" + _line("b") + "\n" + _line("a") + "\n",
                            "line 3: duplicate custom_id"),
    "method-get.jsonl": (_line("a") + "\n" + _line("b", method="GET") + "\n",
                         "line 2: method must be POST"),
    "bad-url.jsonl": (_line("a", url="/v1/completions") + "\n", "line 1: url"),
    "mixed-urls.jsonl": (_line("a") + "\n" + _line("b", url="/v1/embeddings") + "\n",
                         "line 2: url"),
    "missing-model.jsonl": (_line("a") + "\n" + json.dumps(
        {"custom_id": "b", "method": "POST", "url": "/v1/chat/completions",
         "body": {"messages": []}}) + "\n", "line 2: body must be an object with a model"),
    "mixed-models.jsonl": (_line("a") + "\n" + _line("b", model="qwen-max") + "\n",
                           "line 2: model"),
    "blank-lines-only.jsonl": ("\n\n  \n", "no requests"),
    "empty.jsonl": ("", "empty"),
}


@dataclass
class Tree:
    root: Path
    # Files that must end up on the remote (root-relative posix paths).
    valid: list[str] = field(default_factory=list)
    # Files that must not, with a text their status reason must contain.
    unsynced: dict[str, str] = field(default_factory=dict)


def _content(i: int, ext: str) -> bytes:
    if ext == "json":
        return json.dumps({"n": i, "text": "x" * (i % 37)}).encode()
    if ext == "csv":
        return f"n,square\n{i},{i * i}\n".encode()
    return f"{ext} file {i}\n".encode() + bytes(range(i % 200))


def build_fixture_tree(root: Path, outside: Path, count: int = 500) -> Tree:
    """A tree of at least ``count`` files: every file-extract format in nested folders,
    valid and invalid batch files, oversize files, unsupported and empty files, names with
    spaces and CJK characters, a symlink leaving the root, and excluded temp files."""
    tree = Tree(root)
    root.mkdir(parents=True, exist_ok=True)

    def put(rel: str, data: bytes | str) -> Path:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(data, str):
            data = data.encode()
        path.write_bytes(data)
        return path

    # Valid batch files.
    for i in range(5):
        rel = f"batch/good-{i}.jsonl"
        put(rel, batch_text(3 + i, model="qwen-plus" if i % 2 else "qwen-max",
                            url="/v1/embeddings" if i == 4 else "/v1/chat/completions"))
        tree.valid.append(rel)
    for name, (text, reason) in INVALID_BATCH.items():
        rel = f"batch/invalid/{name}"
        put(rel, text)
        tree.unsynced[rel] = reason

    # Oversize: a sparse 151 MB document and a 21 MB image.
    big = root / "big" / "huge report.pdf"
    big.parent.mkdir(parents=True)
    with big.open("wb") as fh:
        fh.truncate(151 * MB)
    tree.unsynced["big/huge report.pdf"] = "150.0 MiB limit"
    with (root / "big" / "poster.png").open("wb") as fh:
        fh.truncate(21 * MB)
    tree.unsynced["big/poster.png"] = "20.0 MiB limit"

    put("misc/tool.exe", b"MZ")
    tree.unsynced["misc/tool.exe"] = "unsupported extension .exe"
    put("misc/no extension", b"data")
    tree.unsynced["misc/no extension"] = "unsupported extension"
    put("misc/empty.txt", b"")
    tree.unsynced["misc/empty.txt"] = "empty"

    (outside / "secret.txt").parent.mkdir(parents=True, exist_ok=True)
    (outside / "secret.txt").write_text("outside the root\n")
    (root / "misc" / "escape.txt").symlink_to(outside / "secret.txt")
    tree.unsynced["misc/escape.txt"] = "outside the root"

    # Excluded by the default rules: never recorded, never uploaded.
    put("misc/download.part", b"partial")
    put("misc/.hidden.txt", b"hidden")
    put(".git/config.txt", b"x")

    # Same basename and size in two folders: both must be uploaded.
    for folder in ("alpha", "beta"):
        put(f"{folder}/README.md", b"# same\n")
        tree.valid.append(f"{folder}/README.md")

    specials = ["名单 2024.csv", "报告/季度 总结.docx", "with space/my notes.txt",
                "deep/a/b/c/d/e/leaf.md", "中文目录/图像 一.png"]
    for i, rel in enumerate(specials):
        put(rel, _content(1000 + i, rel.rsplit(".", 1)[-1]))
        tree.valid.append(rel)

    i = 0
    while len(tree.valid) + len(tree.unsynced) < count:
        ext = EXTRACT_FORMATS[i % len(EXTRACT_FORMATS)]
        rel = f"docs/d{i % 7}/sub{i % 3}/file-{i:04d}.{ext}"
        put(rel, _content(i, ext))
        tree.valid.append(rel)
        i += 1
    return tree


def build_flat_tree(root: Path, count: int, *, prefix: str = "f", ext: str = "txt",
                    folders: int = 10) -> list[str]:
    """``count`` tiny distinct files spread over a few folders."""
    out = []
    for i in range(count):
        rel = f"d{i % folders}/{prefix}-{i:05d}.{ext}"
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(f"{prefix} {i}\n".encode())
        out.append(rel)
    return out


def files_under(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
