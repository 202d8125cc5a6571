"""Rate limits, injected faults and introspection of the emulator."""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Callable

import httpx
import pytest

from tests.emulator_fixture import EmulatorHandle
from tests.helpers import wait_until

Factory = Callable[..., EmulatorHandle]


def upload(http: httpx.Client, name: str = "a.txt", body: bytes = b"x") -> httpx.Response:
    return http.post("/files", data={"purpose": "file-extract"}, files={"file": (name, body)})


def client(emu: EmulatorHandle, key: str | None = None) -> httpx.Client:
    return httpx.Client(base_url=emu.url, timeout=30,
                        headers={"Authorization": f"Bearer {key or emu.api_key}"})


def burst(http: httpx.Client, n: int, call: Callable[[httpx.Client], httpx.Response]
          ) -> tuple[list[int], float]:
    start = time.monotonic()
    codes = [call(http).status_code for _ in range(n)]
    return codes, time.monotonic() - start


def test_rate_limiter_rejects_the_21st_read_in_a_second(emulator: EmulatorHandle) -> None:
    with client(emulator) as http:
        codes, took = burst(http, 25, lambda h: h.get("/files"))
        if took >= 1.0:
            pytest.skip("machine too slow to send 25 requests in one second")
        assert codes[:20] == [200] * 20
        assert set(codes[20:]) == {429}
        r = http.get("/files")
        body = r.json()
        if r.status_code == 429:
            assert body["error"] == {
                "message": "Requests rate limit exceeded, please try again later.",
                "type": "limit_requests", "param": None, "code": "limit_requests"}
            assert "retry-after" not in r.headers
        # The other key is a separate account with its own budget.
        with client(emulator, emulator.api_keys[1]) as other:
            assert other.get("/files").status_code == 200
    stats = emulator.stats()
    assert stats["throttled"]["read"] >= 5
    assert stats["max_per_second"]["read"] >= 25
    assert stats["requests"]["read"] >= 27
    emulator.reset_stats()
    assert emulator.stats()["requests"]["read"] == 0


def test_window_slides_and_retry_after(emulator_factory: Factory) -> None:
    emu = emulator_factory(delete_rate=2, retry_after=True)
    with client(emu) as http:
        codes = [http.delete(f"/files/file-fe-{i:024x}").status_code for i in range(3)]
        assert codes == [404, 404, 429]
        r = http.delete("/files/file-fe-" + "0" * 24)
        assert r.status_code == 429 and r.headers["retry-after"] == "1"
        assert wait_until(lambda: http.delete("/files/x").status_code == 404, timeout=3)


def test_newer_profile_shares_read_and_delete(emulator_factory: Factory) -> None:
    emu = emulator_factory(rate_profile="newer")
    assert emu.configure()["rates"] == {"upload": 3, "read": 10, "delete": 10}
    with client(emu) as http:
        codes = [http.get("/files").status_code for _ in range(6)]
        codes += [http.delete("/files/nope").status_code for _ in range(5)]
        assert codes == [200] * 6 + [404] * 4 + [429]
        ups = [upload(http).status_code for _ in range(4)]
        assert ups == [200, 200, 200, 429]


def test_rate_limit_off_and_live_config(emulator_factory: Factory) -> None:
    emu = emulator_factory(rate_limit="off")
    with client(emu) as http:
        assert {http.get("/files").status_code for _ in range(40)} == {200}
        settings = emu.configure(rate_limit=True, rates={"read": 5})
        assert settings["rates"]["read"] == 5 and settings["rate_limit"] is True
        assert [http.get("/files").status_code for _ in range(6)][-1] == 429


def test_injected_faults_are_seeded_and_counted(emulator_factory: Factory) -> None:
    def run(emu: EmulatorHandle) -> list[int]:
        with client(emu) as http:
            return [http.get("/files").status_code for _ in range(15)]

    a = run(emulator_factory(fault_5xx=0.3, fault_429=0.2, rate_limit="off", seed=7))
    b = run(emulator_factory(fault_5xx=0.3, fault_429=0.2, rate_limit="off", seed=7))
    assert a == b
    assert set(a) >= {200} and set(a) <= {200, 429, 500, 503}
    assert any(c in (500, 503) for c in a)


def test_injected_5xx_body(emulator: EmulatorHandle) -> None:
    emulator.configure(fault_5xx=1)
    with client(emulator) as http:
        r = http.get("/files")
        assert r.status_code in (500, 503)
        assert r.json()["error"]["type"] == "internal_error"
        assert r.json()["request_id"] == r.headers["x-request-id"]
    emulator.configure(fault_5xx=0, fault_429=1)
    with client(emulator) as http:
        assert http.get("/files").status_code == 429
    stats = emulator.stats()
    assert stats["faults"]["5xx"] == 1 and stats["faults"]["429"] == 1
    assert stats["throttled"]["read"] == 0


