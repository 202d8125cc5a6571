"""The built package and the systemd install as documented.

``test_wheel_installs_and_runs_without_the_checkout`` builds the sdist and the wheel
from a copy of the tree (``python -m build``: the wheel from the sdist), installs the
wheel into a venv of its own, and runs every command from a folder outside the
checkout: the embedded emulator, ``syncd emulate`` and the daemon included.

``test_install_block_runs_as_written`` runs the install block of ``systemd/README.md``
exactly as written, as ``bash install-syncd.sh WHEEL``, with ``PREFIX`` set to a
scratch folder and ``SYNCD_INSTALL_DRY=1`` (``useradd``, ``chown`` and ``systemctl``
printed, not run): the venv, the folders, the config, the key and the unit are
really installed, and the block's own ``systemd-analyze verify`` passes.

Then the mapping readable by the group ``syncd`` only, and admin commands outside the
unit.
"""

from __future__ import annotations

import functools
import os
import pwd
import re
import select
import shutil
import signal
import stat
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from tests.emulator_fixture import EmulatorHandle
from tests.engine_helpers import fast_emulator, read_mapping, remote_files
from tests.helpers import free_port
from tests.install_helpers import (
    OUTSIDE_PREFIX,
    Dist,
    built_dist,
    clean_env,
    install_block,
    paths_outside_prefix,
    source_version,
    wheel_file,
    wheel_names,
)

REPO = Path(__file__).resolve().parent.parent
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


@pytest.fixture(scope="session")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Dist:
    return built_dist(tmp_path_factory)


# ---------------------------------------------------------------- the wheel


