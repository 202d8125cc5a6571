"""The systemd install as documented: the steps of ``systemd/README.md`` run for real,
the mapping readable by the group ``syncd`` only, and admin commands outside the unit.

``test_install_steps_up_to_verify`` runs the README's install block itself: every
absolute path it writes to is moved under a scratch root (DESTDIR-style), ``sudo`` is
dropped, and ``useradd`` and ``systemctl`` are stand-ins that do nothing, so the venv,
the config, the key and the unit are really installed, and the installed unit is
checked by ``systemd-analyze verify`` (with its ``/opt/syncd`` moved under the
scratch root, so that ``ExecStart=`` exists).
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import stat
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from tests.emulator_fixture import EmulatorHandle
from tests.engine_helpers import fast_emulator, read_mapping, remote_files

REPO = Path(__file__).resolve().parent.parent
README = REPO / "systemd" / "README.md"
UNIT = "syncd@.service"
KEY = "sk-install-test"

analyze = shutil.which("systemd-analyze")


def unit_settings(text: str, section: str = "[Service]") -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    current = ""
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("["):
            current = line
        elif line and not line.startswith("#") and current == section and "=" in line:
            key, _, value = line.partition("=")
            out.setdefault(key, []).append(value)
    return out


def install_block() -> str:
    """The bash block that follows the README's install-steps marker."""
    text = README.read_text()
    match = re.search(r"<!-- install-steps[^>]*-->\s*```bash\n(.*?)\n```", text, re.S)
    assert match, "systemd/README.md lost its install block"
    return match.group(1)


def under(destdir: Path, script: str) -> str:
    """The script with sudo dropped and every absolute path it writes moved under destdir."""
    script = re.sub(r"\bsudo ", "", script)
    return re.sub(r"(?<![\w./])/(opt|etc|var|srv)/", lambda m: f"{destdir}/{m.group(1)}/", script)


def copy_checkout(dest: Path) -> Path:
    """The checkout's files as they are now (tracked ones), without build leftovers."""
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True, timeout=60
    ).stdout.decode()
    for rel in filter(None, listed.split("\0")):
        src = REPO / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    return dest


def stand_ins(folder: Path) -> Path:
    """useradd and systemctl that change nothing on this machine."""
    folder.mkdir()
    for name in ("useradd", "systemctl"):
        path = folder / name
        path.write_text("#!/bin/sh\nexit 0\n")
        path.chmod(0o755)
    return folder


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("CREDENTIALS_DIRECTORY",)}
    env.pop("VIRTUAL_ENV", None)
    env.update(extra)
    return env


@pytest.mark.slow
@pytest.mark.skipif(analyze is None, reason="systemd-analyze is not installed")
@pytest.mark.skipif(shutil.which("git") is None, reason="git is needed to copy the checkout")
def test_install_steps_up_to_verify(tmp_path: Path) -> None:
    destdir = tmp_path / "root"
    (destdir / "srv" / "docs").mkdir(parents=True)
    (destdir / "srv" / "docs" / "a.txt").write_text("a\n")
    checkout = copy_checkout(tmp_path / "checkout")
    bin_dir = stand_ins(tmp_path / "bin")

    steps = under(destdir, install_block())
    # The unit as a package built for DESTDIR would carry it: /opt/syncd moved too.
    verify = next(i for i, line in enumerate(steps.splitlines())
                  if line.startswith("systemd-analyze verify"))  # fmt: skip
    lines = steps.splitlines()
    unit_path = destdir / "etc" / "systemd" / "system" / UNIT
    lines.insert(verify, f"sed -i 's#/opt/syncd/#{destdir}/opt/syncd/#g' '{unit_path}'")
    env = clean_env(PATH=f"{bin_dir}:{os.environ['PATH']}")
    env.pop("PYTHONPATH", None)
    run = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", "\n".join(lines)],
        cwd=checkout, input=f"{KEY}\n", capture_output=True, text=True, env=env, timeout=900,
    )  # fmt: skip
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-4000:]
    # verify warns without failing (unknown keys, bad values): none about our unit.
    noise = [line for line in out.splitlines() if ".service:" in line]
    assert noise == [], noise
    assert "docs.yaml: ok" in run.stdout  # the steps' own check-config

    # What the installed unit names, for the instance syncd@docs, is all in place.
    unit = unit_settings(unit_path.read_text())
    exe, *args = unit["ExecStart"][-1].replace("%i", "docs").split()
    assert os.access(exe, os.X_OK), exe
    config = Path(args[args.index("-c") + 1].replace("/etc/", f"{destdir}/etc/", 1))
    assert config.is_file(), config
    cred_id, _, cred_src = unit["LoadCredential"][-1].replace("%i", "docs").partition(":")
    key_file = Path(cred_src.replace("/etc/", f"{destdir}/etc/", 1))
    assert key_file.read_text().strip() == KEY
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    docs = unit_settings(unit_path.read_text(), "[Unit]")["Documentation"][-1].split()
    assert docs and all(Path(d.removeprefix("file://")).is_file() for d in docs), docs

    syncd = Path(exe)
    # Outside the unit (an admin), the documented fallback reads the key file itself.
    admin = subprocess.run([syncd, "check-config", "-c", config], capture_output=True,
                           text=True, env=clean_env(), timeout=120)  # fmt: skip
    assert admin.returncode == 0, admin.stdout + admin.stderr
    # Inside it, the key comes from the credential systemd makes: named by its ID
    # in $CREDENTIALS_DIRECTORY. With the file itself out of the way, that alone works.
    creds = tmp_path / "credentials" / "syncd@docs.service"
    creds.mkdir(parents=True)
    shutil.copy(key_file, creds / cred_id)
    key_file.rename(tmp_path / "moved.key")
    unit_run = subprocess.run(
        [syncd, "check-config", "-c", config], capture_output=True, text=True,
        env=clean_env(CREDENTIALS_DIRECTORY=str(creds)), timeout=120,
    )  # fmt: skip
    assert unit_run.returncode == 0, unit_run.stdout + unit_run.stderr
    without = subprocess.run([syncd, "check-config", "-c", config], capture_output=True,
                             text=True, env=clean_env(), timeout=120)  # fmt: skip
    assert without.returncode == 2
    assert "cannot read API key file" in without.stderr and "docs.key" in without.stderr


