"""The shape the code keeps as it grows (README, "Layout"): no module over 600 lines, no
class over 300, no function over 60 (the exceptions named below, each a table); no import
circle; imports pointing one way (cli -> daemon -> engine -> api, the emulator apart);
no dead code beyond an explained list; every module named in the README's layout."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "syncd"
MODULE_MAX, CLASS_MAX, FUNCTION_MAX = 600, 300, 60
# Long because each is one declaration per line: splitting them would scatter a table.
LONG_TABLES = {"syncd/emulator/cli.py:build_parser"}
# Layers, lowest first: a module may import its own layer and those below it.
LAYERS = {"api": 0, "engine": 1, "daemon": 2, "cli": 3}
# The emulator shares nothing with the client but the contract: it takes only the
# standard-library helpers for sizes and times, and only the commands that start it
# (`syncd emulate`, the embedded default) import it.
EMULATOR_MAY_USE = {"syncd.units"}
EMULATOR_STARTERS = {"syncd.cli", "syncd.embedded"}


def modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def rel(path: Path) -> str:
    return path.relative_to(REPO).as_posix()


def name_of(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_no_module_class_or_function_is_oversized() -> None:
    over = []
    for path in modules():
        text = path.read_text()
        if text.count("\n") > MODULE_MAX:
            over.append(f"{rel(path)}: {text.count(chr(10))} lines")
        for node in ast.walk(ast.parse(text)):
            if not isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            span = (node.end_lineno or node.lineno) - node.lineno + 1
            if isinstance(node, ast.ClassDef) and span > CLASS_MAX:
                over.append(f"{rel(path)}:{node.name}: class of {span} lines")
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and span > FUNCTION_MAX \
                    and f"{rel(path)}:{node.name}" not in LONG_TABLES:
                over.append(f"{rel(path)}:{node.name}: function of {span} lines")
    assert over == []


def imports() -> dict[str, set[str]]:
    """module -> the syncd modules it imports (anywhere in it, typing-only ones too)."""
    names = {name_of(p) for p in modules()}
    found: dict[str, set[str]] = defaultdict(set)
    for path in modules():
        me = name_of(path)
        package = me if path.name == "__init__.py" else me.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*up, base] if base else up)
                # ``from X import a``: the module X.a if it is one, else X itself.
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in names else base
                           for a in node.names]
            for target in targets:
                while target and target not in names:
                    target = target.rpartition(".")[0]
                if target and target != me and target.startswith("syncd"):
                    found[me].add(target)
    return found


def test_no_import_circle() -> None:
    graph = imports()
    # Tarjan's strongly connected components: any with two modules or more is a circle.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    circles: list[list[str]] = []
    sys.setrecursionlimit(10_000)

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            part = []
            while True:
                top = stack.pop()
                part.append(top)
                if top == node:
                    break
            if len(part) > 1:
                circles.append(sorted(part))

    for node in list(graph):
        if node not in index:
            visit(node)
    assert circles == []


def test_imports_point_one_way() -> None:
    wrong = []
    for me, targets in imports().items():
        layer = me.split(".")[1] if me.count(".") else ""
        for target in targets:
            theirs = target.split(".")[1] if target.count(".") else ""
            mine, its = me.startswith("syncd.emulator"), target.startswith("syncd.emulator")
            if (mine and not its and target not in EMULATOR_MAY_USE) or (
                    its and not mine and me not in EMULATOR_STARTERS):
                wrong.append(f"{me} -> {target} (the emulator shares nothing but the contract)")
            elif layer in LAYERS and theirs in LAYERS and LAYERS[theirs] > LAYERS[layer]:
                wrong.append(f"{me} -> {target}")
    assert wrong == []


def test_no_dead_code_beyond_the_explained_list() -> None:
    vulture = shutil.which("vulture", path=str(Path(sys.executable).parent))
    if vulture is None:
        pytest.fail("vulture is not installed (pip install -e '.[dev]')")
    run = subprocess.run([vulture, "syncd", "tests/vulture_allow.py", "--min-confidence", "60"],
                         cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
    assert run.stdout.strip() == "", run.stdout


def test_the_readme_layout_matches_the_tree_file_by_file() -> None:
    text = (REPO / "README.md").read_text()
    layout = text[text.index("### Layout"):]
    layout = layout[layout.index("```") + 3:]
    layout = layout[: layout.index("```")]
    listed = {line.split()[0] for line in layout.splitlines() if line.strip()}
    on_disk = {rel(p) for p in modules()}
    assert sorted(on_disk - listed) == [], "modules the layout does not name"
    named = {p for p in listed if p.startswith("syncd/")}
    assert sorted(p for p in named if not (REPO / p).exists()) == [], "named, not in the tree"
