"""pytest fixtures running the Files API emulator as a subprocess.

`emulator` is a ready emulator with two keys; `emulator_factory(**overrides)` starts one with
CLI flags derived from keyword names (`max_files=5` -> `--max-files 5`, `retry_after=True`
-> `--retry-after`, `api_key=[...]` -> repeated `--api-key`; `flavor="openai"`,
`fault_list_omit=0.2`, `unknown_id_status=400`, `clock_offset_s=-600` likewise).
`EmulatorHandle.truth_files()` lists an account's live files past any fault or omission;
`EmulatorHandle.expire(*ids)` makes files expire now.
"""

from __future__ import annotations

import hashlib
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

__all__ = ["EmulatorHandle", "emulator", "emulator_factory"]

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_KEYS = ["sk-test-1", "sk-test-2"]
START_TIMEOUT_S = 20.0
URL_PREFIX = "syncd-emulator listening on "


def _flags(overrides: dict[str, Any]) -> list[str]:
    args: list[str] = []
    for name, value in overrides.items():
        flag = "--" + name.replace("_", "-")
        if value is None or value is False:
            continue
        if value is True:
            args.append(flag)
        elif isinstance(value, (list, tuple)):
            for item in value:
                args += [flag, str(item)]
        else:
            args += [flag, str(value)]
    return args


class EmulatorHandle:
    def __init__(self, data_dir: Path, api_keys: list[str], extra_args: list[str],
                 log_path: Path, port: int = 0, seed: int | None = 1,
                 host: str = "127.0.0.1") -> None:
        self.data_dir = data_dir
        self.host = host
        self.api_keys = list(api_keys)
        self.api_key = self.api_keys[0]
        self._extra_args = list(extra_args)
        self._log_path = log_path
        self._seed = seed
        self.port = port
        self.url = ""
        self.root_url = ""
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self) -> None:
        cmd = [sys.executable, "-m", "syncd.emulator", "--host", self.host,
               "--port", str(self.port), "--data-dir", str(self.data_dir)]
        for key in self.api_keys:
            cmd += ["--api-key", key]
        if self._seed is not None and "--seed" not in self._extra_args:
            cmd += ["--seed", str(self._seed)]
        cmd += self._extra_args
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
        env.pop("SYNCD_EMULATOR_API_KEYS", None)
        log = self._log_path.open("ab")
        try:
            self.process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, env=env,
                                            cwd=str(REPO_ROOT))
        finally:
            log.close()
        line = self._read_url_line()
        self.url = line.strip()[len(URL_PREFIX):]
        # The API prefix depends on the flavour (/compatible-mode/v1 or /v1).
        parts = urllib.parse.urlsplit(self.url)
        self.root_url = f"{parts.scheme}://{parts.netloc}"
        self.port = int(parts.port or 0)

    def _read_url_line(self) -> str:
        assert self.process is not None and self.process.stdout is not None
        lines: queue.Queue[bytes] = queue.Queue()
        stdout = self.process.stdout
        threading.Thread(target=lambda: lines.put(stdout.readline()), daemon=True).start()
        try:
            raw = lines.get(timeout=START_TIMEOUT_S)
        except queue.Empty:
            raw = b""
        text = raw.decode()
        if not text.startswith(URL_PREFIX):
            self.stop()
            log = self._log_path.read_text(errors="replace")[-4000:]
            raise RuntimeError(f"emulator did not start (got {text!r}); log:\n{log}")
        return text

    def stop(self) -> None:
        proc = self.process
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()

    def restart(self) -> None:
        """Stop and start again on the same port and data dir."""
        self.stop()
        self.start()

    # ---- control API ----------------------------------------------------------------------

    def _admin(self, method: str, sub: str, json: Any = None) -> Any:
        response = httpx.request(method, f"{self.root_url}/_emulator/{sub}", json=json,
                                 timeout=10)
        response.raise_for_status()
        return response.json()

    def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = self._admin("GET", "stats")
        return result

    def reset_stats(self) -> None:
        self._admin("POST", "reset")

    def configure(self, **changes: Any) -> dict[str, Any]:
        result: dict[str, Any] = self._admin("POST", "config", json=changes)
        return result

    def truth_files(self, key: str | None = None) -> list[dict[str, Any]]:
        """Every live file of an account, newest first, from the control API: no fault,
        list omission or rate limit applies, and no API request is counted."""
        account = hashlib.sha256((key or self.api_key).encode()).hexdigest()[:12]
        accounts: dict[str, list[dict[str, Any]]] = self._admin("GET", "files")["accounts"]
        return accounts.get(account, [])

    def expire(self, *file_ids: str) -> int:
        """Make files expire now (they vanish from list and retrieve); returns how many."""
        count: int = self._admin("POST", "expire", json={"ids": list(file_ids)})["expired"]
        return count

    def files(self, key: str | None = None) -> list[dict[str, Any]]:
        """Every live file of an account, newest first (retries 429s; other faults raise)."""
        headers = {"Authorization": f"Bearer {key or self.api_key}"}
        out: list[dict[str, Any]] = []
        after: str | None = None
        with httpx.Client(base_url=self.url, headers=headers, timeout=30) as client:
            while True:
                params: dict[str, Any] = {"limit": 2000}
                if after:
                    params["after"] = after
                deadline = time.monotonic() + 30
                while True:
                    response = client.get("/files", params=params)
                    if response.status_code != 429 or time.monotonic() > deadline:
                        break
                    time.sleep(0.05)
                response.raise_for_status()
                page = response.json()
                out += page["data"]
                if not page["has_more"] or not page["data"]:
                    return out
                after = page["data"][-1]["id"]

    def __repr__(self) -> str:
        return f"EmulatorHandle(url={self.url!r}, pid={self.process and self.process.pid})"


@pytest.fixture
def emulator_factory(tmp_path_factory: pytest.TempPathFactory
                     ) -> Iterator[Callable[..., EmulatorHandle]]:
    handles: list[EmulatorHandle] = []

    def start(**overrides: Any) -> EmulatorHandle:
        base = tmp_path_factory.mktemp("emulator")
        data_dir = Path(overrides.pop("data_dir", base / "data"))
        keys = overrides.pop("api_keys", None) or overrides.pop("api_key", None) or DEFAULT_KEYS
        keys = [keys] if isinstance(keys, str) else list(keys)
        port = int(overrides.pop("port", 0))
        seed = overrides.pop("seed", 1)
        host = str(overrides.pop("host", "127.0.0.1"))
        handle = EmulatorHandle(data_dir, keys, _flags(overrides), base / "emulator.log",
                                port=port, seed=seed, host=host)
        handles.append(handle)
        return handle

    yield start
    for handle in handles:
        handle.stop()


@pytest.fixture
def emulator(emulator_factory: Callable[..., EmulatorHandle]) -> EmulatorHandle:
    return emulator_factory()
