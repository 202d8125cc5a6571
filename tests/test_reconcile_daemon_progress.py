"""A reconcile through the running daemon looks like a one-off: the daemon streams the
run's progress over the control socket, and on a terminal ``syncd reconcile`` draws the
same live bar, then prints the same summary and exits with the same code.

The terminal runs go under script(1) with its timing log, which says when each chunk of
output was written: the first frame of the bar is timed from the start of the command.
"""

from __future__ import annotations

import asyncio
import json
import re
import shlex
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from tests.emulator_fixture import EmulatorHandle
from tests.engine_helpers import build_flat_tree, fast_emulator, read_mapping, syncd_cmd
from tests.helpers import wait_until
from tests.test_daemon_mustshow import RunningDaemon, fast_config, run_daemon
from tests.test_face import HUMAN_LOGS, _human_env, screen

if TYPE_CHECKING:  # imported where used: this file also runs against the code before them
    from syncd.daemon.control import EventStream

__all__ = ["run_daemon"]  # the fixture, imported for the tests here

FILES = 300
# The bar must show within 1 s of the start; a loaded test machine gets more slack.
BAR_WITHIN_S = 1.0
BAR_BUDGET_S = 4.0
# The daemon looks at the folder once an hour: the requested reconcile uploads new files.
UNWATCHED = {"watch": {"mode": "polling", "poll_interval_s": 3600}}
BAR = "━".encode()

needs_script = pytest.mark.skipif(shutil.which("script") is None, reason="needs script(1)")


def on_terminal(command: list[str], env: dict[str, str], where: Path) -> tuple[int, str, float]:
    """Run ``command`` on a pseudo-terminal: (exit code, what it wrote, seconds from the
    start to the first frame of the bar, inf when none was drawn)."""
    out, timing = where / "out.log", where / "timing.log"
    proc = subprocess.run(
        ["script", "-qe", "-T", str(timing), "-O", str(out), "-c", shlex.join(command)],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        timeout=240,
    )
    data = out.read_bytes()
    data = data[data.index(b"\n") + 1 :].split(b"\nScript done", 1)[0]  # script's lines
    first = data.find(BAR)
    at, seen = 0.0, 0
    bar_at = float("inf")
    for entry in timing.read_text().splitlines():
        delay, size = entry.split()
        at += float(delay)
        seen += int(size)
        if first >= 0 and seen > first:
            bar_at = at
            break
    return proc.returncode, data.decode("utf-8", "replace"), bar_at


def summary(shown: list[str]) -> list[str]:
    """The run's summary: its lines from the counts on, the duration left out."""
    first = next(i for i, ln in enumerate(shown) if ln.startswith("uploaded "))
    return [re.sub(r" in \d+\.\ds$", " in _s", ln) for ln in shown[first:]]


def tree(root: Path, count: int) -> None:
    """``count`` files to upload and one the remote refuses: the run exits 1."""
    build_flat_tree(root, count)
    (root / "bad.jsonl").write_text("not json\n")


def daemon_with_new_files(
    base: Path, emu: EmulatorHandle, start: Callable[..., RunningDaemon], count: int
) -> tuple[Path, Path, RunningDaemon]:
    """A daemon idle on an empty folder, then ``count`` new files it has not seen yet."""
    base.mkdir()
    root = base / "root"
    root.mkdir()
    cfg = fast_config(base, root, emu, logging=HUMAN_LOGS["logging"], **UNWATCHED)
    daemon = start(cfg, emu.api_key)
    build_flat_tree(root, count)
    return cfg, root, daemon


@needs_script
def test_terminal_reconcile_through_the_daemon_shows_the_bar_and_the_same_summary(
    tmp_path: Path,
    emulator_factory: Callable[..., EmulatorHandle],
    run_daemon: Callable[..., RunningDaemon],
) -> None:
    # A one-off run of the same tree: the summary the daemon's run must match.
    alone = fast_emulator(emulator_factory)
    (tmp_path / "one-off").mkdir()
    tree(tmp_path / "one-off" / "root", FILES)
    cfg = fast_config(tmp_path / "one-off", tmp_path / "one-off" / "root", alone, **HUMAN_LOGS)
    one_off_code, raw, one_off_bar = on_terminal(
        syncd_cmd("reconcile", cfg), _human_env(alone.api_key), tmp_path / "one-off"
    )
    assert one_off_code == 1, raw  # bad.jsonl
    expected = summary(screen(raw))
    assert expected[0].startswith(f"uploaded {FILES} "), raw

    emu = fast_emulator(emulator_factory)
    cfg, root, daemon = daemon_with_new_files(tmp_path / "daemon", emu, run_daemon, 0)
    tree(root, FILES)
    code, raw, bar_at = on_terminal(
        syncd_cmd("reconcile", cfg), _human_env(emu.api_key), tmp_path / "daemon"
    )
    print(f"first bar frame after {bar_at:.3f}s (one-off: {one_off_bar:.3f}s)")
    shown = screen(raw)
    assert "reconciled by the running daemon" in raw, raw
    # The bar, drawn early and more than once (it moved), complete, then the summary.
    bars = [line for line in shown if "━" in line]
    assert len(bars) == 1, shown
    assert f"{FILES}/{FILES} files" in bars[0] and "100%" in bars[0], bars
    frames = set(re.findall(r"(\d+)(?:/\d+)? files", raw))
    assert len(frames) >= 3, frames
    assert raw.index("━") < raw.index("uploaded "), raw
    assert bar_at < BAR_BUDGET_S, f"the bar showed {bar_at:.2f}s after the start"
    # The same summary as the one-off run, and the same exit code.
    assert summary(shown) == [
        line.replace(str(tmp_path / "one-off"), str(tmp_path / "daemon")) for line in expected
    ], shown
    assert code == one_off_code
    assert len(read_mapping(daemon.mapping_path)) == FILES

    # The exit code is the outcome's: the same state, asked for its outcome as JSON.
    piped = subprocess.run(syncd_cmd("reconcile", cfg, "--json"), env=_human_env(emu.api_key),
                           capture_output=True, text=True, timeout=120)  # fmt: skip
    outcome = json.loads(piped.stdout)
    assert outcome["source"] == "daemon" and outcome["uploaded"] == 0, outcome
    assert code == outcome["exit_code"] == piped.returncode
    assert daemon.alive()


