"""The upload bandwidth cap: the byte bucket's rule, its sharing, the config key and the
--bwlimit flag, a capped reconcile end to end, and the emulator's shaped link."""

from __future__ import annotations

import heapq
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from hypothesis import given, settings
from hypothesis import strategies as st

from syncd.api.bandwidth import BURST_S, piece_bytes, pieces, reserve
from syncd.api.byte_pacer import BytePacer
from syncd.api.pacing_state import ClassState
from syncd.api.pacing_store import FileStore, MemoryStore, PacingDir
from tests.emulator_fixture import EmulatorHandle
from tests.engine_helpers import (
    assert_converged,
    fast_emulator,
    reconcile,
    run_syncd,
    write_config,
)

MiB = 1024 * 1024


def _simulate(
    rate: float, holders: list[tuple[int, float]], total: int, most: int = 4000
) -> list[tuple[float, float, int, int]]:
    """Holders ``(piece, think)`` asking in turn on a simulated clock, each asking its next
    piece ``think`` s after writing the last, until ``total`` bytes (or ``most`` pieces)
    went out. Returns the writes as (asked, written, holder, bytes)."""
    state = ClassState()
    asks = [(0.0, i) for i in range(len(holders))]
    heapq.heapify(asks)
    sent: list[tuple[float, float, int, int]] = []
    done = 0
    while done < total and len(sent) < most:
        now, who = heapq.heappop(asks)
        piece, think = holders[who]
        wait = reserve(state, now, piece, rate)
        sent.append((now, now + wait, who, piece))
        done += piece
        heapq.heappush(asks, (now + wait + think, who))
    return sent


def _busiest(sent: list[tuple[float, float, int, int]], window: float) -> int:
    """Most bytes written in any ``window`` seconds (windows start at a write)."""
    times = sorted((t, n) for _, t, _, n in sent)
    best, j, inside = 0, 0, 0
    for t, n in times:
        inside += n
        while times[j][0] <= t - window:
            inside -= times[j][1]
            j += 1
        best = max(best, inside)
    return best


@settings(max_examples=60, deadline=None)
@given(
    rate=st.floats(min_value=4096, max_value=64 * MiB),
    holders=st.lists(
        st.tuples(st.integers(min_value=1, max_value=128 * 1024),
                  st.floats(min_value=0.0, max_value=0.2)),
        min_size=1, max_size=4,
    ),
    window=st.floats(min_value=0.5, max_value=10.0),
)  # fmt: skip
def test_grants_never_exceed_the_cap_over_a_window(
    rate: float, holders: list[tuple[int, float]], window: float
) -> None:
    sent = _simulate(rate, holders, total=int(rate * 2 * window))
    largest = max(p for p, _ in holders)
    assert _busiest(sent, window) <= rate * (window + BURST_S) + largest


@given(n=st.integers(min_value=0, max_value=10 * MiB), rate=st.floats(1024, 1e9))
def test_a_big_request_is_split_into_pieces(n: int, rate: float) -> None:
    piece = piece_bytes(rate)
    assert 4096 <= piece <= 256 * 1024
    parts = list(pieces(n, piece))
    assert sum(parts) == n and all(0 < p <= piece for p in parts)


def test_metered_body_is_the_same_bytes_in_pieces_and_each_is_paid() -> None:
    store = MemoryStore()
    # A stopped clock: the bucket's due time then says how many bytes were granted.
    pacer = BytePacer(64 * MiB, store, clock=lambda: 0.0, sleep=lambda _s: None)
    body = [b"head" * 50, bytes(range(256)) * 4096, b"tail"]  # small, 1 MiB, small
    out = list(pacer.metered(iter(body)))
    assert b"".join(out) == b"".join(body)
    assert max(len(p) for p in out) <= pacer.piece < len(body[1])
    granted = (store.update(lambda held: held.state.bytes_due, lambda: 0.0) + BURST_S) * pacer.rate
    # Every byte is granted, the small chunks' with the next piece, or owed (less than a
    # piece) until the next grant.
    owed = sum(map(len, body)) - round(granted)
    assert owed == len(b"tail")


