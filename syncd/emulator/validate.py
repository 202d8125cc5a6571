"""What the provider accepts: purposes, formats, sizes, ids, and batch input files.

Everything that differs between the DashScope and the OpenAI flavour of the Files API is a
field or method of `Flavor`; the rest of the emulator asks the flavour, never a name.
"""

from __future__ import annotations

import json
import secrets
import string
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import errors

MB = 1024 * 1024
DOCUMENT_EXTS = frozenset({"txt", "docx", "pdf", "xlsx", "epub", "mobi", "md", "csv", "json"})
IMAGE_EXTS = frozenset({"bmp", "png", "jpg", "jpeg", "gif"})
BATCH_EXTS = frozenset({"jsonl"})
DOCUMENT_CAP = 150 * MB
IMAGE_CAP = 20 * MB
BATCH_CAP = 500 * MB

BATCH_URLS = frozenset({"/v1/chat/completions", "/v1/embeddings", "/v1/chat/ds-test"})
BATCH_MAX_LINES = 50_000
BATCH_MAX_LINE_BYTES = 6 * MB

OPENAI_FILE_CAP = 512 * MB
OPENAI_BATCH_CAP = 200 * MB
OPENAI_BATCH_URLS = frozenset(
    {"/v1/chat/completions", "/v1/embeddings", "/v1/responses", "/v1/completions"})
OPENAI_MAX_EXPIRY_S = 30 * 24 * 3600
_ALNUM = string.ascii_letters + string.digits


def extension(filename: str) -> str:
    _, dot, ext = filename.rpartition(".")
    return ext.lower() if dot else ""


@dataclass(frozen=True)
class Flavor:
    """DashScope's flavour; `OpenAIFlavor` overrides what OpenAI does differently."""

    name: str = "dashscope"
    api_prefix: str = "/compatible-mode/v1"
    purposes: tuple[str, ...] = ("file-extract", "batch")
    batch_urls: frozenset[str] = BATCH_URLS
    list_max: int = 2000
    # Whether list takes `order` and answers with `first_id`/`last_id`.
    list_order: bool = False
    # DashScope puts `request_id` in error bodies; OpenAI only sends the header.
    request_id_in_body: bool = True
    # Purpose -> seconds until a new file expires when the upload does not say.
    default_expiry_s: dict[str, int] = field(default_factory=dict)
    # Whether `expires_after[...]` upload fields are read and `expires_at` is reported.
    expiry: bool = False

    def accepts(self, purpose: str, ext: str) -> bool:
        if purpose == "batch":
            return ext in BATCH_EXTS
        return ext in DOCUMENT_EXTS or ext in IMAGE_EXTS

    def size_cap(self, purpose: str | None, ext: str) -> int | None:
        """Byte cap for a file, or None when it cannot be accepted whatever its size.

        With the purpose still unknown (the file part came first) the extension alone
        decides, since no extension is accepted by both purposes.
        """
        if purpose is not None and (purpose not in self.purposes
                                    or not self.accepts(purpose, ext)):
            return None
        if ext in IMAGE_EXTS:
            return IMAGE_CAP
        if ext in DOCUMENT_EXTS:
            return DOCUMENT_CAP
        if ext in BATCH_EXTS:
            return BATCH_CAP
        return None

    def new_id(self, purpose: str) -> str:
        return ID_PREFIX[purpose] + secrets.token_hex(12)

    # ---- the Batch API ------------------------------------------------------------------

    def new_result_id(self, kind: str) -> str:
        """Id of a batch's ``output`` or ``error`` file (both of purpose batch_output)."""
        return ID_PREFIX["batch_error" if kind == "error" else "batch_output"] \
            + secrets.token_hex(12)

    def new_batch_id(self) -> str:
        return "batch_" + str(uuid.uuid4())

    def downloadable(self, purpose: str) -> bool:
        """Whether ``GET /files/{id}/content`` serves a file of this purpose: DashScope
        documents it for batch output files only (other purposes: unconfirmed, refused)."""
        return purpose == "batch_output"

    def completion_window_hours(self, window: str) -> int | None:
        """Hours of a completion window the provider accepts ("24h" to "336h", or days
        "1d" to "14d"), or None."""
        text = window.strip().lower()
        try:
            if text.endswith("h"):
                hours = int(text[:-1])
            elif text.endswith("d"):
                hours = 24 * int(text[:-1])
            else:
                return None
        except ValueError:
            return None
        return hours if 24 <= hours <= 336 else None


ID_PREFIX = {
    "file-extract": "file-fe-",
    "batch": "file-batch-",
    "batch_output": "file-batch_output-",
    "batch_error": "file-batch_error-",
}