@needs_script
def test_json_and_pipes_through_the_daemon_are_unchanged(
    tmp_path: Path,
    emulator_factory: Callable[..., EmulatorHandle],
    run_daemon: Callable[..., RunningDaemon],
) -> None:
    emu = fast_emulator(emulator_factory)
    cfg, root, daemon = daemon_with_new_files(tmp_path / "p", emu, run_daemon, 20)
    env = _human_env(emu.api_key)

    # --json on a terminal: the outcome alone on stdout, no bar.
    answer = tmp_path / "answer.json"
    command = [*syncd_cmd("reconcile", cfg, "--json")]
    code, raw, bar_at = on_terminal(
        ["sh", "-c", f'{shlex.join(command)} > "$0"', str(answer)], env, tmp_path
    )
    assert code == 0, raw
    assert bar_at == float("inf") and "files/s" not in raw, raw
    outcome = json.loads(answer.read_text())
    assert outcome["source"] == "daemon" and outcome["uploaded"] == 20, outcome
    assert "event" not in outcome

    # A pipe: the plain summary, nothing drawn.
    (root / "d0" / "one-more.txt").write_text("one more\n")
    text = subprocess.run(syncd_cmd("reconcile", cfg), env=env, capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert text.returncode == 0, text.stderr
    assert text.stdout.startswith("uploaded 1 ("), text.stdout
    assert "━" not in text.stderr and "files/s" not in text.stderr, text.stderr
    assert daemon.alive()


def test_the_stream_carries_the_run_and_a_client_that_leaves_breaks_nothing(
    tmp_path: Path,
    emulator_factory: Callable[..., EmulatorHandle],
    run_daemon: Callable[..., RunningDaemon],
) -> None:
    from syncd.daemon.control import start_reconcile

    emu = fast_emulator(emulator_factory)
    _, root, daemon = daemon_with_new_files(tmp_path / "p", emu, run_daemon, FILES)
    state = tmp_path / "p" / "state"
    sock = str(state / "control.sock")

    # A client that reads the first events and hangs up while the run goes on.
    with (
        httpx.Client(transport=httpx.HTTPTransport(uds=sock), timeout=60) as c,
        c.stream("POST", "http://syncd/v1/reconcile", json={"stream": True}) as answer,
    ):
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith("application/x-ndjson")
        lines = answer.iter_lines()
        assert json.loads(next(lines)) == {"event": "accepted"}
        planned = json.loads(next(lines))
        assert planned["event"] == "planned" and planned["files"] == FILES, planned
        assert json.loads(next(lines))["event"] == "done"
    # The run finishes all the same, and the daemon goes on answering.
    assert wait_until(lambda: len(daemon.mapping()) == FILES, 120)
    assert daemon.alive()

    # Another run, read to its end through the client API, told to a progress display.
    for i in range(40):
        (root / "more" / f"m{i}.txt").parent.mkdir(exist_ok=True)
        (root / "more" / f"m{i}.txt").write_text(f"more {i}\n")
    seen = Recorder()
    with start_reconcile(state, stream=True) as run:
        outcome = run.outcome(seen)
    assert outcome["uploaded"] == 40 and outcome["exit_code"] == 0, outcome
    assert seen.totals == [(40, sum(len(f"more {i}\n") for i in range(40)))]
    assert sorted(p for a, p, _ in seen.actions if a == "upload") == sorted(
        f"more/m{i}.txt" for i in range(40)
    )
    # Without progress, the plain answer: the outcome.
    with start_reconcile(state) as run:
        assert run.outcome(None)["uploaded"] == 0
    assert daemon.alive()


class Recorder:
    def __init__(self) -> None:
        self.totals: list[tuple[int, int]] = []
        self.actions: list[tuple[str, str, int]] = []

    def planned(self, files: int, size: int) -> None:
        self.totals.append((files, size))

    def done(self, action: str, path: str, size: int) -> None:
        self.actions.append((action, path, size))


# ------------------------------------------------------------------ the stream itself


def test_a_slow_reader_never_holds_the_worker_and_loses_no_count() -> None:

    loop = asyncio.new_event_loop()
    served = threading.Thread(target=loop.run_forever, daemon=True)
    served.start()
    try:
        events = asyncio.run_coroutine_threadsafe(_make(loop), loop).result(5)
        result: Future[dict[str, Any]] = Future()
        result.add_done_callback(events.finish)

        # The worker reports 20,000 actions while nobody reads: it is never held up.
        began = time.monotonic()
        events.planned(20_000, 20_000 * 7)
        for i in range(20_000):
            events.done("delete" if i % 10 == 0 else "upload", f"d/f{i}", 0 if i % 10 == 0 else 7)
        result.set_result({"uploaded": 18_000, "exit_code": 0})
        assert time.monotonic() - began < 5.0

        lines = asyncio.run_coroutine_threadsafe(_read_all(events), loop).result(30)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        served.join(5)
        loop.close()
    got = [json.loads(line) for line in lines]
    assert got[0] == {"event": "accepted"}
    assert got[1] == {"event": "planned", "files": 20_000, "bytes": 140_000}
    assert got[-1] == {"event": "outcome", "outcome": {"uploaded": 18_000, "exit_code": 0}}
    done = got[2:-1]
    assert all(e["event"] == "done" for e in done)
    # Folded: far fewer events than actions, and no action lost from the counts.
    assert len(done) < 1_000
    count = {"upload": 0, "delete": 0}
    size = {"upload": 0, "delete": 0}
    for e in done:
        count[e["action"]] += e.get("count", 1)
        size[e["action"]] += e["size"]
    assert count == {"upload": 18_000, "delete": 2_000}
    assert size == {"upload": 126_000, "delete": 0}
    assert done[-1]["path"] in ("d/f19999", "d/f19990")  # the newest names are kept


def test_events_after_the_reader_left_go_nowhere() -> None:
    from syncd.daemon.control import EventStream

    async def scenario() -> list[bytes]:
        events = EventStream(asyncio.get_running_loop(), limit=4)
        body = events.lines()
        first = await body.__anext__()
        await body.aclose()  # the client went away
        assert events.closed
        events.planned(1, 1)  # the worker goes on: nothing raises, nothing is kept
        events.done("upload", "a", 1)
        await asyncio.sleep(0)
        return [first]

    assert asyncio.run(scenario()) == [b'{"event": "accepted"}\n']


def test_a_name_that_is_not_utf8_travels() -> None:
    from syncd.daemon.control import EventStream

    async def scenario() -> list[Any]:
        events = EventStream(asyncio.get_running_loop())
        result: Future[dict[str, Any]] = Future()
        result.add_done_callback(events.finish)
        events.done("upload", "d/caf\udce9.txt", 3)
        result.set_result({"uploaded": 1})
        return [json.loads(line) async for line in events.lines()]

    got = asyncio.run(scenario())
    assert got[1] == {"event": "done", "action": "upload", "path": "d/caf\udce9.txt", "size": 3}
    assert got[-1] == {"event": "outcome", "outcome": {"uploaded": 1}}


def test_an_answer_without_streaming_is_the_outcome() -> None:
    from syncd.daemon.control import DaemonRun

    plain = httpx.Response(200, json={"uploaded": 3, "exit_code": 0})
    run = DaemonRun(plain)
    assert not run.streaming
    seen = Recorder()
    assert run.outcome(seen) == {"uploaded": 3, "exit_code": 0}
    assert seen.totals == [] and seen.actions == []

    lines = [
        {"event": "accepted"},
        {"event": "planned", "files": 3, "bytes": 30},
        {"event": "done", "action": "upload", "path": "a", "size": 10},
        {"event": "done", "action": "upload", "path": "c", "size": 20, "count": 2},
        {"event": "news", "what": "a newer daemon's event"},
        {"event": "outcome", "outcome": {"uploaded": 3}},
    ]
    body = "".join(json.dumps(e) + "\n" for e in lines).encode()
    streamed = httpx.Response(200, content=body, headers={"content-type": "application/x-ndjson"})
    run = DaemonRun(streamed)
    assert run.streaming
    assert run.outcome(seen) == {"uploaded": 3}
    assert seen.totals == [(3, 30)]
    assert [(a, p) for a, p, _ in seen.actions] == [
        ("upload", "a"),
        ("upload", "c"),
        ("upload", "c"),
    ]
    assert sum(s for _, _, s in seen.actions) == 30


async def _make(loop: asyncio.AbstractEventLoop) -> EventStream:
    from syncd.daemon.control import EventStream

    return EventStream(loop)


async def _read_all(events: EventStream) -> list[bytes]:
    return [line async for line in events.lines()]
