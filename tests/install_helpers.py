"""The built package and the documented install steps, for the tests that use them.

``built_dist`` builds the sdist and the wheel (the wheel from the sdist, as
``python -m build`` does) from a copy of the source tree, and downloads the wheels of
its dependencies once, so that each venv a test makes installs from them alone
(``Dist.pip_env``): once per test session however many xdist workers ask for it.
``install_block`` is the script between the ``install:begin`` and ``install:end``
markers of ``systemd/README.md``, as written.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SYSTEMD_README = REPO / "systemd" / "README.md"
VERSION_LINE = re.compile(r'^__version__ = "([^"]+)"$', re.M)

# What the install block may name outside $PREFIX: what it reads, and the useradd
# arguments (run only with SYNCD_INSTALL_DRY=1 in the tests, so printed).
OUTSIDE_PREFIX = {
    "/dev/stdin", "/dev/null",  # read
    "/nonexistent", "/usr/sbin/nologin",  # useradd --home-dir, --shell
    "/opt/syncd/", "/etc/syncd/",  # the sed patterns that move the unit's paths
}  # fmt: skip


def source_version() -> str:
    """The version as its one source, syncd/__init__.py, writes it."""
    match = VERSION_LINE.search((REPO / "syncd" / "__init__.py").read_text("utf-8"))
    assert match, "syncd/__init__.py lost its __version__ line"
    return match.group(1)


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without what would make a child see the checkout or a key."""
    drop = ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "CREDENTIALS_DIRECTORY")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(extra)
    return env


# ---------------------------------------------------------------- the built package


@dataclass(frozen=True)
class Dist:
    source: Path  # the copy the sdist was built from
    wheel: Path
    sdist: Path
    wheelhouse: Path  # the wheel's dependencies, as pip resolves them here
    seconds: float  # to build and download

    def pip_env(self, **extra: str) -> dict[str, str]:
        """An environment in which pip installs from the wheelhouse only."""
        return clean_env(PIP_NO_INDEX="1", PIP_FIND_LINKS=str(self.wheelhouse), **extra)


def copy_tree(dest: Path) -> Path:
    """The source tree as it is now, without what git ignores (venvs, caches, builds):
    committed or not, the files a `python -m build` here would see."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO, capture_output=True, check=True, timeout=60,
    ).stdout.decode()  # fmt: skip
    for rel in filter(None, listed.split("\0")):
        src = REPO / rel
        if src.is_file() and not src.is_symlink():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    return dest


def _build(folder: Path) -> Dist:
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.fail("building the package needs git and a git checkout", pytrace=False)
    source = copy_tree(folder / "source")
    out = folder / "dist"
    started = time.monotonic()
    run = subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(out), str(source)],
        capture_output=True, text=True, env=clean_env(), timeout=600,
    )  # fmt: skip
    if run.returncode != 0 and "No module named build" in run.stderr:
        pytest.fail("the build package is missing: pip install -e '.[test]'", pytrace=False)
    assert run.returncode == 0, (run.stdout + run.stderr)[-4000:]
    version = source_version()
    wheel = out / f"syncd-{version}-py3-none-any.whl"
    sdist = out / f"syncd-{version}.tar.gz"
    assert sorted(out.iterdir()) == sorted([wheel, sdist]), sorted(out.iterdir())
    wheelhouse = folder / "wheelhouse"
    download = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--dest", str(wheelhouse),
         str(wheel)],
        capture_output=True, text=True, env=clean_env(), timeout=600,
    )  # fmt: skip
    assert download.returncode == 0, (download.stdout + download.stderr)[-4000:]
    return Dist(source, wheel, sdist, wheelhouse, time.monotonic() - started)


def built_dist(tmp_path_factory: pytest.TempPathFactory) -> Dist:
    """The sdist and the wheel, built once for the session: the xdist workers share
    their base temp's parent, and the first to take the lock builds."""
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    folder = shared / "syncd-dist"
    with open(shared / "syncd-dist.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        done = folder / "built"
        if done.exists():
            *paths, seconds = done.read_text().splitlines()
            source, wheel, sdist, wheelhouse = map(Path, paths)
            return Dist(source, wheel, sdist, wheelhouse, float(seconds))
        if folder.exists():  # a build that failed in another worker: again, here
            shutil.rmtree(folder)
        folder.mkdir()
        dist = _build(folder)
        fields = (dist.source, dist.wheel, dist.sdist, dist.wheelhouse, dist.seconds)
        done.write_text("".join(f"{field}\n" for field in fields))
        return dist


def wheel_names(wheel: Path) -> set[str]:
    with zipfile.ZipFile(wheel) as z:
        return {n for n in z.namelist() if not n.endswith("/")}


def wheel_file(wheel: Path, name: str) -> bytes:
    with zipfile.ZipFile(wheel) as z:
        return z.read(name)


# ---------------------------------------------------------------- the install block


def install_block() -> str:
    """The script between the install markers of systemd/README.md, as written."""
    text = SYSTEMD_README.read_text("utf-8")
    fenced = r"^<!-- install:begin[^>]*-->\n```bash\n(.*?\n)```\n<!-- install:end -->$"
    match = re.search(fenced, text, re.S | re.M)
    assert match, "systemd/README.md lost its install block (install:begin/install:end)"
    return match.group(1)


def code_lines(script: str) -> list[str]:
    """The script's lines without comments (whole-line or after ' # ')."""
    out = []
    for line in script.splitlines():
        if line.lstrip().startswith("#"):
            continue
        out.append(re.sub(r"\s+#\s.*$", "", line))
    return out


def paths_outside_prefix(script: str) -> set[str]:
    """Absolute paths the script names literally rather than under a variable."""
    found: set[str] = set()
    for line in code_lines(script):
        for m in re.finditer(r"(?<![\w$}:/.])(/[\w.-]+(?:/[\w.-]+)*/?)", line):
            found.add(m.group(1))
    return found