@dataclass(frozen=True)
class OpenAIFlavor(Flavor):
    # Purposes whose files must be JSONL; the others take any format (unconfirmed which
    # formats OpenAI refuses at upload time for them, so none are refused here).
    jsonl_purposes: frozenset[str] = frozenset({"batch", "fine-tune", "evals"})

    def accepts(self, purpose: str, ext: str) -> bool:
        return ext in BATCH_EXTS if purpose in self.jsonl_purposes else True

    def size_cap(self, purpose: str | None, ext: str) -> int | None:
        if purpose is None:
            return OPENAI_FILE_CAP
        if purpose not in self.purposes or not self.accepts(purpose, ext):
            return None
        return OPENAI_BATCH_CAP if purpose == "batch" else OPENAI_FILE_CAP

    def new_id(self, purpose: str) -> str:
        return "file-" + "".join(secrets.choice(_ALNUM) for _ in range(24))

    def new_result_id(self, kind: str) -> str:
        return self.new_id("batch_output")

    def new_batch_id(self) -> str:
        return "batch_" + secrets.token_hex(16)

    def downloadable(self, purpose: str) -> bool:
        # OpenAI answers "Not allowed to download files of purpose: assistants" (and so
        # for the other purposes whose files it only reads itself).
        return purpose not in ("assistants", "vision", "user_data")

    def completion_window_hours(self, window: str) -> int | None:
        return 24 if window == "24h" else None


DASHSCOPE = Flavor()
OPENAI = OpenAIFlavor(
    name="openai", api_prefix="/v1",
    purposes=("assistants", "batch", "fine-tune", "vision", "user_data", "evals"),
    batch_urls=OPENAI_BATCH_URLS, list_max=10_000, list_order=True,
    request_id_in_body=False, default_expiry_s={"batch": OPENAI_MAX_EXPIRY_S}, expiry=True)
FLAVORS: dict[str, Flavor] = {f.name: f for f in (DASHSCOPE, OPENAI)}


def check_purpose(flavor: Flavor, purpose: str | None) -> str:
    if purpose is None:
        raise errors.bad_request("Missing required parameter: 'purpose'.", param="purpose")
    if purpose not in flavor.purposes:
        quoted = [f"'{p}'" for p in flavor.purposes]
        raise errors.bad_request(
            f"Invalid value for 'purpose': {purpose!r}. Supported values are:"
            f" {', '.join(quoted[:-1])} and {quoted[-1]}.", param="purpose")
    return purpose


def check_format(flavor: Flavor, purpose: str, filename: str) -> None:
    if not flavor.accepts(purpose, extension(filename)):
        raise errors.bad_request(
            f"The file format of {filename!r} is not supported for purpose {purpose!r}.",
            param="file", code="BadRequest.UnsupportedFileFormat")


def too_large() -> errors.ApiError:
    return errors.bad_request(errors.MSG_TOO_LARGE, param="file", code="BadRequest.TooLarge")


def empty_file() -> errors.ApiError:
    return errors.bad_request("The file is empty.", param="file", code="BadRequest.EmptyFile")


def expiry_seconds(flavor: Flavor, purpose: str, anchor: str | None,
                   seconds: str | None) -> int | None:
    """Seconds from `created_at` until the file expires, or None for never.

    Any positive number of seconds up to OpenAI's maximum is accepted, although OpenAI's
    minimum is 3600: a test can then watch a file expire within seconds.
    """
    if not flavor.expiry:
        return None
    if anchor is None and seconds is None:
        return flavor.default_expiry_s.get(purpose)
    if anchor != "created_at":
        raise errors.bad_request("Invalid 'expires_after[anchor]': must be 'created_at'.",
                                 param="expires_after[anchor]")
    try:
        value = int(seconds or "")
    except ValueError:
        value = 0
    if not 1 <= value <= OPENAI_MAX_EXPIRY_S:
        raise errors.bad_request(
            f"Invalid 'expires_after[seconds]': must be an integer between 1 and"
            f" {OPENAI_MAX_EXPIRY_S}.", param="expires_after[seconds]")
    return value


@dataclass
class _BatchState:
    urls: frozenset[str] = BATCH_URLS
    url: str | None = None
    model: str | None = None
    requests: int = 0


def _line_error(lineno: int, code: str, detail: str) -> errors.ApiError:
    return errors.bad_request(f"Invalid batch input file: line {lineno}: {detail}",
                              param="file", code=code)


def check_batch_file(path: Path, urls: frozenset[str] = BATCH_URLS) -> None:
    """Validate a batch input file line by line; memory stays bounded by the line cap.

    A line's length excludes its terminator (LF or CRLF); a UTF-8 BOM opening the file is
    skipped but counts toward the first line's length. A file of blank lines only is
    refused as empty.
    """
    seen: set[str] = set()
    state = _BatchState(urls=urls)
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
    if state.requests == 0:
        raise errors.bad_request("The batch file has no requests.", param="file",
                                 code="BadRequest.EmptyFile")


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
    if not isinstance(url, str) or url not in state.urls:
        raise _line_error(lineno, "invalid_json_line",
                          f"'url' must be one of {', '.join(sorted(state.urls))}")
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