def test_latency(emulator: EmulatorHandle) -> None:
    emulator.configure(latency_ms=300)
    with client(emulator) as http:
        start = time.monotonic()
        http.get("/files")
        assert time.monotonic() - start >= 0.3
        # The control API is never slowed or faulted.
        emulator.configure(fault_5xx=1, drop_before=1)
        assert emulator.stats()["faults"]["5xx"] == 0


def test_drop_before_gives_no_response(emulator: EmulatorHandle) -> None:
    emulator.configure(drop_before=1)
    with client(emulator) as http:
        with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
            http.get("/files")
        with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
            upload(http, body=b"y" * 300_000)
    assert emulator.stats()["faults"]["drop_before"] == 2
    emulator.configure(drop_before=0)
    assert emulator.files() == []


def test_drop_after_store_keeps_the_file(emulator: EmulatorHandle) -> None:
    emulator.configure(drop_after_store=1)
    with client(emulator) as http:
        with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
            upload(http, "dup.txt")
        # The connection is gone but the server goes on serving others.
        assert http.get("/files").status_code == 200
    files = emulator.files()
    assert [f["filename"] for f in files] == ["dup.txt"]
    stats = emulator.stats()
    assert stats["faults"]["drop_after_store"] == 1 and stats["mutations"]["upload"] == 1


def test_concurrent_uploads_all_stored(emulator_factory: Factory) -> None:
    emu = emulator_factory(rate_limit="off")
    with client(emu) as http, concurrent.futures.ThreadPoolExecutor(50) as pool:
        http._transport = httpx.HTTPTransport(limits=httpx.Limits(max_connections=200))
        futures = [pool.submit(upload, http, f"c{i}.txt", str(i).encode()) for i in range(200)]
        results = [f.result() for f in futures]
    assert {r.status_code for r in results} == {200}
    ids = {r.json()["id"] for r in results}
    assert len(ids) == 200
    assert {f["id"] for f in emu.files()} == ids
    stats = emu.stats()
    assert stats["mutations"]["upload"] == 200 and stats["requests"]["upload"] == 200
    assert sum(a["files"] for a in stats["accounts"].values()) == 200


def test_admin_api(emulator: EmulatorHandle) -> None:
    assert httpx.get(f"{emulator.root_url}/_emulator/health").status_code == 200
    stats = emulator.stats()
    assert set(stats) == {"requests", "mutations", "throttled", "faults", "max_per_second",
                          "accounts", "upload_body_bytes", "uptime_s"}
    assert stats["faults"] == {"5xx": 0, "429": 0, "drop_before": 0, "drop_after_store": 0,
                               "list_omit": 0}
    bad = httpx.post(f"{emulator.root_url}/_emulator/config", json={"fault_5xx": 3})
    assert bad.status_code == 400
    settings = emulator.configure(max_files=3, max_bytes=10)
    assert (settings["max_files"], settings["max_bytes"]) == (3, 10)


def _non_loopback_ipv4() -> str | None:
    import socket

    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        # connect() on UDP sends nothing; it only picks the outgoing interface.
        probe.connect(("192.0.2.1", 9))
        address: str = probe.getsockname()[0]
    except OSError:
        return None
    finally:
        probe.close()
    return None if address.startswith("127.") else address


def test_control_api_refuses_non_loopback_clients(emulator_factory: Factory) -> None:
    address = _non_loopback_ipv4()
    if address is None:
        pytest.skip("no non-loopback IPv4 address on this machine")
    emu = emulator_factory(host="0.0.0.0")
    port = emu.port
    remote = httpx.get(f"http://{address}:{port}/_emulator/stats", timeout=10)
    assert remote.status_code == 403
    api = httpx.get(f"http://{address}:{port}/compatible-mode/v1/files", timeout=10,
                    headers={"Authorization": f"Bearer {emu.api_key}"})
    assert api.status_code == 200
    assert httpx.get(f"http://127.0.0.1:{port}/_emulator/stats", timeout=10).status_code == 200


def test_api_keys_from_environment(emulator_factory: Factory,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from syncd.emulator.cli import build_parser, settings_from_args

    monkeypatch.setenv("SYNCD_EMULATOR_API_KEYS", "sk-a, sk-b")
    args = build_parser().parse_args(["--api-key", "sk-c", "--max-bytes", "500MB"])
    settings = settings_from_args(args)
    assert settings.api_keys == ["sk-c", "sk-a", "sk-b"]
    assert settings.max_bytes == 500 * 1024 * 1024
    monkeypatch.delenv("SYNCD_EMULATOR_API_KEYS")
    assert settings_from_args(build_parser().parse_args([])).effective_api_keys() == [
        "sk-emulator"]
