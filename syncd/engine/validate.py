"""The provider's acceptance rules, applied locally before any quota is spent.

Each check returns a reason string (shown by ``syncd status``) or None. The emulator has its
own validator on purpose; `tests/test_validation_corpus.py` holds both to the same sample
files, and where the provider's behaviour is unknown both make the choice written in
`syncd/emulator/README.md`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from syncd.config import FILE_EXTRACT_EXTENSIONS

MB = 1024 * 1024
IMAGE_EXTENSIONS = frozenset({"bmp", "png", "jpg", "jpeg", "gif"})
DOCUMENT_MAX = 150 * MB
IMAGE_MAX = 20 * MB
BATCH_MAX = 500 * MB
BATCH_MAX_LINES = 50_000
BATCH_MAX_LINE_BYTES = 6 * MB
BATCH_URLS = frozenset({"/v1/chat/completions", "/v1/embeddings", "/v1/chat/ds-test"})
_BOM = b"\xef\xbb\xbf"


def extension(name: str) -> str:
    return name.rsplit(".", 1)[-1].lower() if "." in name else ""


def check_size(name: str, purpose: str, size: int) -> str | None:
    """Format, then size cap, then emptiness: the provider's order, so a file breaking two
    rules gets the reason the provider would give."""
    ext = extension(name)
    if purpose == "batch":
        if ext != "jsonl":
            return "batch files must be .jsonl"
        if size > BATCH_MAX:
            return f"too large: {size} bytes > 500 MB limit for batch files"
    else:
        if ext not in FILE_EXTRACT_EXTENSIONS:
            return f"unsupported format .{ext or '(none)'} for file-extract"
        if ext in IMAGE_EXTENSIONS and size > IMAGE_MAX:
            return f"too large: {size} bytes > 20 MB limit for images"
        if size > DOCUMENT_MAX:
            return f"too large: {size} bytes > 150 MB limit for documents"
    if size == 0:
        return "empty file (the provider rejects empty files)"
    return None


def _lines(fh: BinaryIO) -> Iterator[bytes]:
    """Lines without their LF or CRLF; one longer than the cap is cut just past it, so
    memory stays bounded whatever the file holds."""
    while raw := fh.readline(BATCH_MAX_LINE_BYTES + 2):
        line = raw[:-1] if raw.endswith(b"\n") else raw
        yield line[:-1] if line.endswith(b"\r") else line


def check_batch_content(path: Path) -> str | None:
    """Stream the JSONL file and apply the batch input rules, naming the line.

    A line's length excludes its terminator (LF or CRLF); a UTF-8 BOM opening the file is
    skipped but counts toward the first line's length; blank lines are skipped but counted
    for line numbers.
    """
    seen: set[str] = set()
    url: str | None = None
    model: str | None = None
    count = 0
    with path.open("rb") as fh:
        for number, raw in enumerate(_lines(fh), start=1):
            if len(raw) > BATCH_MAX_LINE_BYTES:
                return f"line {number}: longer than 6 MB"
            if number == 1 and raw.startswith(_BOM):
                raw = raw[len(_BOM):]
            if not raw.strip():
                continue
            count += 1
            if count > BATCH_MAX_LINES:
                return f"line {number}: more than {BATCH_MAX_LINES} requests"
            try:
                item = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, ValueError):
                return f"line {number}: not valid UTF-8 JSON"
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
            if line_url not in BATCH_URLS:
                return f"line {number}: url must be one of {', '.join(sorted(BATCH_URLS))}"
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
