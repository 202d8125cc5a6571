"""`config.example.yaml` documents every key, marks the SIGHUP ones, and loads with any
commented option uncommented (one at a time), as its comments invite."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from syncd.check_config import preflight
from syncd.config import KEYS, SECTIONS, load_config, reloadable_keys

EXAMPLE = Path(__file__).resolve().parent.parent / "config.example.yaml"
_LINE = re.compile(r"^(?P<indent> *)(?P<hash># ?)?(?P<key>[a-z_]+):")


def _keys_by_line(lines: list[str]) -> dict[int, tuple[str, bool]]:
    """Line index -> (dotted key, commented) for every line that sets a known key."""
    known = {k.name for k in KEYS}
    out: dict[int, tuple[str, bool]] = {}
    section = ""
    for i, line in enumerate(lines):
        m = _LINE.match(line)
        if not m:
            continue
        key, commented = m["key"], m["hash"] is not None
        if not m["indent"] and not commented:
            section = key if key in SECTIONS else ""
        dotted = f"{section}.{key}" if m["indent"] and section else key
        if dotted in known:
            out[i] = (dotted, commented)
    return out


LINES = EXAMPLE.read_text("utf-8").splitlines(keepends=True)
COMMENTED = sorted(i for i, (_k, c) in _keys_by_line(LINES).items() if c)


def test_every_key_is_documented_in_the_example() -> None:
    documented = {key for key, _c in _keys_by_line(LINES).values()}
    assert documented == {k.name for k in KEYS}


def test_sighup_marks_match_the_reloadable_keys() -> None:
    marked = set()
    header = ""
    for i, line in enumerate(LINES):
        if line[:1].isalpha():
            header = line
        found = _keys_by_line(LINES).get(i)
        if found and ("[SIGHUP]" in line or "[SIGHUP]" in header):
            marked.add(found[0])
    assert marked == reloadable_keys()


def test_the_example_as_shipped_loads_and_passes_preflight(tmp_path: Path) -> None:
    (tmp_path / "example" / "docs").mkdir(parents=True)
    path = tmp_path / "syncd.yaml"
    path.write_text("".join(LINES), "utf-8")
    config = load_config(path)
    assert preflight(config, online=False) == []


def test_there_are_commented_options() -> None:
    # Guards the parametrization below against finding nothing to try.
    assert len(COMMENTED) >= 5


@pytest.mark.parametrize("index", COMMENTED, ids=lambda i: _keys_by_line(LINES)[i][0])
def test_uncommenting_one_option_still_loads(tmp_path: Path, index: int) -> None:
    lines = list(LINES)
    lines[index] = re.sub(r"^( *)# ?", r"\1", lines[index], count=1)
    path = tmp_path / "syncd.yaml"
    path.write_text("".join(lines), "utf-8")
    key = _keys_by_line(LINES)[index][0]
    config = load_config(path)
    section, _, leaf = key.rpartition(".")
    value = getattr(getattr(config, section) if section else config, leaf)
    assert value is not None, f"{key} was uncommented but not applied"
