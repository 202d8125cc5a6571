"""A 300 MB upload streams from disk: the client's peak memory stays far below the file size."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

from tests.helpers_client import write_big_batch

REPO = Path(__file__).resolve().parent.parent

# Runs in a fresh interpreter so that ru_maxrss is the client's alone.
UPLOAD_SCRIPT = textwrap.dedent(
    """
    import json, resource, sys, time
    from pathlib import Path
    from syncd.api.client import FilesClient
    from syncd.api.key import ApiKey
    from syncd.api.options import ClientOptions, Timeouts

    def peak_kib():
        # VmHWM belongs to this process image; ru_maxrss would carry over the
        # high-water mark of the (large) parent across fork+exec.
        try:
            with open("/proc/self/status") as fh:
                for line in fh:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1])
        except OSError:
            pass
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    url, key, path = sys.argv[1:4]
    before = peak_kib()
    options = ClientOptions(timeouts=Timeouts(read=120, write=120))
    start = time.monotonic()
    with FilesClient(url, ApiKey(key), options) as client:
        remote = client.upload(Path(path), "batch")
    elapsed = time.monotonic() - start
    peak = peak_kib()
    print(json.dumps({"id": remote.id, "bytes": remote.bytes, "peak_kib": peak,
                      "baseline_kib": before, "elapsed": elapsed}))
    """
)


def test_300mb_upload_streams_with_bounded_memory(emulator_factory: Any, tmp_path: Path) -> None:
    emulator = emulator_factory()
    path = tmp_path / "big-batch.jsonl"
    size = write_big_batch(path, 300 * 1024 * 1024)
    assert size > 290 * 1024 * 1024
    env = dict(os.environ, PYTHONPATH=str(REPO))
    done = subprocess.run(
        [sys.executable, "-c", UPLOAD_SCRIPT, emulator.url, emulator.api_key, str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=REPO,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    peak_mb = result["peak_kib"] / 1024
    print(
        f"uploaded {size / 2**20:.0f} MiB in {result['elapsed']:.1f}s; client peak RSS "
        f"{peak_mb:.1f} MiB (interpreter + imports: {result['baseline_kib'] / 1024:.1f} MiB)"
    )
    assert result["bytes"] == size
    assert peak_mb < 100
    (remote,) = emulator.files()
    assert remote["bytes"] == size and remote["filename"] == path.name
