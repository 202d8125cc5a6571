"""What the rules would do with each local file, without the remote and without the
state: ``syncd ls-local``, the way to try a rule before writing it into the config.

The answer comes from the scan a reconcile makes (the same walk, the same checks of
each file against what its purpose accepts), so what it lists is what a reconcile
then does.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from syncd.config import Config, PurposeRule, RulesConfig, glob_problem, with_checks
from syncd.engine.records import RecordTable
from syncd.engine.rules import Rules
from syncd.engine.scan import scan_root, walk_skipped


@dataclass(frozen=True, slots=True)
class Verdict:
    path: str
    # "selected": a reconcile uploads it with ``purpose``; "invalid" (or another status
    # a file can have): selected but not syncable, for ``reason``; "left out": ``reason``
    # names the rule.
    status: str
    purpose: str | None
    reason: str | None


def with_overrides(
    config: Config,
    *,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    purposes: Sequence[tuple[str, str]] = (),
) -> RulesConfig:
    """The config's rules with a command line's: ``include`` replaces the include
    globs, ``exclude`` adds to the excluded ones, ``purposes`` (glob, purpose) come
    first (the first match wins). ValueError for a malformed glob or a purpose the
    provider has not."""
    rules = config.rules
    profile = config.api.profile
    for glob in (*include, *exclude, *(g for g, _ in purposes)):
        problem = glob_problem(glob)
        if problem:
            raise ValueError(f"{glob!r}: {problem}")
    extra = []
    for glob, purpose in purposes:
        if not profile.allows(purpose):
            known = ", ".join([*profile.purposes, "skip"])
            raise ValueError(f"purpose {purpose!r} is not one of {known}")
        extra.append(PurposeRule((glob,), purpose))
    checked = with_checks(extra, profile, rules.max_file_bytes)
    return dataclasses.replace(
        rules,
        include=tuple(include) or rules.include,
        exclude=(*rules.exclude, *exclude),
        purposes=(*checked, *rules.purposes),
    )


def preview(root: Path, rules: RulesConfig, *, marker: str | None = None) -> Iterator[Verdict]:
    """Every file under ``root``, by path: selected (with its purpose), not syncable
    (with why), or left out (with the rule); folders the scan does not enter, as one
    entry each. Nothing is written anywhere."""
    judge = Rules(rules)
    scan = scan_root(root, judge, RecordTable(), marker=marker)
    out = [
        Verdict(f.path, f.problem_status or "invalid", f.purpose, f.problem)
        if f.problem
        else Verdict(f.path, "selected", f.purpose, None)
        for f in scan.files.values()
    ]
    # A folder the rules keep the scan out of is one line (its path ends in "/").
    out += [Verdict(path, "left out", None, label) for path, label in walk_skipped(root, judge)]
    yield from sorted(out, key=lambda v: v.path)
