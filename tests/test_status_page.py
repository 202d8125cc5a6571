"""The status page of a running ``syncd run`` against the emulator, in headless Chromium
and over plain HTTP: what it shows equals ``syncd status --json``, a new file shows up
as synced without a reload, a hostile file name is text, nothing is fetched from
elsewhere, nothing reachable changes anything, and a public bind must be meant."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from syncd.daemon.page_data import narrow
from tests.emulator_fixture import DEFAULT_KEYS, EmulatorHandle
from tests.engine_helpers import FAST_RATE, read_mapping, run_syncd, write_config
from tests.helpers import wait_for
from tests.page_helpers import PageDaemon, chromium, listener, requested_urls

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux daemon")

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
HOSTILE = "<img src=x onerror=window.__pwned=1>.txt"  # synced: in the recent actions
HOSTILE_INVALID = "<svg onload=window.__pwned=2>.md"  # empty: in the files not synced
# The issue's own name: an alert it opened would fail the next WebDriver command.
ALERT = "<img src=x onerror=alert(1)>.txt"
SYNCED = {"a.txt": "alpha\n", "notes/b.md": "# b\n", "notes/c.txt": "gamma\n",
          HOSTILE: "x\n", ALERT: "y\n"}  # fmt: skip


class Project:
    def __init__(self, where: Path, emulator: EmulatorHandle) -> None:
        self.where = where
        self.root = where / "root"
        for rel, text in {**SYNCED, "empty.txt": "", HOSTILE_INVALID: ""}.items():
            (self.root / rel).parent.mkdir(parents=True, exist_ok=True)
            (self.root / rel).write_text(text)
        port, section = listener()
        self.config = write_config(where, self.root, emulator,
                                   sync={"settle_s": 0.2, "max_settle_s": 5},
                                   reconcile={"interval_s": 3600}, **section)  # fmt: skip
        self.key = emulator.api_key
        self.daemon = PageDaemon(self.config, self.key, where / "daemon.log", port)

    def status_json(self) -> dict[str, Any]:
        run = run_syncd("status", self.config, "--json", key=self.key)
        assert run.returncode in (0, 1), run.output
        data: dict[str, Any] = run.json
        return data

    def mapped(self, rel: str) -> bool:
        try:
            return rel in read_mapping(self.where / "mapping.json")
        except (OSError, ValueError, KeyError):
            return False


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Project]:
    base = tmp_path_factory.mktemp("page")
    emulator = EmulatorHandle(base / "emulator", list(DEFAULT_KEYS),
                              ["--upload-rate", str(FAST_RATE), "--read-rate", str(FAST_RATE),
                               "--delete-rate", str(FAST_RATE)],
                              base / "emulator.log")  # fmt: skip
    p = None
    try:
        p = Project(base, emulator)
        p.daemon.wait_idle()
        yield p
    finally:
        if p is not None:
            p.daemon.stop()
        emulator.stop()


# ------------------------------------------------------------------ in the browser

PAGE_COUNTS = """return Object.fromEntries([...document.querySelectorAll('#counts tr')]
  .filter(r => r.dataset.status).map(r => [r.dataset.status, Number(r.cells[1].textContent)]));"""
ACTION_ROWS = """return [...document.querySelectorAll('#actions tr')]
  .map(r => [...r.cells].map(c => c.textContent));"""
FAILING_ROWS = """return [...document.querySelectorAll('#failing tr')]
  .map(r => [...r.cells].map(c => c.textContent));"""


def test_the_page_shows_the_daemon_live_safely_and_from_its_own_origin(project: Project) -> None:
    d = project.daemon
    with chromium() as driver:
        from selenium.common.exceptions import NoAlertPresentException

        driver.get(d.origin + "/")
        driver.execute_script("window.__marker = 'not reloaded';")

        # The counts equal `syncd status --json` (asked while nothing changes).
        cli = project.status_json()
        assert cli["counts"]["synced"] == len(SYNCED) and cli["counts"]["invalid"] == 2, cli
        wait_for(lambda: driver.execute_script(PAGE_COUNTS) == cli["counts"], 10,
                 "the page's counts to equal syncd status --json")  # fmt: skip
        failing = driver.execute_script(FAILING_ROWS)
        assert {r[0] for r in failing} == {e["path"] for e in cli["not_synced"]}
        assert ["empty.txt", "invalid", next(e["reason"] for e in cli["not_synced"]
                                             if e["path"] == "empty.txt")] in failing

        # A file dropped in shows as synced within 2 s of the mapping naming it, no reload.
        rel = "dropped/new-file.txt"
        (project.root / "dropped").mkdir()
        (project.root / rel).write_text("dropped in while the page was open\n")
        wait_for(lambda: project.mapped(rel), 30, f"the mapping to name {rel}", 0.01)
        mapped_at = time.monotonic()

        def shown_synced() -> bool:
            uploaded = any(r[1] == "uploaded" and r[2] == rel
                           for r in driver.execute_script(ACTION_ROWS))  # fmt: skip
            return uploaded and driver.execute_script(PAGE_COUNTS).get("synced") == len(SYNCED) + 1

        wait_for(shown_synced, 10, f"{rel} uploaded and counted synced on the page")
        shown_after = time.monotonic() - mapped_at
        print(f"shown as synced {shown_after:.2f} s after the mapping named it")
        assert shown_after <= 2.0, f"shown {shown_after:.2f} s after the mapping named it"
        assert driver.execute_script("return window.__marker") == "not reloaded"

        # The hostile names are text on the page, and ran nothing.
        text = driver.execute_script("return document.body.innerText")
        assert HOSTILE in text and HOSTILE_INVALID in text and ALERT in text
        assert driver.execute_script("return window.__pwned === undefined")
        with pytest.raises(NoAlertPresentException):
            _ = driver.switch_to.alert  # raises when no dialog is open
        assert driver.execute_script("return document.querySelectorAll('img, svg').length") == 0

        # Every request the page made went to the daemon's origin.
        urls = requested_urls(driver)
        urls += driver.execute_script(
            "return performance.getEntriesByType('navigation')"
            ".concat(performance.getEntriesByType('resource')).map(e => e.name)")
        assert any(u.startswith(d.origin + "/api/status") for u in urls), urls
        assert all(u.startswith(d.origin + "/") for u in urls), sorted(set(urls))
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert errors == [], errors  # a CSP violation would be one


# ------------------------------------------------------------------ over HTTP


def test_the_listener_is_read_only_keyless_and_speaks_the_status_document(
    project: Project,
) -> None:
    d = project.daemon
    routes = ("/", "/static/page.js", "/static/page.css", "/api/status", "/api/log", "/metrics")
    for route in routes:
        response = httpx.get(d.origin + route, timeout=10)
        assert response.status_code == 200, route
        assert response.headers["content-security-policy"] == CSP, route
        assert response.headers["x-content-type-options"] == "nosniff", route
        assert response.headers["referrer-policy"] == "no-referrer", route
        assert project.key not in response.text, route
    assert "syncd_files" in httpx.get(d.origin + "/metrics", timeout=10).text
    assert f'"url": "{d.origin}/"' in d.log.read_text(), "the log names the page's address"

    # /api/status is the document of `syncd status --json`.
    cli, api = project.status_json(), d.api()
    for field in ("source", "project", "root", "counts", "not_synced", "ours", "limits"):
        assert api[field] == cli[field], field

    # Nothing reachable acts: every other method is refused and the state is as it was.
    before = d.api()["counts"]
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        response = httpx.request(method, d.origin + "/api/status", content=b"{}", timeout=10)
        assert response.status_code == 405 and response.headers["allow"] == "GET, HEAD"
    assert d.api()["counts"] == before

    # A page elsewhere whose name was rebound to 127.0.0.1 cannot read it.
    rebound = httpx.get(d.origin + "/api/status", headers={"Host": "evil.example:80"}, timeout=10)
    assert rebound.status_code == 421

    # One page of the files not synced, filtered; a bad query is refused by name.
    page = d.api(q="EMPTY", limit=1)
    assert page["not_synced_total"] == 2 and len(page["not_synced"]) == 1
    assert httpx.get(d.origin + "/api/status?limit=x", timeout=10).status_code == 400
    log = d.api("/api/log", limit=5)["entries"]
    assert 0 < len(log) <= 5 and all("action" in e for e in log)


def test_ten_thousand_failures_come_a_page_at_a_time() -> None:
    rows = [{"path": f"d/f-{i:05d}.bin", "status": "invalid", "reason": "unsupported type"}
            for i in range(10_000)]  # fmt: skip
    rows[7_777]["reason"] = "empty file"
    data: dict[str, Any] = {"not_synced": rows}
    narrow(data, {"offset": "9950", "limit": "100"})
    assert data["not_synced_total"] == 10_000 and len(data["not_synced"]) == 50
    assert data["not_synced"][0]["path"] == "d/f-09950.bin"
    data = {"not_synced": rows}
    narrow(data, {"q": "Empty File"})
    assert [r["path"] for r in data["not_synced"]] == ["d/f-07777.bin"]


# ------------------------------------------------------------------ the public bind


def test_a_bind_beyond_loopback_must_be_meant(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    url = "http://127.0.0.1:9/compatible-mode/v1"
    cfg = write_config(tmp_path, root, url, daemon={"metrics": "0.0.0.0:9464"})
    line = next(i for i, t in enumerate(cfg.read_text().splitlines(), 1) if "metrics:" in t)
    refused = run_syncd("check-config", cfg, key="sk-test-1")
    assert refused.returncode == 2, refused.output
    assert f"{cfg}:{line}: daemon.metrics: 0.0.0.0 is not a loopback address" in refused.stderr
    assert "daemon.metrics_public: true" in refused.stderr

    cfg = write_config(tmp_path, root, url,
                       daemon={"metrics": "0.0.0.0:9464", "metrics_public": True})  # fmt: skip
    meant = run_syncd("check-config", cfg, key="sk-test-1")
    assert meant.returncode == 0, meant.output
    assert "warning:" in meant.stderr and "daemon.metrics_public" in meant.stderr
    assert "0.0.0.0:9464" in meant.stderr and "no login" in meant.stderr

    loopback = write_config(tmp_path, root, url, daemon={"metrics": "[::1]:9464"})
    quiet = run_syncd("check-config", loopback, key="sk-test-1")
    assert quiet.returncode == 0 and "warning" not in quiet.stderr, quiet.output
