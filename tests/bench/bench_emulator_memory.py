"""Peak RSS of the emulator while it receives one large streamed upload.

Run: python tests/bench/bench_emulator_memory.py [--mb 300]

The emulator runs as a subprocess; the client streams a valid batch JSONL file from a
generator (never held in memory) and a sampler thread polls the emulator's RSS.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.emulator_fixture import EmulatorHandle

MB = 1024 * 1024
BOUNDARY = "benchboundary7d3a"


@dataclass
class Result:
    size: int
    seconds: float
    baseline_rss: int
    peak_rss: int
    status: int
    stored_bytes: int


def _jsonl_line(i: int, width: int) -> bytes:
    head = {"custom_id": f"req-{i}", "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": "qwen-long", "messages": [{"role": "user", "content": ""}]}}
    line = json.dumps(head).encode()
    pad = width - len(line) - 1
    # Padding goes inside the message content so every line stays a valid request.
    return line.replace(b'"content": ""', b'"content": "' + b"x" * pad + b'"') + b"\n"


def multipart_body(size: int) -> tuple[Iterator[bytes], int]:
    """A multipart body whose file part is a `size`-byte batch file, and its total length."""
    width = 8 * 1024  # 300 MB -> ~38k lines, under the 50,000-line cap
    template = _jsonl_line(0, width)
    lines, tail = divmod(size, len(template))
    head = (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\n"
            f"batch\r\n--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; "
            f"filename=\"big.jsonl\"\r\nContent-Type: application/jsonl\r\n\r\n").encode()
    foot = f"\r\n--{BOUNDARY}--\r\n".encode()
    last = _jsonl_line(lines, len(template) + tail) if tail else b""
    if tail and len(last) != len(template) + tail:
        raise ValueError("size too small")

    def gen() -> Iterator[bytes]:
        yield head
        batch: list[bytes] = []
        for i in range(lines):
            batch.append(_jsonl_line(i, width))
            if len(batch) == 64:
                yield b"".join(batch)
                batch.clear()
        if batch:
            yield b"".join(batch)
        if last:
            yield last
        yield foot

    return gen(), len(head) + lines * len(template) + len(last) + len(foot)


def measure(emu: EmulatorHandle, size: int) -> Result:
    proc = psutil.Process(emu.pid)
    baseline = proc.memory_info().rss
    peak = baseline
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            try:
                peak = max(peak, proc.memory_info().rss)
            except psutil.NoSuchProcess:
                return
            time.sleep(0.005)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    body, length = multipart_body(size)
    start = time.monotonic()
    try:
        response = httpx.post(
            f"{emu.url}/files", content=body, timeout=300,
            headers={"Authorization": f"Bearer {emu.api_key}",
                     "Content-Type": f"multipart/form-data; boundary={BOUNDARY}",
                     "Content-Length": str(length)})
    finally:
        elapsed = time.monotonic() - start
        done.set()
        sampler.join()
    stored = response.json().get("bytes", 0) if response.status_code == 200 else 0
    return Result(size, elapsed, baseline, peak, response.status_code, stored)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=int, default=300)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        emu = EmulatorHandle(Path(tmp) / "data", ["sk-bench"], ["--rate-limit", "off"],
                             Path(tmp) / "emulator.log")
        try:
            result = measure(emu, args.mb * MB)
        finally:
            emu.stop()
    print(f"upload {result.size / MB:.0f} MB -> HTTP {result.status}, stored {result.stored_bytes}"
          f" bytes in {result.seconds:.1f} s ({result.size / MB / result.seconds:.0f} MB/s)")
    print(f"emulator RSS: baseline {result.baseline_rss / MB:.1f} MB,"
          f" peak {result.peak_rss / MB:.1f} MB")
    return 0 if result.status == 200 else 1


if __name__ == "__main__":
    sys.exit(main())
