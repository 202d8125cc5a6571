"""The command's cache of the methods dataclasses compiles: classes made from it behave
as compiled ones, a run that found everything there leaves it alone, and only a
cache of this user alone is read."""

from __future__ import annotations

import json
import marshal
import os
import subprocess
import sys
from importlib.util import MAGIC_NUMBER
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CACHE_NAME = f"dataclass-methods.{sys.implementation.cache_tag}.opt0"

# What a class made by dataclasses looks like from outside, for every dataclass of the
# modules a one-off reconcile loads: signature, annotations, doc, hashability, and
# for those built without arguments their repr, equality, hash and frozenness.
# A frozenset's members are shown sorted: the order it iterates in is its table's, which
# differs with the hash seed and with how its constant was loaded (compiled from source
# or read from a .pyc), whatever made the class.
_SNAPSHOT = r"""
import dataclasses, inspect, json, re, sys
def unordered(text):
    return re.sub(r"frozenset\(\{([^{}]*)\}\)",
                  lambda m: "frozenset({" + ", ".join(sorted(m[1].split(", "))) + "})", text)
if sys.argv[1] == "cached":
    from syncd.__main__ import trim_start_up
    trim_start_up()
import syncd.cli, syncd.bootstrap, syncd.engine.sync, syncd.engine.scan, syncd.api.client
seen = {}
for name, module in sorted(sys.modules.items()):
    if not name.startswith("syncd.") or module is None:
        continue
    for cls in vars(module).values():
        if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)
                and cls.__module__ == name):
            continue
        shown = [unordered(str(inspect.signature(cls))), cls.__doc__, cls.__hash__ is None,
                 repr(cls.__init__.__annotations__), getattr(cls, "__match_args__", None)]
        fields = dataclasses.fields(cls)
        try:
            one, two = cls(), cls()
            shown += [unordered(repr(one)), one == two, one != dataclasses.replace(two)]
            if cls.__hash__ is not None:
                shown.append(hash(one) == hash(two))
            if fields:
                setattr(one, fields[0].name, None)
                shown.append("assignable")
        except dataclasses.FrozenInstanceError as exc:
            shown.append(f"frozen: {exc}")
        except Exception as exc:
            shown.append(type(exc).__name__)
        seen[f"{name}.{cls.__qualname__}"] = repr(shown)
print(json.dumps(seen))
"""


def snapshot(cache_home: Path, mode: str, **env: str) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "XDG_CACHE_HOME": str(cache_home), "PYTHONPATH": str(REPO)}
    full.pop("PYTHONDONTWRITEBYTECODE", None)
    full.update(env)
    return subprocess.run([sys.executable, "-c", _SNAPSHOT, mode], capture_output=True,
                          text=True, env=full, timeout=120, check=False)  # fmt: skip


def seen(run: subprocess.CompletedProcess[str]) -> dict[str, str]:
    assert run.returncode == 0, run.stderr
    return dict(json.loads(run.stdout))


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Every class as Python makes it, with no cache."""
    classes = seen(snapshot(tmp_path_factory.mktemp("plain"), "plain"))
    assert len(classes) > 50
    return classes


def test_classes_from_the_cache_are_the_classes_python_makes(
    tmp_path: Path, plain: dict[str, str]
) -> None:
    cache = tmp_path / "syncd" / CACHE_NAME
    assert seen(snapshot(tmp_path, "cached")) == plain  # compiled, and written
    assert (cache.stat().st_mode & 0o777, cache.parent.stat().st_mode & 0o777) == (0o600, 0o700)
    written = cache.stat()

    assert seen(snapshot(tmp_path, "cached")) == plain  # every method from the cache
    again = cache.stat()
    # Nothing was missing, so nothing was written.
    assert (again.st_ino, again.st_mtime_ns) == (written.st_ino, written.st_mtime_ns)


def test_a_cache_is_read_only_when_it_is_this_users_alone(
    tmp_path: Path, plain: dict[str, str]
) -> None:
    seen(snapshot(tmp_path, "cached"))
    cache = tmp_path / "syncd" / CACHE_NAME
    sources = marshal.loads(cache.read_bytes()[len(MAGIC_NUMBER) :])
    poison = compile("def __create_fn__(*a, **kw):\n    raise RuntimeError('poisoned')\n",
                     "<string>", "exec")  # fmt: skip

    def poisoned(at: Path, mode: int) -> None:
        at.unlink(missing_ok=True)
        at.write_bytes(MAGIC_NUMBER + marshal.dumps(dict.fromkeys(sources, poison)))
        at.chmod(mode)

    # Trusted, it is run: the checks below are what keep anyone else's code out.
    poisoned(cache, 0o600)
    assert "poisoned" in snapshot(tmp_path, "cached").stderr

    poisoned(cache, 0o620)  # writable by the group
    assert seen(snapshot(tmp_path, "cached")) == plain

    poisoned(cache, 0o600)
    cache.parent.chmod(0o770)  # in a folder the group may write to
    assert seen(snapshot(tmp_path, "cached")) == plain
    cache.parent.chmod(0o700)

    elsewhere = tmp_path / "elsewhere"
    poisoned(elsewhere, 0o600)
    cache.unlink()
    cache.symlink_to(elsewhere)  # through a symlink
    assert seen(snapshot(tmp_path, "cached")) == plain


def test_a_damaged_cache_is_ignored_and_replaced(tmp_path: Path, plain: dict[str, str]) -> None:
    seen(snapshot(tmp_path, "cached"))
    cache = tmp_path / "syncd" / CACHE_NAME
    whole = cache.read_bytes()

    def sources() -> set[str]:
        return set(marshal.loads(cache.read_bytes()[len(MAGIC_NUMBER) :]))

    everything = sources()
    cache.write_bytes(whole[: len(whole) // 2])  # cut short
    assert seen(snapshot(tmp_path, "cached")) == plain
    assert sources() == everything
    cache.write_bytes(b"\0" * 4 + whole[4:])  # another Python's bytecode
    assert seen(snapshot(tmp_path, "cached")) == plain
    assert sources() == everything


def test_no_cache_is_written_when_python_writes_no_bytecode(
    tmp_path: Path, plain: dict[str, str]
) -> None:
    assert seen(snapshot(tmp_path, "cached", PYTHONDONTWRITEBYTECODE="1")) == plain
    assert not (tmp_path / "syncd" / CACHE_NAME).exists()
