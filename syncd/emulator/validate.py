"""What the provider accepts: purposes, formats, sizes, and batch input files."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import errors

MB = 1024 * 1024
PURPOSES = ("file-extract", "batch")
DOCUMENT_EXTS = frozenset({"txt", "docx", "pdf", "xlsx", "epub", "mobi", "md", "csv", "json"})
IMAGE_EXTS = frozenset({"bmp", "png", "jpg", "jpeg", "gif"})
BATCH_EXTS = frozenset({"jsonl"})
DOCUMENT_CAP = 150 * MB
IMAGE_CAP = 20 * MB
BATCH_CAP = 500 * MB

BATCH_URLS = frozenset({"/v1/chat/completions", "/v1/embeddings", "/v1/chat/ds-test"})
BATCH_MAX_LINES = 50_000
BATCH_MAX_LINE_BYTES = 6 * MB


def extension(filename: str) -> str:
    _, dot, ext = filename.rpartition(".")
    return ext.lower() if dot else ""


def accepts(purpose: str, ext: str) -> bool:
    if purpose == "batch":
        return ext in BATCH_EXTS
    return ext in DOCUMENT_EXTS or ext in IMAGE_EXTS


def size_cap(purpose: str | None, ext: str) -> int | None:
    """Byte cap for a file, or None when it cannot be accepted whatever its size.

    With the purpose still unknown (the file part came first) the extension alone decides,
    since no extension is accepted by both purposes.
    """
    if purpose is not None and (purpose not in PURPOSES or not accepts(purpose, ext)):
        return None
    if ext in IMAGE_EXTS:
        return IMAGE_CAP
    if ext in DOCUMENT_EXTS:
        return DOCUMENT_CAP
    if ext in BATCH_EXTS:
        return BATCH_CAP
    return None


def check_purpose(purpose: str | None) -> str:
    if purpose is None:
        raise errors.bad_request("Missing required parameter: 'purpose'.", param="purpose")
    if purpose not in PURPOSES:
        raise errors.bad_request(
            f"Invalid value for 'purpose': {purpose!r}. Supported values are:"
            " 'file-extract' and 'batch'.", param="purpose")
    return purpose


def check_format(purpose: str, filename: str) -> None:
    if not accepts(purpose, extension(filename)):
        raise errors.bad_request(
            f"The file format of {filename!r} is not supported for purpose {purpose!r}.",
            param="file", code="BadRequest.UnsupportedFileFormat")


def too_large() -> errors.ApiError:
    return errors.bad_request(errors.MSG_TOO_LARGE, param="file", code="BadRequest.TooLarge")


@dataclass
class _BatchState:
    url: str | None = None
    model: str | None = None
    requests: int = 0


def _line_error(lineno: int, code: str, detail: str) -> errors.ApiError:
    return errors.bad_request(f"Invalid batch input file: line {lineno}: {detail}",
                              param="file", code=code)


def check_batch_file(path: Path) -> None:
    """Validate a batch input file line by line; memory stays bounded by the line cap."""
    seen: set[str] = set()
    state = _BatchState()
    with path.open("rb") as fh:
        lineno = 0
        while True:
            raw = fh.readline(BATCH_MAX_LINE_BYTES + 2)
            if not raw:
                break
            lineno += 1
            line = raw[:-1] if raw.endswith(b"\n") else raw
            line = line[:-1] if line.endswith(b"\r") else line
            if len(line) > BATCH_MAX_LINE_BYTES:
                raise _line_error(lineno, "line_too_large", "line exceeds 6 MB")
            if lineno == 1 and line.startswith(b"\xef\xbb\xbf"):
                line = line[3:]
            if not line.strip():
                continue
            state.requests += 1
            if state.requests > BATCH_MAX_LINES:
                raise _line_error(lineno, "too_many_lines",
                                  f"more than {BATCH_MAX_LINES} requests in one file")
            _check_line(lineno, line, seen, state)


def _check_line(lineno: int, line: bytes, seen: set[str], state: _BatchState) -> None:
    try:
        obj: Any = json.loads(line.decode("utf-8"))
    except UnicodeDecodeError:
        raise _line_error(lineno, "invalid_json_line", "not valid UTF-8") from None
    except ValueError:
        raise _line_error(lineno, "invalid_json_line", "not valid JSON") from None
    if not isinstance(obj, dict):
        raise _line_error(lineno, "invalid_json_line", "not a JSON object")
    custom_id = obj.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id:
        raise _line_error(lineno, "invalid_json_line", "'custom_id' must be a non-empty string")
    if custom_id in seen:
        raise _line_error(lineno, "duplicate_custom_id", f"duplicate custom_id {custom_id!r}")
    seen.add(custom_id)
    if obj.get("method") != "POST":
        raise _line_error(lineno, "invalid_json_line", "'method' must be 'POST'")
    url = obj.get("url")
    if not isinstance(url, str) or url not in BATCH_URLS:
        raise _line_error(lineno, "invalid_json_line",
                          f"'url' must be one of {', '.join(sorted(BATCH_URLS))}")
    if state.url is None:
        state.url = url
    elif url != state.url:
        raise _line_error(lineno, "url_mismatch",
                          f"url {url!r} differs from {state.url!r} used earlier in the file")
    body = obj.get("body")
    if not isinstance(body, dict) or not isinstance(body.get("model"), str):
        raise _line_error(lineno, "invalid_json_line", "'body' must be an object with 'model'")
    model = body["model"]
    if state.model is None:
        state.model = model
    elif model != state.model:
        raise _line_error(lineno, "mismatched_model",
                          f"model {model!r} differs from {state.model!r} used earlier in the file")
