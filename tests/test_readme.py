"""The README is ordered for the people who use it: its first screen holds what syncd
is, the two commands (the test command being the one CI runs) and the tour's start; it
cites no file the repository does not have."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
README = (REPO / "README.md").read_text("utf-8")
TEST_COMMAND = (
    "python3 -m venv .venv && . .venv/bin/activate && pip install -q -e '.[dev]' "
    "&& python -m pytest"
)


def test_the_first_screen_has_the_description_the_two_commands_and_the_tour() -> None:
    screen = "\n".join(README.splitlines()[:60])
    assert screen.startswith("# syncd\n") and "mirrors a folder" in screen
    assert "## Two commands" in screen
    assert "syncd reconcile -c config.example.yaml" in screen  # the main job
    assert TEST_COMMAND in screen
    assert "## A 5-minute tour" in screen and "syncd init ./docs" in screen


def test_ci_runs_the_readmes_test_command_verbatim() -> None:
    assert TEST_COMMAND in (REPO / ".ci" / "run").read_text("utf-8")


def test_every_file_the_readme_links_is_in_the_repository() -> None:
    links = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", README)
    local = [link for link in links if "://" not in link]
    assert local, "the README links no file at all"
    missing = [link for link in local if not (REPO / link).exists()]
    assert missing == []
    assert "SPEC.md" not in README and "../shared" not in README
