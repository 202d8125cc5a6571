"""The status page from the outside: ``syncd run`` with its listener on a free loopback
port, and Debian's headless Chromium driven through its own chromedriver (never a
browser fetched at run time).

Without chromium or chromedriver a browser test is skipped with the reason, except
under ``CI=true``, where it fails: CI installs both (``.ci/run``).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.engine_helpers import syncd_cmd, syncd_env
from tests.helpers import free_port, wait_for

BROWSER_ARGS = (
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
    "--window-size=1280,1000", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-default-apps",
)  # fmt: skip


def browser_paths() -> tuple[str, str]:
    """(chromium, chromedriver), or a skip (a failure under CI=true) naming what is missing."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver") or (
        "/usr/bin/chromedriver" if Path("/usr/bin/chromedriver").exists() else None
    )
    missing = [n for n, p in (("chromium", chromium), ("chromium-driver", driver)) if p is None]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("selenium (pip install -e '.[test]')")
    if missing or chromium is None or driver is None:
        why = (f"{' and '.join(missing)} not installed (Debian: apt-get install -y chromium "
               "chromium-driver; .ci/run installs them)")  # fmt: skip
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true but {why}", pytrace=False)
        pytest.skip(why)
    return chromium, driver


@contextmanager
def chromium(width: int = 1280, height: int = 1000) -> Iterator[Any]:
    """A headless Chromium whose performance log lists every request it makes."""
    binary, driver_path = browser_paths()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ["SE_OFFLINE"] = "true"  # selenium-manager must never reach for the network
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in BROWSER_ARGS:
        options.add_argument(arg)
    options.add_argument(f"--window-size={width},{height}")
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def requested_urls(driver: Any) -> list[str]:
    """Every URL the browser asked for since the last call, from its performance log."""
    import json

    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message.get("method") == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


def listener() -> tuple[int, dict[str, Any]]:
    """A free loopback port, and the config section that serves the page on it."""
    port = free_port()
    return port, {"daemon": {"metrics": f"127.0.0.1:{port}", "shutdown_timeout_s": 10}}


class PageDaemon:
    """``syncd run -c CONFIG``, its config's ``daemon.metrics`` being ``127.0.0.1:PORT``
    (:func:`listener` gives the section)."""

    def __init__(self, config: Path, key: str, log: Path, port: int) -> None:
        self.config, self.key, self.log, self.port = config, key, log, port
        self.origin = f"http://127.0.0.1:{port}"
        env = syncd_env(key)
        for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
            env.pop(name, None)
        with log.open("ab") as fh:
            self.proc = subprocess.Popen(syncd_cmd("run", config), stdout=fh,
                                         stderr=subprocess.STDOUT, env=env)  # fmt: skip

    def api(self, path: str = "/api/status", **params: Any) -> dict[str, Any]:
        response = httpx.get(self.origin + path, params=params, timeout=10)
        response.raise_for_status()
        data: dict[str, Any] = response.json()
        return data

    def wait_idle(self, timeout: float = 60) -> dict[str, Any]:
        def idle() -> dict[str, Any] | None:
            if self.proc.poll() is not None:
                raise AssertionError(f"syncd run exited {self.proc.returncode}")
            try:
                data = self.api()
            except httpx.HTTPError:
                return None
            return data if data.get("phase") == "idle" and not data.get("queue") else None

        try:
            data: dict[str, Any] = wait_for(idle, timeout, "the daemon idle")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; log:\n{self.log_text()}") from None
        return data

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
