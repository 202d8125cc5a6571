"""Incremental multipart/form-data reader that streams the file part straight to disk.

Only the `purpose` text field and the first `file` part matter; everything else is parsed
and discarded. Parts may come in any order, so the file part's size cap may have to be
chosen from its extension alone before `purpose` is known.
"""

from __future__ import annotations

import contextlib
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from . import errors, validate

MAX_FIELD_BYTES = 64 * 1024
# Text fields kept (the first of each name); any other part is read and dropped.
TEXT_FIELDS = frozenset({"purpose", "expires_after[anchor]", "expires_after[seconds]"})


def boundary_of(content_type: str) -> bytes:
    ctype, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if ctype != b"multipart/form-data" or not boundary:
        raise errors.bad_request("Expected a multipart/form-data body with 'purpose' and 'file'.")
    return boundary


def _split_params(text: str) -> list[tuple[str, str]]:
    """Split `form-data; name="x"; filename="y"` honouring quotes (values may contain ';')."""
    out: list[tuple[str, str]] = []
    i, n = text.find(";"), len(text)
    if i < 0:
        return out
    while i < n:
        while i < n and text[i] in "; \t":
            i += 1
        start = i
        while i < n and text[i] not in "=;":
            i += 1
        name = text[start:i].strip().lower()
        value = ""
        if i < n and text[i] == "=":
            i += 1
            while i < n and text[i] in " \t":
                i += 1
            if i < n and text[i] == '"':
                i += 1
                chars: list[str] = []
                while i < n and text[i] != '"':
                    if text[i] == "\\" and i + 1 < n:
                        i += 1
                    chars.append(text[i])
                    i += 1
                i += 1
                value = "".join(chars)
            else:
                start = i
                while i < n and text[i] != ";":
                    i += 1
                value = text[start:i].strip()
        if name:
            out.append((name, value))
    return out


def parse_content_disposition(raw: bytes) -> dict[str, str]:
    """Parameters of a part's Content-Disposition; `filename*` (RFC 5987) wins over `filename`.

    Browsers and httpx send raw UTF-8 in `filename="..."`, so header bytes are read as UTF-8
    (latin-1 as a last resort) rather than the HTTP default of latin-1.
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    params = dict(_split_params(text))
    extended = params.pop("filename*", None)
    if extended:
        charset, _, rest = extended.partition("'")
        _, _, encoded = rest.partition("'")
        with contextlib.suppress(LookupError, UnicodeDecodeError):
            params["filename"] = urllib.parse.unquote(encoded, encoding=charset or "utf-8",
                                                      errors="strict")
    return params


@dataclass
class UploadForm:
    purpose: str | None = None
    # Text fields other than `purpose`, by name.
    fields: dict[str, str] = field(default_factory=dict)
    filename: str | None = None
    size: int = 0
    temp_path: Path | None = None
    # Set when the file part stopped being stored: over its cap or never acceptable.
    discarded: bool = False
    over_cap: bool = False


@dataclass
class _Part:
    headers: dict[str, bytes] = field(default_factory=dict)
    kind: str = "ignore"  # "field" | "file" | "ignore"
    name: str = ""
    field_buf: bytearray = field(default_factory=bytearray)


class UploadReader:
    """Feed body chunks with `feed()` (blocking I/O: call it from a worker thread)."""

    def __init__(self, boundary: bytes, temp_path: Path,
                 cap_for: Callable[[str | None, str], int | None]) -> None:
        self.form = UploadForm()
        self._temp_path = temp_path
        self._cap_for = cap_for
        self._cap: int | None = None
        self._fh: BinaryIO | None = None
        self._part = _Part()
        self._hname = bytearray()
        self._hvalue = bytearray()
        self._parser = MultipartParser(boundary, {
            "on_part_begin": self._on_part_begin,
            "on_header_field": self._on_header_field,
            "on_header_value": self._on_header_value,
            "on_header_end": self._on_header_end,
            "on_headers_finished": self._on_headers_finished,
            "on_part_data": self._on_part_data,
            "on_part_end": self._on_part_end,
        })

    def feed(self, data: bytes) -> None:
        try:
            self._parser.write(data)
        except MultipartParseError as exc:
            raise errors.bad_request(f"Malformed multipart body: {exc}") from None

    def finish(self) -> UploadForm:
        try:
            self._parser.finalize()
        except MultipartParseError as exc:
            raise errors.bad_request(f"Malformed multipart body: {exc}") from None
        finally:
            self._close_file()
        return self.form

    def abort(self) -> None:
        """Drop whatever was stored (error or client gone)."""
        self._close_file()
        if self.form.temp_path is not None:
            self.form.temp_path.unlink(missing_ok=True)
            self.form.temp_path = None

    def _close_file(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def _on_part_begin(self) -> None:
        self._part = _Part()

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._hname += data[start:end]

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._hvalue += data[start:end]

    def _on_header_end(self) -> None:
        self._part.headers[bytes(self._hname).decode("latin-1").lower()] = bytes(self._hvalue)
        self._hname.clear()
        self._hvalue.clear()

    def _on_headers_finished(self) -> None:
        params = parse_content_disposition(self._part.headers.get("content-disposition", b""))
        name = params.get("name")
        if name in TEXT_FIELDS and not self._has_field(name):
            self._part.kind = "field"
            self._part.name = name
        elif name == "file" and "filename" in params and self.form.filename is None:
            self._part.kind = "file"
            self.form.filename = params["filename"]
            self._cap = self._cap_for(self.form.purpose, validate.extension(self.form.filename))
            if self._cap is None:
                self.form.discarded = True
            else:
                self._fh = self._temp_path.open("wb")
                self.form.temp_path = self._temp_path

    def _has_field(self, name: str) -> bool:
        return self.form.purpose is not None if name == "purpose" else name in self.form.fields

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        kind = self._part.kind
        if kind == "file":
            self.form.size += end - start
            if self._fh is None:
                return
            if self._cap is not None and self.form.size > self._cap:
                # Stop storing at once; the rest of the body is still read and thrown away
                # so the client gets to read our 400 instead of a reset connection.
                self.form.over_cap = self.form.discarded = True
                self.abort()
                return
            self._fh.write(data[start:end])
        elif kind == "field" and len(self._part.field_buf) < MAX_FIELD_BYTES:
            self._part.field_buf += data[start:end]

    def _on_part_end(self) -> None:
        if self._part.kind == "field":
            value = bytes(self._part.field_buf).decode("utf-8", "replace").strip()
            if self._part.name == "purpose":
                self.form.purpose = value
            else:
                self.form.fields[self._part.name] = value
        elif self._part.kind == "file":
            self._close_file()
        self._part = _Part()
