"""The provider's acceptance rules, applied locally before any quota is spent.

What each provider accepts is data in :mod:`syncd.api.providers`; this module applies it.
Each check returns a reason string (shown by ``syncd status``) or None. The emulator has its
own validator on purpose; `tests/test_validation_corpus.py` holds both to the same sample
files, and where the provider's behaviour is unknown both make the choice written in
`syncd/emulator/README.md`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import BinaryIO

from syncd.api.providers import (
    JsonlRules,
    PurposeSpec,
)
from syncd.config import PurposeRule
from syncd.units import human_bytes

_BOM = b"\xef\xbb\xbf"


def extension(name: str) -> str:
    return name.rsplit(".", 1)[-1].lower() if "." in name else ""


def check_spec(name: str, purpose: str, spec: PurposeSpec, size: int) -> str | None:
    """Format, then size caps, then emptiness: the provider's order, so a file breaking
    two rules gets the reason the provider would give."""
    ext = extension(name)
    if spec.extensions is not None and ext not in spec.extensions:
        if len(spec.extensions) == 1:
            return f"{purpose} files must be .{next(iter(spec.extensions))}"
        return f"unsupported format .{ext or '(none)'} for {purpose}"
    for cap in spec.caps:
        if cap.applies(ext) and size > cap.limit:
            # One unit style: binary, as status and every size syncd shows use.
            return (
                f"too large: {human_bytes(size)} ({size} bytes) > {human_bytes(cap.limit)} "
                f"limit for {cap.what}"
            )
    if size == 0 and spec.reject_empty:
        return "empty file (the provider rejects empty files)"
    return None


def check_content(source: Path | BinaryIO, spec: PurposeSpec) -> str | None:
    """The checks that read the file (a batch file's lines), or None when there are none.
    ``source``: a path, or the file open (read from its first byte, left open)."""
    return None if spec.jsonl is None else check_jsonl(source, spec.jsonl)


def check_file(name: str, rule: PurposeRule, size: int) -> str | None:
    """The checks of a file's name and size for its purpose rule: what the provider
    accepts for the purpose, and the project's own cap (both carried by the rule)."""
    return check_spec(name, rule.purpose, rule.accepts, size)


def reads_content(rule: PurposeRule) -> bool:
    """Whether ``check_file_content`` reads the file (worth skipping for unchanged ones)."""
    return rule.accepts.jsonl is not None


def check_file_content(source: Path | BinaryIO, rule: PurposeRule) -> str | None:
    return check_content(source, rule.accepts)


def _reading(source: Path | BinaryIO) -> AbstractContextManager[BinaryIO]:
    if isinstance(source, Path):
        return source.open("rb")
    source.seek(0)
    return nullcontext(source)


def _lines(fh: BinaryIO, cap: int) -> Iterator[bytes]:
    """Lines without their LF or CRLF; one longer than the cap is cut just past it, so
    memory stays bounded whatever the file holds."""
    while raw := fh.readline(cap + 2):
        line = raw[:-1] if raw.endswith(b"\n") else raw
        yield line[:-1] if line.endswith(b"\r") else line


def check_jsonl(source: Path | BinaryIO, rules: JsonlRules) -> str | None:
    """Stream the JSONL file and apply the batch input rules, naming the line.

    A line's length excludes its terminator (LF or CRLF); a UTF-8 BOM opening the file is
    skipped but counts toward the first line's length; blank lines are skipped but counted
    for line numbers.
    """
    seen: set[str] = set()
    url: str | None = None
    model: str | None = None
    count = 0
    with _reading(source) as fh:
        for number, raw in enumerate(_lines(fh, rules.max_line_bytes), start=1):
            if len(raw) > rules.max_line_bytes:
                return f"line {number}: longer than {human_bytes(rules.max_line_bytes)}"
            if number == 1 and raw.startswith(_BOM):
                raw = raw[len(_BOM):]
            if not raw.strip():
                continue
            count += 1
            if count > rules.max_lines:
                return f"line {number}: more than {rules.max_lines} requests"
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                return f"line {number}: not valid UTF-8 (byte {exc.start + 1} of the line)"
            try:
                item = json.loads(text)
            except ValueError as exc:
                return f"line {number}: not valid JSON ({getattr(exc, 'msg', exc)})"
            if not isinstance(item, dict):
                return f"line {number}: not a JSON object"
            cid = item.get("custom_id")
            if not isinstance(cid, str) or not cid:
                return f"line {number}: custom_id must be a non-empty string"
            if cid in seen:
                return f"line {number}: duplicate custom_id {cid!r}"
            seen.add(cid)
            if item.get("method") != "POST":
                return f"line {number}: method must be POST"
            line_url = item.get("url")
            if line_url not in rules.urls:
                return f"line {number}: url must be one of {', '.join(sorted(rules.urls))}"
            if url is None:
                url = line_url
            elif line_url != url:
                return f"line {number}: url {line_url!r} differs from {url!r} of earlier lines"
            body = item.get("body")
            if not isinstance(body, dict) or not isinstance(body.get("model"), str):
                return f"line {number}: body must be an object with a model"
            if model is None:
                model = body["model"]
            elif body["model"] != model:
                return f"line {number}: model {body['model']!r} differs from {model!r}"
    if count == 0:
        return "batch file has no requests"
    return None