def test_the_wheel_holds_the_package_and_its_data(dist: Dist) -> None:
    """Every file of the package (not only .py), the units and the documentation; the
    version from its one source."""
    version = source_version()
    names = wheel_names(dist.wheel)
    package = {
        p.relative_to(dist.source).as_posix()
        for p in (dist.source / "syncd").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }
    assert package == {n for n in names if n.startswith("syncd/")}
    assert "syncd/py.typed" in names
    data = f"syncd-{version}.data/data/"
    for installed, source in {
        "share/syncd/systemd/syncd@.service": "systemd/syncd@.service",
        "share/syncd/systemd/syncd.service": "systemd/syncd.service",
        "share/doc/syncd/systemd/README.md": "systemd/README.md",
        "share/doc/syncd/systemd/syncd-alerts.yml": "systemd/syncd-alerts.yml",
        "share/doc/syncd/README.md": "README.md",
        "share/doc/syncd/config.example.yaml": "config.example.yaml",
    }.items():
        assert wheel_file(dist.wheel, data + installed) == (dist.source / source).read_bytes()
    info = f"syncd-{version}.dist-info/"
    assert {info + "licenses/LICENSE", info + "entry_points.txt"} <= names
    # Nothing of the tests or the build.
    assert not {n for n in names if not n.startswith(("syncd/", data, info))}, names
    # One version source: pyproject.toml reads it from syncd/__init__.py.
    pyproject = (REPO / "pyproject.toml").read_text("utf-8")
    project = pyproject.split("[project]", 1)[1].split("\n[", 1)[0]
    assert not re.search(r"^version\s*=", project, re.M)
    assert re.search(r'^dynamic = \["version"\]$', project, re.M)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_wheel_installs_and_runs_without_the_checkout(dist: Dist, tmp_path: Path) -> None:
    version = source_version()
    venv = tmp_path / "venv"
    started = time.monotonic()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    pip = subprocess.run(
        [venv / "bin" / "pip", "install", "--quiet", str(dist.wheel)],
        capture_output=True, text=True, env=dist.pip_env(), timeout=600,
    )  # fmt: skip
    assert pip.returncode == 0, (pip.stdout + pip.stderr)[-4000:]
    installed_s = time.monotonic() - started

    # A user's folder: not the checkout, nothing of it on any path.
    work = tmp_path / "work"
    (work / "docs" / "notes").mkdir(parents=True)
    (work / "docs" / "hello.txt").write_text("hello\n")
    (work / "docs" / "notes" / "read me.md").write_text("# 你好\n", "utf-8")
    (work / "home").mkdir()
    port = free_port()
    (work / "syncd.yaml").write_text(
        "project: tour\nroot: ./docs\nstate_dir: ./state\nmapping_file: ./mapping.json\n"
        f"api:\n  base_url: embedded\n  embedded_port: {port}\n"
        "limits:\n  pacing_dir: ./pacing\n"
    )
    env = {"PATH": f"{venv / 'bin'}:/usr/local/bin:/usr/bin:/bin", "HOME": str(work / "home"),
           "LANG": "C.UTF-8"}  # fmt: skip
    transcript: list[str] = []

    def syncd(*argv: str, expect: int = 0, **kw: str) -> str:
        run = subprocess.run(["syncd", *argv], cwd=work, capture_output=True, text=True,
                             env={**env, **kw}, timeout=120)  # fmt: skip
        out = run.stdout + run.stderr
        transcript.append(f"$ syncd {' '.join(argv)}\n{out}[exit {run.returncode}]")
        assert run.returncode == expect, "\n".join(transcript)[-6000:]
        return run.stdout

    where = subprocess.run(
        [venv / "bin" / "python", "-c", "import syncd; print(syncd.__file__)"],
        cwd=work, capture_output=True, text=True, env=env, timeout=60, check=True,
    ).stdout.strip()  # fmt: skip
    assert Path(where).is_relative_to(venv), where

    assert syncd("--version").strip() == f"syncd {version}"
    # Every command's parser, and every module imports with the declared dependencies.
    commands = re.findall(r"^    (\w[\w-]*)", syncd("--help").split("positional arguments")[1],
                          re.M)  # fmt: skip
    assert {"reconcile", "status", "check-config", "run", "map", "id", "emulate"} <= set(commands)
    for command in commands:
        assert f"syncd {command}" in syncd(command, "--help")
    imports = subprocess.run(
        [venv / "bin" / "python", "-c",
         "import importlib, pkgutil, syncd\n"
         "for m in pkgutil.walk_packages(syncd.__path__, 'syncd.'):\n"
         "    if not m.name.endswith('.__main__'):\n"
         "        importlib.import_module(m.name)\n"],
        cwd=work, capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert imports.returncode == 0, imports.stderr

    # The tour, against the embedded emulator.
    assert "syncd.yaml: ok" in syncd("check-config", "-c", "syncd.yaml")
    syncd("reconcile", "-c", "syncd.yaml")
    assert "synced 2" in syncd("status", "-c", "syncd.yaml")
    mapping = dict(line.split("\t") for line in syncd("map", "-c", "syncd.yaml").splitlines())
    assert sorted(mapping) == ["hello.txt", "notes/read me.md"]
    published = read_mapping(work / "mapping.json")
    assert {p: e["file_id"] for p, e in published.items()} == mapping
    assert syncd("id", "-c", "syncd.yaml", "hello.txt").strip() == mapping["hello.txt"]
    syncd("ls-local", "-c", "syncd.yaml")
    listed = syncd("ls-remote", "-c", "syncd.yaml")
    assert all(file_id in listed for file_id in mapping.values())
    assert "uploaded" in syncd("log", "-c", "syncd.yaml")

    # The daemon: catches up, sees a new file, publishes it, stops cleanly on SIGTERM.
    daemon = subprocess.Popen(
        ["syncd", "run", "-c", "syncd.yaml"], cwd=work, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while "daemon: running" not in syncd("status", "-c", "syncd.yaml"):
            assert daemon.poll() is None and time.monotonic() < deadline, "daemon not up"
            time.sleep(0.3)
        (work / "docs" / "new.txt").write_text("new\n")
        while "new.txt" not in read_mapping(work / "mapping.json"):
            assert daemon.poll() is None and time.monotonic() < deadline, "new.txt not seen"
            time.sleep(0.3)
    finally:
        daemon.send_signal(signal.SIGTERM)
        try:
            out, _ = daemon.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            daemon.kill()
            out, _ = daemon.communicate()
    transcript.append(f"$ syncd run -c syncd.yaml   (SIGTERM)\n{out}[exit {daemon.returncode}]")
    assert daemon.returncode == 0, "\n".join(transcript)[-6000:]

    # The emulator on its own, and syncd talking HTTP to it with a key.
    emulator = subprocess.Popen(
        ["syncd", "emulate", "--port", "0", "--api-key", KEY, "--data-dir", "emulated"],
        cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        assert emulator.stdout is not None
        url, seen, deadline = None, "", time.monotonic() + 60
        while url is None and time.monotonic() < deadline:
            ready, _, _ = select.select([emulator.stdout], [], [], 1)
            if ready:
                line = emulator.stdout.readline()
                assert line, f"syncd emulate ended: {seen}"
                seen += line
                found = re.search(r"listening on (http://\S+)", line)
                url = found.group(1) if found else None
        assert url, seen
        (work / "online.yaml").write_text(
            "project: online\nroot: ./docs\nstate_dir: ./online-state\n"
            f"api:\n  base_url: {url}\n"
            "limits:\n  pacing_dir: ./pacing\n"
        )
        syncd("check-config", "--online", "-c", "online.yaml", DASHSCOPE_API_KEY=KEY)
        syncd("reconcile", "-c", "online.yaml", DASHSCOPE_API_KEY=KEY)
        assert len(syncd("map", "-c", "online.yaml").splitlines()) == 3
    finally:
        emulator.terminate()
        emulator.wait(timeout=30)

    total_s = time.monotonic() - started
    print(f"\nbuilt and downloaded in {dist.seconds:.1f} s, installed in {installed_s:.1f} s, "
          f"all in {total_s:.1f} s\n" + "\n".join(transcript))  # fmt: skip


# ---------------------------------------------------------------- the install block


def test_install_block_names_nothing_outside_its_prefix() -> None:
    """Checked before the block is run as root: every path it writes is under $PREFIX."""
    assert paths_outside_prefix(install_block()) <= OUTSIDE_PREFIX


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.skipif(analyze is None and os.environ.get("CI", "").lower() != "true",
                    reason="systemd-analyze is not installed (.ci/run installs it)")  # fmt: skip
def test_install_block_runs_as_written(dist: Dist, tmp_path: Path) -> None:
    assert analyze is not None, "CI=true but systemd-analyze is not installed"
    block = install_block()
    assert paths_outside_prefix(block) <= OUTSIDE_PREFIX
    script = tmp_path / "install-syncd.sh"
    script.write_text(block)
    prefix = tmp_path / "root"
    prefix.mkdir()
    here = tmp_path / "admin"  # where the admin runs it: not the checkout
    here.mkdir()
    # python3 is this Python, whose wheels the wheelhouse holds.
    path = f"{Path(sys.executable).parent}:{os.environ['PATH']}"
    env = dist.pip_env(PREFIX=str(prefix), SYNCD_INSTALL_DRY="1", PATH=path)

    def install(key: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run(["bash", str(script), str(dist.wheel)], cwd=here, input=key,
                              capture_output=True, text=True, env=env, timeout=600)  # fmt: skip

    run = install(f"{KEY}\n")
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-4000:]
    assert f"syncd {source_version()}" in run.stdout
    assert "docs.yaml: ok" in run.stdout  # the block's own check-config
    # verify warns without failing (unknown keys, bad values): none about our unit.
    noise = [line for line in out.splitlines() if ".service:" in line]
    assert noise == [], noise
    # The dry run printed what changes accounts and services, verify passed first.
    printed = run.stdout.splitlines()
    try:
        pwd.getpwnam("syncd")
    except KeyError:
        assert any(line.startswith("useradd --system --user-group") for line in printed)
    assert f"runuser -u syncd -- test -r {prefix}/srv/docs -a -x {prefix}/srv/docs" in printed
    assert f"chown syncd:syncd {prefix}/var/lib/syncd/docs" in printed
    assert printed[-2:] == ["systemctl daemon-reload", "systemctl enable --now syncd@docs"]

    # The folders, with their modes.
    modes = {
        "srv/docs": 0o755, "var/lib/syncd": 0o755, "var/lib/syncd/docs": 0o750,
        "etc/syncd": 0o755, "etc/syncd/docs.yaml": 0o644, "etc/syncd/docs.key": 0o600,
    }  # fmt: skip
    for rel, mode in modes.items():
        assert stat.S_IMODE((prefix / rel).stat().st_mode) == mode, rel
    key_file = prefix / "etc" / "syncd" / "docs.key"
    assert key_file.read_text().strip() == KEY

    # The unit is the shipped one, with only its paths moved under the prefix.
    unit_path = prefix / "etc" / "systemd" / "system" / UNIT
    unit_text = unit_path.read_text()
    assert unit_text.replace(str(prefix), "") == (REPO / "systemd" / UNIT).read_text()
    # What it names for the instance syncd@docs is all in place.
    unit = unit_settings(unit_text)
    exe, *args = unit["ExecStart"][-1].replace("%i", "docs").split()
    assert exe == f"{prefix}/opt/syncd/bin/syncd" and os.access(exe, os.X_OK), exe
    config = Path(args[args.index("-c") + 1])
    assert config == prefix / "etc" / "syncd" / "docs.yaml"
    cred_id, _, cred_src = unit["LoadCredential"][-1].replace("%i", "docs").partition(":")
    assert Path(cred_src) == key_file
    docs = unit_settings(unit_text, "[Unit]")["Documentation"][-1].split()
    assert docs and all(Path(d.removeprefix("file://")).is_file() for d in docs), docs
    assert yaml.safe_load(config.read_text())["root"] == str(prefix / "srv" / "docs")

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
    (tmp_path / "moved.key").rename(key_file)

    # Run again (an upgrade): the config and the key are kept, nothing asked. A config
    # that fails check-config stops the block there: nothing is verified or started.
    config.write_text(config.read_text().replace("/srv/docs", "/srv/missing"))
    again = install()
    assert again.returncode != 0, again.stdout + again.stderr
    assert "DashScope API key" not in again.stdout + again.stderr
    assert "/srv/missing" in again.stderr
    assert "systemctl" not in again.stdout
    assert key_file.read_text().strip() == KEY


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
