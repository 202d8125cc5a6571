"""The shared pacing folder against a hostile neighbour: planted folders, symlinks, links."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from syncd.api.key import ApiKey
from syncd.api.pacing import Pacer, PacingDirError, default_pacing_dir
from tests.emulator_fixture import EmulatorHandle
from tests.helpers_client import make_client, write_text_files

CEILINGS = {"upload": 5.0, "read": 5.0, "delete": 5.0}
VICTIM_TEXT = "root:x:0:0:do not touch\n"
# A uid that is not ours, for a folder "someone else" prepared.
NEIGHBOUR_UID = 65534


def victim(tmp_path: Path) -> Path:
    path = tmp_path / "victim"
    path.write_text(VICTIM_TEXT)
    return path


def plant(folder: Path, fingerprint: str, target: Path) -> None:
    """What the neighbour does: a symlink per call class at the names syncd will use."""
    for cls in ("upload", "read", "delete"):
        (folder / f"{fingerprint}-{cls}.json").symlink_to(target)
        (folder / f".{fingerprint}-{cls}.json.tmp").symlink_to(target)


def test_symlinks_in_our_own_folder_are_replaced_never_followed(
    emulator: EmulatorHandle, tmp_path: Path
) -> None:
    target = victim(tmp_path)
    folder = tmp_path / "pacing"
    folder.mkdir(mode=0o700)
    fingerprint = ApiKey(emulator.api_key).fingerprint()
    plant(folder, fingerprint, target)
    paths = write_text_files(tmp_path / "docs", 5)
    with make_client(emulator.url, emulator.api_key, pacing_dir=folder) as client:
        for path in paths:
            client.upload(path, "file-extract")
        client.list_files()
    assert target.read_text() == VICTIM_TEXT
    assert len(emulator.files()) == 5
    # The state now lives in plain files of ours, where the symlinks were.
    for cls in ("upload", "read"):
        st = os.lstat(folder / f"{fingerprint}-{cls}.json")
        assert stat.S_ISREG(st.st_mode) and st.st_uid == os.geteuid()


def test_a_world_writable_folder_is_refused(tmp_path: Path) -> None:
    target = victim(tmp_path)
    folder = tmp_path / "syncd-pacing"
    folder.mkdir()
    folder.chmod(0o777)
    plant(folder, "abc", target)
    with pytest.raises(PacingDirError) as caught:
        Pacer(CEILINGS, state_dir=folder, key_fingerprint="abc")
    message = str(caught.value)
    assert str(folder) in message and "writable by group or others" in message
    assert "limits.pacing_dir" in message
    assert target.read_text() == VICTIM_TEXT
    assert not list(folder.glob("*.lock"))


def someone_elses_folder(tmp_path: Path) -> Path:
    if os.geteuid() != 0:
        return Path("/")  # root's, and not ours
    folder = tmp_path / "syncd-pacing"
    folder.mkdir(mode=0o755)
    os.chown(folder, NEIGHBOUR_UID, NEIGHBOUR_UID)
    return folder


def test_a_folder_of_another_user_is_refused_before_anything_is_written(
    tmp_path: Path,
) -> None:
    folder = someone_elses_folder(tmp_path)
    before = sorted(os.listdir(folder))
    with pytest.raises(PacingDirError) as caught:
        Pacer(CEILINGS, state_dir=folder, key_fingerprint="abc")
    assert str(folder) in str(caught.value) and "not to this user" in str(caught.value)
    assert sorted(os.listdir(folder)) == before


def test_the_issue_scenario_a_neighbour_prepared_the_folder(
    emulator: EmulatorHandle, tmp_path: Path
) -> None:
    """The neighbour creates the folder first and plants the symlink; syncd's client
    then refuses with a clear error and the victim keeps its content."""
    if os.geteuid() != 0:
        pytest.skip("needs root to create a folder owned by another user")
    target = victim(tmp_path)
    folder = tmp_path / "syncd-pacing"
    folder.mkdir(mode=0o755)
    plant(folder, ApiKey(emulator.api_key).fingerprint(), target)
    os.chown(folder, NEIGHBOUR_UID, NEIGHBOUR_UID)
    with pytest.raises(PacingDirError, match="belongs to uid 65534"):
        make_client(emulator.url, emulator.api_key, pacing_dir=folder)
    assert target.read_text() == VICTIM_TEXT


def test_a_hard_linked_or_symlinked_lock_file_is_refused(tmp_path: Path) -> None:
    target = victim(tmp_path)
    for kind in ("symlink", "hardlink"):
        folder = tmp_path / kind
        folder.mkdir(mode=0o700)
        lock = folder / "abc-upload.lock"
        if kind == "symlink":
            lock.symlink_to(target)
        else:
            os.link(target, lock)
        with pytest.raises(PacingDirError, match=r"abc-upload\.lock"):
            Pacer(CEILINGS, state_dir=folder, key_fingerprint="abc")
    assert target.read_text() == VICTIM_TEXT


def test_a_new_folder_is_private(tmp_path: Path) -> None:
    folder = tmp_path / "a" / "b" / "pacing"
    pacer = Pacer(CEILINGS, state_dir=folder, key_fingerprint="abc")
    try:
        pacer.acquire("upload")
    finally:
        pacer.close()
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert {stat.S_IMODE(p.stat().st_mode) for p in folder.iterdir()} == {0o600}


def test_default_folder_is_per_user_not_a_temp_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RUNTIME_DIRECTORY", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    # Under systemd's RuntimeDirectory=.
    monkeypatch.setenv("RUNTIME_DIRECTORY", "/run/syncd:/run/other")
    assert default_pacing_dir() == Path("/run/syncd/pacing")
    monkeypatch.delenv("RUNTIME_DIRECTORY")
    # A login session's runtime dir, when it is ours.
    runtime = tmp_path / "run-user"
    runtime.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    assert default_pacing_dir() == runtime / "syncd" / "pacing"
    # Someone else's runtime dir (sudo -E keeps the variable): not used.
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(someone_elses_folder(tmp_path)))
    assert default_pacing_dir() == tmp_path / "home" / ".cache" / "syncd" / "pacing"
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    assert default_pacing_dir() == tmp_path / "home" / ".cache" / "syncd" / "pacing"
    # Whatever it picks, it is not under the shared temp dir.
    assert not str(default_pacing_dir()).startswith("/tmp/syncd")