def test_two_holders_share_and_a_small_one_is_not_starved() -> None:
    rate = 20 * MiB
    piece = piece_bytes(rate)
    # Two big uploads asking piece after piece for 20 s of the cap, and a small file
    # asked for every second meanwhile.
    sent = _simulate(rate, [(piece, 0.0), (piece, 0.0), (1000, 1.0)], int(rate * 20), 10**5)
    big = [sum(n for _, _, w, n in sent if w == who) for who in (0, 1)]
    # Equal shares, but for the idle bucket's burst the first to ask took alone.
    assert abs(big[0] - big[1]) <= rate * BURST_S + 2 * piece
    span = max(t for _, t, _, _ in sent) + piece / rate
    assert sum(n for *_, n in sent) / span >= 0.95 * rate
    small = [t - asked for asked, t, w, _ in sent if w == 2]
    assert len(small) >= 15
    # It waits for the pieces already granted (about one per big upload), not for either
    # whole upload (seconds at this cap).
    assert max(small[1:]) <= 3 * piece / rate


def test_processes_on_one_pacing_folder_share_one_cap(tmp_path: Path) -> None:
    rate, each = 4 * MiB, 1 * MiB
    folder = PacingDir(tmp_path / "pacing")
    pacers = [BytePacer(rate, FileStore(folder, "k-upload-bytes")) for _ in range(2)]
    started = time.monotonic()

    def send(pacer: BytePacer) -> None:
        for n in pieces(each, pacer.piece):
            pacer.take(n)

    threads = [threading.Thread(target=send, args=(p,)) for p in pacers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    took = time.monotonic() - started
    # 2 MiB at 4 MiB/s: at least half a second, less the burst and one piece.
    assert took >= 2 * each / rate - BURST_S - pacers[0].piece / rate
    for p in pacers:
        p.close()
    folder.close()


def test_a_bad_cap_names_the_key_and_line(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("project: p\nroot: ./root\nstate_dir: ./state\n"
                   "limits:\n  workers: 4\n  upload_bytes_per_s: fast\n", "utf-8")  # fmt: skip
    run = run_syncd("check-config", cfg, key="sk-test-1")
    assert run.returncode == 2 and f"{cfg}:6: limits.upload_bytes_per_s:" in run.stderr, run.output
    cfg.write_text("project: p\nroot: ./root\nstate_dir: ./state\n"
                   "limits:\n  upload_bytes_per_s: 100\n", "utf-8")  # fmt: skip
    run = run_syncd("check-config", cfg, key="sk-test-1")
    assert run.returncode == 2 and f"{cfg}:5: limits.upload_bytes_per_s:" in run.stderr, run.output
    flag = run_syncd("reconcile", cfg, "--bwlimit", "fast", key="sk-test-1")
    assert flag.returncode == 2 and "--bwlimit" in flag.stderr, flag.output


def test_a_capped_reconcile_takes_the_time_the_cap_implies(
    tmp_path: Path, emulator_factory: Callable[..., EmulatorHandle]
) -> None:
    emu = fast_emulator(emulator_factory)
    root = tmp_path / "root"
    root.mkdir()
    sizes = [3 * MiB, 1 * MiB, 1 * MiB] + [100 * 1024] * 10
    names = [f"f{i:02}.txt" for i in range(len(sizes))]
    for i, (name, size) in enumerate(zip(names, sizes, strict=True)):
        (root / name).write_bytes(bytes([65 + i]) * size)
    cfg = write_config(tmp_path, root, emu)
    started = time.monotonic()
    run = reconcile(cfg, emu.api_key, "--bwlimit", "2MB", timeout=120)
    took = time.monotonic() - started
    assert run.returncode == 0, run.output
    assert_converged(emu, root, tmp_path / "mapping.json", names)
    rate = 2 * MiB
    # Every byte of the bodies went through the cap (multipart headers add a little).
    assert took >= sum(sizes) / rate - BURST_S - 0.5, took


def test_the_emulator_reads_a_body_no_faster_than_its_bandwidth(
    emulator_factory: Callable[..., EmulatorHandle]
) -> None:
    emu = emulator_factory(bandwidth="4MB", rate_limit="off")
    body = b"x" * (4 * MiB)
    started = time.monotonic()
    response = httpx.post(
        f"{emu.url}/files",
        headers={"Authorization": f"Bearer {emu.api_key}"},
        data={"purpose": "file-extract"},
        files={"file": ("big.txt", body)},
        timeout=60,
    )
    took = time.monotonic() - started
    assert response.status_code == 200, response.text
    # 4 MiB at 4 MiB/s: the answer comes once the link has carried the whole body.
    assert took >= 0.9, took
