"""Shared bits of the kill -9 tests: a tree that changes between crashes, killing a
process at a seeded moment, and the full check of remote, mapping and state afterwards.

The check goes by content, not by name and size: every remote file of the (dedicated)
account is fetched, so a mapping that points a path at a look-alike upload is caught.
"""

from __future__ import annotations

import hashlib
import json
import random
import sqlite3
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.emulator_fixture import EmulatorHandle
from tests.engine_helpers import read_mapping

RATE = 200


def crash_emulator(factory: Callable[..., EmulatorHandle], key: str, seed: int) -> EmulatorHandle:
    """50-100 ms per request, 5 % of responses lost after the upload was stored, and an
    account of its own so every remote file of the key is ours."""
    return factory(api_keys=[key], seed=seed, latency_ms=50, jitter_ms=50,
                   drop_after_store=0.05, upload_rate=RATE, read_rate=RATE, delete_rate=RATE)


def traffic(emulator: EmulatorHandle) -> int:
    """Upload and delete requests the emulator has received (whatever their outcome)."""
    requests = emulator.stats()["requests"]
    return int(requests["upload"]) + int(requests["delete"])


def requests_seen(emulator: EmulatorHandle) -> int:
    """Every API request the emulator has received, of any class."""
    return sum(int(n) for n in emulator.stats()["requests"].values())


def pause(proc: subprocess.Popen[bytes], seconds: float) -> bool:
    """Let ``proc`` run for ``seconds``; False if it exited meanwhile."""
    try:
        proc.wait(timeout=max(seconds, 0.0))
    except subprocess.TimeoutExpired:
        return True
    return False


def run_until(proc: subprocess.Popen[bytes], cond: Callable[[], bool], timeout: float,
              interval: float = 0.02) -> bool:
    """Let ``proc`` run until ``cond`` holds or ``timeout`` passes; False if it exited."""
    deadline = time.monotonic() + timeout
    while not cond() and time.monotonic() < deadline:
        if not pause(proc, interval):
            return False
    return proc.poll() is None


def kill9(proc: subprocess.Popen[bytes]) -> bool:
    """SIGKILL ``proc`` if it still runs; True if it was killed (not already gone)."""
    if proc.poll() is not None:
        return False
    proc.kill()
    proc.wait(timeout=30)
    return proc.returncode == -9


# ------------------------------------------------------------------ a tree that changes


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class CrashTree:
    """Small files under ``root``: most with unique names, some pairs alike in name and
    size (different folders, different content), some copies of others (identical
    content shares one remote file), edited in place (same size or not), deleted,
    created, copied, renamed and re-created between or during crashes.

    ``names`` keeps every file name each content has had: a remote file keeps the name
    it was uploaded under when its content moves or is copied to another path."""

    root: Path
    rng: random.Random
    files: dict[str, bytes] = field(default_factory=dict)
    serial: int = 0
    changes: Counter[str] = field(default_factory=Counter)
    names: dict[str, set[str]] = field(default_factory=dict)

    def _content(self, rel: str, size: int | None = None) -> bytes:
        self.serial += 1
        head = f"{rel} #{self.serial}\n".encode()
        size = size if size is not None else len(head) + self.rng.randint(0, 400)
        body = bytes(self.rng.getrandbits(8) for _ in range(max(size - len(head), 0)))
        data = (head + body)[:size]
        # Same size and same head would make two versions equal; the serial differs.
        return data

    def put(self, rel: str, data: bytes) -> None:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".part")  # excluded by the default rules
        tmp.write_bytes(data)
        tmp.replace(path)
        self.files[rel] = data
        self.names.setdefault(sha(data), set()).add(path.name)

    def populate(self, count: int, twins: int = 10, copies: int = 20) -> None:
        for i in range(twins):
            size = 64 + i
            for folder in ("alpha", "beta"):
                rel = f"{folder}/team-{i:02d}/notes.txt"
                self.put(rel, self._content(rel, size))
        while len(self.files) < count - copies:
            self.create()
        for _ in range(copies):
            self.copy()
        self.changes.clear()

    def create(self) -> str:
        rel = f"d{self.serial % 12}/f-{self.serial:05d}.txt"
        self.put(rel, self._content(rel))
        self.changes["create"] += 1
        return rel

    def _pick(self) -> str:
        return self.rng.choice(sorted(self.files))

    def edit(self) -> str:
        rel = self._pick()
        same_size = self.rng.random() < 0.5
        self.put(rel, self._content(rel, len(self.files[rel]) if same_size else None))
        self.changes["edit same size" if same_size else "edit"] += 1
        return rel

    def delete(self) -> str:
        rel = self._pick()
        (self.root / rel).unlink()
        del self.files[rel]
        self.changes["delete"] += 1
        return rel

    def rename(self) -> str:
        rel = self._pick()
        new = f"moved/{rel.replace('/', '-')}"
        if new in self.files:
            return self.edit()
        (self.root / new).parent.mkdir(parents=True, exist_ok=True)
        (self.root / rel).rename(self.root / new)
        self.files[new] = self.files.pop(rel)
        self.names[sha(self.files[new])].add(Path(new).name)
        self.changes["rename"] += 1
        return new

    def copy(self) -> str:
        """A new path with the content of an existing one, as `cp` makes it."""
        data = self.files[self._pick()]
        self.serial += 1
        rel = f"copies/c{self.serial:05d}.txt"
        self.put(rel, data)
        self.changes["copy"] += 1
        return rel

    def recreate(self) -> str:
        """Delete a file and put a new version under the same path at once."""
        rel = self.delete()
        self.put(rel, self._content(rel))
        self.changes["recreate"] += 1
        return rel

    def mutate(self, n: int) -> None:
        actions = [self.edit, self.edit, self.delete, self.create, self.copy, self.rename,
                   self.recreate]
        for _ in range(n):
            self.rng.choice(actions)()


