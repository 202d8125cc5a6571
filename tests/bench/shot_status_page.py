"""A screenshot of the status page, taken by headless Chromium, of a project with synced,
invalid and quota-waiting files: ``syncd run`` against an emulator whose account holds
``--quota`` files, given more than that plus an empty file and a file of no known type.

    SYNCD_SHOT=/tmp/status-page.png python tests/bench/shot_status_page.py [--quota 8]
"""

from __future__ import annotations

import argparse
import os
import shutil
import struct
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.emulator_fixture import DEFAULT_KEYS, EmulatorHandle  # noqa: E402
from tests.engine_helpers import write_config  # noqa: E402
from tests.helpers import wait_for  # noqa: E402
from tests.page_helpers import PageDaemon, chromium, listener  # noqa: E402

# How far the page runs below the viewport. The window's height is not the viewport's
# (headless Chromium keeps about 140 px of it for its own frame), so it is grown by this.
BELOW = "return document.documentElement.scrollHeight - window.innerHeight"


def tree(root: Path, quota: int) -> None:
    for i in range(quota + 4):
        folder = ("reports", "notes", "data")[i % 3]
        (root / folder).mkdir(parents=True, exist_ok=True)
        (root / folder / f"{folder[:-1]}-{i:02d}.md").write_text(f"# {folder} {i}\n" * (i + 1))
    (root / "notes" / "draft.txt").write_text("")  # empty: the provider refuses it
    (root / "data" / "export.xyz").write_text("no known type\n")
    (root / "<img src=x onerror=alert(1)>.txt").write_text("a hostile name, shown as text\n")


def fit(driver: Any, width: int) -> None:
    """Grow the window until the whole page is in view, so the shot holds all of it."""
    for _ in range(5):
        below = int(driver.execute_script(BELOW))
        if below <= 0:
            return
        driver.set_window_size(width, driver.get_window_size()["height"] + below)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quota", type=int, default=8, help="files the account may hold")
    ap.add_argument("--width", type=int, default=1280)
    args = ap.parse_args()
    out = Path(os.environ.get("SYNCD_SHOT", "/tmp/status-page.png"))
    tmp = Path(tempfile.mkdtemp(prefix="syncd-shot-"))
    emulator = EmulatorHandle(tmp / "emulator", list(DEFAULT_KEYS),
                              ["--max-files", str(args.quota), "--upload-rate", "50"],
                              tmp / "emulator.log")  # fmt: skip
    daemon = None
    try:
        root = tmp / "root"
        tree(root, args.quota)
        port, section = listener()
        config = write_config(tmp, root, emulator, project="research-notes",
                              limits={"max_files": args.quota, "pacing_dir": str(tmp / "p")},
                              sync={"settle_s": 0.2}, **section)  # fmt: skip
        daemon = PageDaemon(config, emulator.api_key, tmp / "daemon.log", port)
        status = daemon.wait_idle(90)
        with chromium(args.width, 900) as driver:
            driver.get(daemon.origin + "/")
            wait_for(lambda: driver.execute_script(
                "return document.querySelectorAll('#actions tr').length"), 10, "the page")
            wait_for(lambda: driver.execute_script(
                "return document.querySelectorAll('#failing tr').length"), 10, "the list")
            fit(driver, args.width)
            out.parent.mkdir(parents=True, exist_ok=True)
            driver.save_screenshot(str(out))
        width, height = struct.unpack(">II", out.read_bytes()[16:24])  # the PNG's IHDR
        print(f"{out}: {width}x{height} px, {out.stat().st_size} bytes; "
              f"counts {status['counts']}")  # fmt: skip
    finally:
        if daemon is not None:
            daemon.stop()
        emulator.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