# ---------------------------------------------------------------- the mapping's readers

SERVICE_UID, SYNCD_GID, READER_UID, OUTSIDER = 4241, 4242, 4243, 65534


@pytest.fixture
def host() -> Iterator[Path]:
    """A scratch / that other uids can walk (pytest's tmp_path is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="syncd-host-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def as_user(uid: int, gid: int, argv: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # type: ignore[call-overload, no-any-return]
        argv, user=uid, group=gid, extra_groups=[], capture_output=True, text=True,
        timeout=120, **kw,
    )  # fmt: skip


@functools.cache
def python_for_others() -> tuple[str, str]:
    """An interpreter other uids can run with syncd importable, and its PYTHONPATH: this
    one may sit under root's private home, the system's of the same version may not."""
    path = os.pathsep.join([str(REPO), sysconfig.get_paths()["purelib"]])
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    system = "/usr/local/bin:/usr/bin:/bin"
    for candidate in (sys.executable, shutil.which(version, path=system)):
        if candidate is None:
            continue
        try:
            probe = as_user(OUTSIDER, OUTSIDER, [candidate, "-c", "import syncd.cli"],
                            env=clean_env(PYTHONPATH=path), cwd="/")  # fmt: skip
        except PermissionError:  # under a home only its owner may enter
            continue
        if probe.returncode == 0:
            return candidate, path
    pytest.skip("no Python that another uid can run imports syncd")


def read_as(uid: int, gid: int, path: Path) -> bool:
    probe = as_user(uid, gid, [python_for_others()[0], "-c", f"open({str(path)!r}).close()"],
                    cwd="/")  # fmt: skip
    return probe.returncode == 0


@pytest.mark.skipif(os.geteuid() != 0, reason="runs syncd and its readers under other uids")
def test_group_syncd_reads_the_mapping_and_nothing_else(
    host: Path, emulator_factory: Callable[..., EmulatorHandle]
) -> None:
    """A real sync run as the unit runs it (UMask=, StateDirectoryMode=, RuntimeDirectory=,
    the key as a credential, the state owned by User= and Group=); then a member of the
    group reads the mapping, with `syncd map` too, and nothing else of the state; another
    user, nothing."""
    unit = unit_settings((REPO / "systemd" / UNIT).read_text())
    python, pythonpath = python_for_others()
    emu = fast_emulator(emulator_factory)
    root = host / "srv" / "docs"
    (root / "notes").mkdir(parents=True)
    (root / "notes" / "a.txt").write_text("a\n")
    (root / "b.md").write_text("# b\n")

    state = host / "var" / "lib" / "syncd" / "docs"  # StateDirectory=, made by systemd
    state.mkdir(parents=True)
    os.chown(state, SERVICE_UID, SYNCD_GID)
    state.chmod(int(unit["StateDirectoryMode"][-1], 8))
    runtime = host / "run" / unit["RuntimeDirectory"][-1]
    runtime.mkdir(parents=True)
    runtime.chmod(int(unit["RuntimeDirectoryMode"][-1], 8))
    creds = host / "run" / "credentials" / "syncd@docs.service"
    creds.mkdir(parents=True)
    (creds / "docs.key").write_text(emu.api_key + "\n")
    creds.chmod(0o500)
    (creds / "docs.key").chmod(0o400)

    config = host / "etc" / "syncd" / "docs.yaml"
    config.parent.mkdir(parents=True)
    config.write_text(yaml.safe_dump({
        "project": "docs", "root": str(root), "state_dir": str(state),
        "api": {"base_url": emu.url,
                "api_key_file": f"${{CREDENTIALS_DIRECTORY:-{config.parent}}}/docs.key"},
        "limits": {"upload_qps": 200, "read_qps": 200, "delete_qps": 200},
        "logging": {"format": "json"},
    }))  # fmt: skip
    env = clean_env(CREDENTIALS_DIRECTORY=str(creds), RUNTIME_DIRECTORY=str(runtime))
    # Run as root with the unit's umask, then owned as the service's user would own
    # it: the test's interpreter may be one only root can run.
    sync = subprocess.run([sys.executable, "-m", "syncd", "reconcile", "-c", str(config)],
                          env=env, umask=int(unit["UMask"][-1], 8), capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert sync.returncode == 0, sync.stdout + sync.stderr
    for path in [state, *state.rglob("*")]:
        os.chown(path, SERVICE_UID, SYNCD_GID, follow_symlinks=False)

    mapping = state / "mapping.json"
    published = read_mapping(mapping)
    assert sorted(published) == ["b.md", "notes/a.txt"]
    assert {e["file_id"] for e in published.values()} == set(remote_files(emu))

    reader_env = clean_env(HOME=str(host), PYTHONPATH=pythonpath)
    assert read_as(READER_UID, SYNCD_GID, mapping)
    consumer = as_user(READER_UID, SYNCD_GID,
                       [python, "-m", "syncd", "map", "-c", str(config),
                        "--format", "lines"], env=reader_env, cwd=host)  # fmt: skip
    assert consumer.returncode == 0, consumer.stdout + consumer.stderr
    assert f"notes/a.txt\t{published['notes/a.txt']['file_id']}" in consumer.stdout
    private = [p for p in state.rglob("*") if p != mapping]
    assert private, "the state folder holds the SQLite state and the lock"
    for path in private:
        assert stat.S_IMODE(path.lstat().st_mode) & 0o077 == 0, path
        if path.is_file():
            assert not read_as(READER_UID, SYNCD_GID, path), path
    assert not read_as(OUTSIDER, OUTSIDER, mapping)


# ---------------------------------------------------------------- admin commands


def test_admin_commands_run_outside_the_unit(
    tmp_path: Path, emulator_factory: Callable[..., EmulatorHandle]
) -> None:
    """The config says ${CREDENTIALS_DIRECTORY}, bare: outside the unit, the commands
    that need no key work and those that need one say which variable is missing."""
    emu = fast_emulator(emulator_factory)
    root = tmp_path / "docs"
    root.mkdir()
    (root / "a.txt").write_text("a\n")
    creds = tmp_path / "credentials"
    creds.mkdir()
    (creds / "docs.key").write_text(emu.api_key + "\n")
    config = tmp_path / "docs.yaml"
    config.write_text(yaml.safe_dump({
        "project": "docs", "root": str(root), "state_dir": str(tmp_path / "state"),
        "api": {"base_url": emu.url, "api_key_file": "${CREDENTIALS_DIRECTORY}/docs.key"},
        "limits": {"upload_qps": 200, "read_qps": 200, "delete_qps": 200,
                   "pacing_dir": str(tmp_path / "pacing")},
    }))  # fmt: skip

    def syncd(*argv: str, creds_dir: Path | None = None) -> subprocess.CompletedProcess[str]:
        env = clean_env(**({"CREDENTIALS_DIRECTORY": str(creds_dir)} if creds_dir else {}))
        return subprocess.run([sys.executable, "-m", "syncd", argv[0], "-c", str(config),
                               *argv[1:]], capture_output=True, text=True, env=env,
                              timeout=120)  # fmt: skip

    unit = syncd("reconcile", creds_dir=creds)  # as the service would
    assert unit.returncode == 0, unit.stdout + unit.stderr
    file_id = read_mapping(tmp_path / "state" / "mapping.json")["a.txt"]["file_id"]
    assert set(remote_files(emu)) == {file_id}

    status = syncd("status")
    assert status.returncode == 0, status.stdout + status.stderr
    assert "docs" in status.stdout
    ids = syncd("id", "a.txt")
    assert ids.returncode == 0 and ids.stdout.strip() == file_id, ids.stdout + ids.stderr
    listed = syncd("map", "--format", "lines")
    assert listed.returncode == 0 and file_id in listed.stdout, listed.stdout + listed.stderr
    for needs_key in (("check-config",), ("reconcile",)):
        run = syncd(*needs_key)
        assert run.returncode == 2, run.stdout + run.stderr
        assert "config error" not in run.stderr
        assert "CREDENTIALS_DIRECTORY not set" in run.stderr, run.stderr
        assert emu.api_key not in run.stdout + run.stderr
    assert set(remote_files(emu)) == {file_id}