# ------------------------------------------------------------------ the check


def fetch_contents(emulator: EmulatorHandle, key: str, ids: list[str]) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    with httpx.Client(base_url=emulator.url, headers={"Authorization": f"Bearer {key}"},
                      timeout=30) as client:
        for file_id in ids:
            response = client.get(f"/files/{file_id}/content")
            response.raise_for_status()
            out[file_id] = response.content
    return out


def local_files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in root.rglob("*") if p.is_file()}


def integrity(db_path: Path) -> str:
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        return ";".join(str(row[0]) for row in db.execute("PRAGMA integrity_check"))
    finally:
        db.close()


def check_claims(pacing_dir: Path, mapping_path: Path) -> int:
    """The host-wide claims registry (the other SQLite file a kill can hit) is intact and
    claims every mapped id for this project; returns how many claimed ids are no longer
    mapped (a kill between a delete and its release leaves those; they do no harm)."""
    (db_path,) = pacing_dir.glob("*-claims.sqlite3")
    assert integrity(db_path) == "ok"
    owner = json.loads(mapping_path.read_text("utf-8"))["owner"]
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT file_id, owner FROM claims").fetchall()
    finally:
        db.close()
    claimed = {fid for fid, who in rows if who == owner}
    assert {who for _, who in rows} <= {owner}, "ids claimed for a project that does not exist"
    mapped = {entry["file_id"] for entry in read_mapping(mapping_path).values()}
    assert mapped <= claimed, f"mapped ids nobody claims: {sorted(mapped - claimed)[:10]}"
    return len(claimed - mapped)


def assert_mirrored(emulator: EmulatorHandle, key: str, tree: CrashTree, mapping_path: Path,
                    state_dir: Path) -> int:
    """Each local file is on the remote exactly once (identical content of one purpose
    shares one file; returns how many extra copies of shared content there are), under a
    name that content has had; the mapping lists
    every local path, with an id that serves that path's content, and names every remote
    file (no orphans); SQLite is intact. Needs the emulator's latency and rate limit off
    (it fetches every file)."""
    local = local_files(tree.root)
    assert local == tree.files, "the test's own record of the tree drifted from the disk"
    remote = {f["id"]: f for f in emulator.truth_files(key)}
    contents = fetch_contents(emulator, key, sorted(remote))

    paths_of = Counter(sha(data) for data in local.values())
    want = set(paths_of)
    have = Counter(sha(data) for data in contents.values())
    # A file is never uploaded twice. Copies (one content, several paths) should share
    # one remote file too, but after a crash they may not yet: counted by the caller
    # (see test_copy_of_a_file_adopted_after_a_kill_shares_its_remote_file).
    twice = sorted(h for h, n in have.items() if n > 1 and paths_of[h] == 1)
    assert not twice, f"{len(twice)} files stored more than once (duplicates): {twice[:5]}"
    over = sorted(h for h, n in have.items() if n > paths_of[h])
    assert not over, f"{len(over)} contents stored more often than paths hold them: {over[:5]}"
    missing, extra = sorted(want - set(have)), sorted(set(have) - want)
    assert not missing and not extra, (
        f"{len(remote)} remote files for {len(want)} distinct local contents; "
        f"{len(missing)} missing {missing[:5]}; {len(extra)} stale or foreign {extra[:5]}")
    misnamed = sorted(f["filename"] for fid, f in remote.items()
                      if f["filename"] not in tree.names[sha(contents[fid])])
    assert not misnamed, f"remote names no path with that content ever had: {misnamed[:10]}"

    mapping = read_mapping(mapping_path)
    assert sorted(mapping) == sorted(local), (
        f"mapping lacks {sorted(set(local) - set(mapping))[:10]}, "
        f"has stale {sorted(set(mapping) - set(local))[:10]}")
    ids = {entry["file_id"] for entry in mapping.values()}
    orphans = sorted(set(remote) - ids)
    assert not orphans, f"{len(orphans)} remote files no path maps to: {orphans[:10]}"
    dangling = sorted(ids - set(remote))
    assert not dangling, f"mapping names {len(dangling)} deleted ids: {dangling[:10]}"
    wrong = sorted(rel for rel, entry in mapping.items()
                   if contents[entry["file_id"]] != local[rel]
                   or entry["bytes"] != len(local[rel]) or entry["sha256"] != sha(local[rel]))
    assert not wrong, f"{len(wrong)} paths mapped to an id with other content: {wrong[:10]}"
    assert integrity(state_dir / "state.sqlite3") == "ok"
    return sum(n - 1 for n in have.values())


def quiet(emulator: EmulatorHandle) -> dict[str, Any]:
    """No latency, no faults, no rate limit: for the checks that fetch everything."""
    return emulator.configure(latency_ms=0, jitter_ms=0, drop_after_store=0, rate_limit=False)
