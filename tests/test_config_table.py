"""The README's table of configuration keys is the one generated from the keys'
declarations (``syncd/config/keys.py``), so the docs cannot drift from the code.

To rewrite the table in README.md: ``python -m tests.test_config_table``.
"""

from __future__ import annotations

from pathlib import Path

from syncd.config import KEYS, reloadable_keys
from syncd.config.table import markdown_table

README = Path(__file__).resolve().parent.parent / "README.md"
BEGIN, END = "<!-- keys:begin -->", "<!-- keys:end -->"
REGENERATE = "python -m tests.test_config_table"


def _split(text: str) -> tuple[str, str, str]:
    """README.md as (up to the begin marker, the table, from the end marker)."""
    head, begin, rest = text.partition(BEGIN)
    table, end, tail = rest.partition(END)
    assert begin and end, f"README.md has no {BEGIN} ... {END} block for the key table"
    return head + begin, table, end + tail


def regenerated(text: str) -> str:
    head, _table, tail = _split(text)
    return f"{head}\n{markdown_table()}{tail}"


def test_the_readme_table_is_the_generated_one() -> None:
    _head, table, _tail = _split(README.read_text("utf-8"))
    assert table == f"\n{markdown_table()}", (
        f"README.md's key table differs from the keys' declarations; run `{REGENERATE}`"
    )


def test_the_table_has_a_row_per_key_in_order_with_its_sighup_mark() -> None:
    rows = [line.split(" | ") for line in markdown_table().splitlines()[2:]]
    assert [row[0].strip("|` ") for row in rows] == [k.name for k in KEYS]
    assert {row[0].strip("|` ") for row in rows if row[3] == "yes"} == reloadable_keys()
    assert all(len(row) == 5 for row in rows), "a cell holds an unescaped ' | '"


if __name__ == "__main__":
    README.write_text(regenerated(README.read_text("utf-8")), "utf-8")
    print(f"{README}: key table written ({len(KEYS)} keys)")
