"""A real ``redis-server`` per test: free loopback port, temp dir, stopped afterwards.

``redis_server`` yields a running :class:`RedisServer`; ``stop()`` and ``start()``
(same port, same password) let a test take it away and bring it back. Without
``redis-server`` on PATH a test that needs it is skipped with the reason, except
under ``CI=true``, where it fails: CI installs it (``.ci/run``), so its absence
there is a broken setup, not a reason to pass quietly.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.helpers import free_port

__all__ = ["RedisServer", "redis_server", "require_redis_server"]

START_TIMEOUT_S = 10.0


def require_redis_server() -> str:
    path = shutil.which("redis-server")
    if path is None:
        why = (
            "redis-server is not installed (Debian: apt-get install -y redis-server; "
            ".ci/run installs it)"
        )
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true but {why}", pytrace=False)
        pytest.skip(why)
    return path


class RedisServer:
    def __init__(self, binary: str, folder: Path, password: str | None = None) -> None:
        self.binary = binary
        self.folder = folder
        self.password = password
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, password=self.password)

    def start(self) -> None:
        args = [
            self.binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.folder),
            "--save", "",
            "--appendonly", "no",
            "--daemonize", "no",
            "--loglevel", "warning",
            "--logfile", str(self.folder / "redis.log"),
        ]  # fmt: skip
        if self.password:
            args += ["--requirepass", self.password]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                if self.client().ping():
                    return
            except redis.RedisError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                err = self.process.stderr.read().decode() if self.process.stderr else ""
                log = (self.folder / "redis.log").read_text(errors="replace")[-2000:]
                self.stop()
                raise RuntimeError(f"redis-server did not start: {err} {log}")
            time.sleep(0.02)

    def stop(self) -> None:
        proc, self.process = self.process, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        if proc.stderr is not None:
            proc.stderr.close()


@pytest.fixture
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    binary = require_redis_server()
    server = RedisServer(binary, tmp_path_factory.mktemp("redis"))
    try:
        yield server
    finally:
        server.stop()
