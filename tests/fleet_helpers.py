"""Simulated hosts for the fleet tests and bench: each its own root, state and pacing
folder (nothing shared on disk), all on one key, one emulator and optionally one Redis."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

KEY = "sk-fleet"


def make_host(work: Path, name: str, files: int, emulator_url: str, shared: str | None) -> Path:
    """Write host ``name``'s tree and config; returns the config path."""
    host = work / name
    root = host / "docs"
    for i in range(files):
        p = root / f"d{i % 10}" / f"{name}-{i:05d}.txt"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(f"{name} document {i}\n" * 10)
    shared_rows = f"  shared: {shared}\n  fleet_size: 3\n" if shared else ""
    cfg = host / "syncd.yaml"
    cfg.write_text(
        f"project: {name}\nroot: {root}\nstate_dir: {host / 'state'}\n"
        f"api:\n  base_url: {emulator_url}\n  api_key_env: FLEET_KEY\n"
        f"limits:\n  pacing_dir: {host / 'pacing'}\n{shared_rows}"
        "logging:\n  level: warning\n  format: json\n"
    )
    return cfg


def start_reconcile(cfg: Path, command: str = "reconcile") -> subprocess.Popen[str]:
    """``syncd reconcile`` (or another command, e.g. ``run``) of host ``cfg``."""
    env = {**os.environ, "FLEET_KEY": KEY}
    return subprocess.Popen(
        [sys.executable, "-m", "syncd", command, "-c", str(cfg)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def mapping_ids(cfg: Path) -> dict[str, str]:
    import json

    data = json.loads((cfg.parent / "state" / "mapping.json").read_text())
    return {path: entry["file_id"] for path, entry in data["files"].items()}
