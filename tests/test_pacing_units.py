"""Two ``syncd@`` instances on one host share one pacing budget under the shipped unit.

Without systemd the test takes the unit's own settings and does what systemd would
with them: every instance runs as ``User=`` (one uid for all, not a DynamicUser's
uid per instance), with ``RUNTIME_DIRECTORY`` set to ``/run/<RuntimeDirectory=>``
(made with ``RuntimeDirectoryMode=`` and kept by ``RuntimeDirectoryPreserve=``), and
``PrivateTmp=`` giving each its own /tmp. The instances must then find the same
pacing folder, accept it (owned by their uid, not group/other-writable), and share
their budget.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from syncd.api.pacing import Pacer, default_pacing_dir

REPO = Path(__file__).resolve().parent.parent
UNITS = ("syncd.service", "syncd@.service")


def settings(name: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    section = ""
    for raw in (REPO / "systemd" / name).read_text().splitlines():
        line = raw.strip()
        if line.startswith("["):
            section = line
        elif line and not line.startswith("#") and section == "[Service]" and "=" in line:
            key, _, value = line.partition("=")
            out.setdefault(key, []).append(value)
    return out


@pytest.mark.parametrize("unit", UNITS)
def test_unit_gives_every_instance_one_uid_and_one_runtime_dir(unit: str) -> None:
    s = settings(unit)
    assert s.get("DynamicUser", ["no"])[-1] == "no", "a uid per instance: budgets split"
    assert s.get("User") == ["syncd"] and s.get("Group") == ["syncd"]
    runtime = s["RuntimeDirectory"][-1]
    assert "%" not in runtime, "a runtime folder per instance splits the budget"
    assert s["RuntimeDirectoryPreserve"][-1] == "yes", "one instance's stop would remove it"
    mode = int(s["RuntimeDirectoryMode"][-1], 8)
    assert mode & 0o022 == 0, "the pacer refuses a group/other-writable folder"
    # Not under /tmp: PrivateTmp= gives each instance its own.
    assert s.get("PrivateTmp") == ["yes"]
    assert not runtime.startswith("/tmp")


def instance_env(run: Path, unit: str, instance: str) -> dict[str, str]:
    """The environment systemd gives an instance (the parts that choose the pacing folder)."""
    runtime = settings(unit)["RuntimeDirectory"][-1].replace("%i", instance)
    return {
        "RUNTIME_DIRECTORY": str(run / runtime),
        "TMPDIR": str(run / f"private-tmp-{instance}"),
    }


def test_two_instances_share_one_budget(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    unit = "syncd@.service"
    mode = int(settings(unit)["RuntimeDirectoryMode"][-1], 8)
    run = tmp_path / "run"
    folders = []
    for instance in ("docs", "wiki"):
        for key, value in instance_env(run, unit, instance).items():
            monkeypatch.setenv(key, value)
        runtime = Path(os.environ["RUNTIME_DIRECTORY"])
        runtime.mkdir(parents=True, exist_ok=True)
        runtime.chmod(mode)
        folders.append(default_pacing_dir())
    assert folders[0] == folders[1]
    ceilings = {"upload": 5.0, "read": 5.0, "delete": 5.0}
    docs = Pacer(ceilings, state_dir=folders[0], key_fingerprint="k")
    wiki = Pacer(ceilings, state_dir=folders[1], key_fingerprint="k")
    try:
        for _ in range(5):  # the whole second's budget, taken by one instance
            assert docs.acquire("upload") < 0.5
        # ... leaves the other waiting for the window to pass.
        assert wiki.acquire("upload") > 0.5
    finally:
        docs.close()
        wiki.close()
