"""Sample files that every validator of a provider must judge the same way, per provider
(`SAMPLES`: DashScope and OpenAI).

Each `Sample` is written into a directory by `materialize` (large ones as sparse files) and
carries the verdict both validators must reach:

- ``ok``: accepted;
- ``format`` / ``too_large`` / ``empty``: refused for that reason;
- ``<code>@<line>``: a batch file refused for a line, with the emulator's per-line code.

Where the provider's behaviour is unknown the expected verdict is the choice written in
`syncd/emulator/README.md`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MB = 1024 * 1024
LINE_CAP = 6 * MB
BATCH_LINES_CAP = 50_000
BOM = b"\xef\xbb\xbf"
FILE_EXTRACT_EXTS = ("txt", "docx", "pdf", "xlsx", "epub", "mobi", "md", "csv", "json",
                     "bmp", "png", "jpg", "jpeg", "gif")


@dataclass(frozen=True)
class Sample:
    name: str
    purpose: str
    expect: str
    content: bytes = b""
    # Size of a sparse file of zeros, used instead of `content`.
    sparse: int | None = None
    # Name of the file on disk when the same name is used twice.
    key: str = ""

    @property
    def ident(self) -> str:
        return self.key or f"{self.purpose}:{self.name}"


def request(cid: str = "1", url: str = "/v1/chat/completions", model: Any = "qwen-plus",
            pad: str = "", **override: Any) -> dict[str, Any]:
    item: dict[str, Any] = {
        "custom_id": cid, "method": "POST", "url": url,
        "body": {"model": model, "messages": [{"role": "user", "content": "hi" + pad}]}}
    item.update(override)
    return item


def line(cid: str = "1", **kw: Any) -> bytes:
    return json.dumps(request(cid, **kw), ensure_ascii=False).encode()


def sized_line(length: int, cid: str = "1") -> bytes:
    """A valid request line of exactly `length` bytes (without terminator)."""
    base = len(line(cid))
    out = line(cid, pad="x" * (length - base))
    assert len(out) == length
    return out


def jsonl(*items: bytes, sep: bytes = b"\n", end: bytes = b"\n") -> bytes:
    return sep.join(items) + end


def odd_case(ext: str, upper_first: bool) -> str:
    return "".join(c.upper() if (i % 2 == 0) == upper_first else c
                   for i, c in enumerate(ext))


def _extensions() -> Iterator[Sample]:
    for ext in FILE_EXTRACT_EXTS:
        for variant in (odd_case(ext, True), odd_case(ext, False), ext.upper()):
            if variant != ext:
                yield Sample(f"sample.{variant}", "file-extract", "ok", f"{ext} body".encode())
    for name in ("plain.txt", ".txt", "two.dots.md", "data.exe.txt"):
        yield Sample(name, "file-extract", "ok", b"text")
    for name in ("tool.exe", "no-extension", "trailing-dot.", "archive.tar.gz", "page.html",
                 "data.txt.exe", "requests.jsonl", "sheet.xls", "picture.webp", "doc.doc"):
        yield Sample(name, "file-extract", "format", b"text")
    yield Sample("requests.JSONL", "batch", "ok", jsonl(line("1")))
    yield Sample("requests.JsonL", "batch", "ok", jsonl(line("1")))
    for name in ("requests.json", "requests.txt", "requests", "requests.jsonl.txt"):
        yield Sample(name, "batch", "format", jsonl(line("1")))


def _empty() -> Iterator[Sample]:
    yield Sample("empty.txt", "file-extract", "empty")
    yield Sample("empty.PNG", "file-extract", "empty")
    yield Sample("empty.jsonl", "batch", "empty")
    # Format is judged before emptiness.
    yield Sample("empty.exe", "file-extract", "format")
    yield Sample("empty.txt", "batch", "format", key="batch:empty.txt")
    # A batch file with nothing but blank lines has no request: refused as empty.
    yield Sample("blank-only.jsonl", "batch", "empty", b"\n\n  \n")
    yield Sample("blank-only-crlf.jsonl", "batch", "empty", b"\r\n\r\n")
    yield Sample("bom-only.jsonl", "batch", "empty", BOM)
    yield Sample("bom-newline.jsonl", "batch", "empty", BOM + b"\n\n")


def _size_caps() -> Iterator[Sample]:
    yield Sample("at-cap.pdf", "file-extract", "ok", sparse=150 * MB)
    yield Sample("over-cap.pdf", "file-extract", "too_large", sparse=150 * MB + 1)
    yield Sample("over-cap.JSON", "file-extract", "too_large", sparse=150 * MB + 1)
    yield Sample("at-cap.png", "file-extract", "ok", sparse=20 * MB)
    yield Sample("over-cap.png", "file-extract", "too_large", sparse=20 * MB + 1)
    yield Sample("over-cap.JPEG", "file-extract", "too_large", sparse=20 * MB + 1)
    # An image cap does not apply to documents.
    yield Sample("over-image-cap.txt", "file-extract", "ok", sparse=20 * MB + 1)
    yield Sample("over-cap.jsonl", "batch", "too_large", sparse=500 * MB + 1)


def _batch_layout() -> Iterator[Sample]:
    two = (line("1"), line("2"))
    yield Sample("lf.jsonl", "batch", "ok", jsonl(*two))
    yield Sample("no-final-newline.jsonl", "batch", "ok", jsonl(*two, end=b""))
    yield Sample("crlf.jsonl", "batch", "ok", jsonl(*two, sep=b"\r\n", end=b"\r\n"))
    yield Sample("crlf-no-final.jsonl", "batch", "ok", jsonl(*two, sep=b"\r\n", end=b""))
    yield Sample("mixed-endings.jsonl", "batch", "ok",
                 line("1") + b"\r\n" + line("2") + b"\n" + line("3") + b"\r\n")
    yield Sample("bom.jsonl", "batch", "ok", BOM + jsonl(*two))
    yield Sample("bom-crlf.jsonl", "batch", "ok", BOM + jsonl(*two, sep=b"\r\n", end=b"\r\n"))
    yield Sample("bom-then-blank.jsonl", "batch", "ok", BOM + b"\n" + jsonl(*two))
    # A BOM is only tolerated where a file starts.
    yield Sample("bom-line-2.jsonl", "batch", "invalid_json_line@2",
                 jsonl(line("1"), BOM + line("2")))
    yield Sample("double-bom.jsonl", "batch", "invalid_json_line@1", BOM + BOM + jsonl(*two))
    yield Sample("blank-lines.jsonl", "batch", "ok",
                 b"\n\n" + line("1") + b"\n\n   \n\t\n" + line("2") + b"\n\n\n")
    yield Sample("blank-crlf-lines.jsonl", "batch", "ok",
                 b"\r\n" + line("1") + b"\r\n\r\n" + line("2"))
    yield Sample("padded.jsonl", "batch", "ok", b"  " + line("1") + b" \t\n")
    yield Sample("lone-cr-blank.jsonl", "batch", "ok", line("1") + b"\n\r\n\r\n" + line("2"))
    # Blank lines count for line numbers.
    yield Sample("error-after-blanks.jsonl", "batch", "invalid_json_line@4",
                 jsonl(line("1"), b"", b"  ", b"{oops"))
    yield Sample("error-after-crlf.jsonl", "batch", "invalid_json_line@3",
                 jsonl(line("1"), line("2"), b"{oops", sep=b"\r\n"))
    yield Sample("cjk.jsonl", "batch", "ok", jsonl(line("\u8bf7\u6c42-1"), line("\u8bf7\u6c42-2")))


def _batch_rules(openai: bool = False) -> Iterator[Sample]:
    bad = "invalid_json_line"
    yield Sample("all-urls.jsonl", "batch", "ok", jsonl(line("1", url="/v1/embeddings")))
    # Each provider's own batch urls, and not the other's.
    yield Sample("ds-test.jsonl", "batch", f"{bad}@1" if openai else "ok",
                 jsonl(line("1", url="/v1/chat/ds-test")))
    yield Sample("openai-url.jsonl", "batch", "ok" if openai else f"{bad}@1",
                 jsonl(line("1", url="/v1/responses")))
    yield Sample("completions-url.jsonl", "batch", "ok" if openai else f"{bad}@1",
                 jsonl(line("1", url="/v1/completions")))
    yield Sample("not-json.jsonl", "batch", f"{bad}@2", jsonl(line("1"), b"{not json"))
    yield Sample("bad-utf8.jsonl", "batch", f"{bad}@2",
                 jsonl(line("1"), line("2").replace(b'"2"', b'"\xff"', 1)))
    yield Sample("latin1.jsonl", "batch", f"{bad}@1",
                 jsonl(line("caf\u00e9").replace("é".encode(), b"\xe9")))
    yield Sample("utf16.jsonl", "batch", f"{bad}@1", line("1").decode().encode("utf-16"))
    yield Sample("array.jsonl", "batch", f"{bad}@1", jsonl(b"[1, 2]"))
    yield Sample("null.jsonl", "batch", f"{bad}@1", jsonl(b"null"))
    yield Sample("two-objects.jsonl", "batch", f"{bad}@1", jsonl(line("1") + b" " + line("2")))
    yield Sample("nul-byte.jsonl", "batch", f"{bad}@1", jsonl(line("1") + b"\0"))
    yield Sample("no-custom-id.jsonl", "batch", f"{bad}@1",
                 jsonl(json.dumps({k: v for k, v in request().items() if k != "custom_id"})
                       .encode()))
    yield Sample("empty-custom-id.jsonl", "batch", f"{bad}@1", jsonl(line("")))
    yield Sample("int-custom-id.jsonl", "batch", f"{bad}@1",
                 jsonl(json.dumps(request(custom_id=7)).encode()))
    yield Sample("dup-custom-id.jsonl", "batch", "duplicate_custom_id@3",
                 jsonl(line("a"), line("b"), line("a")))
    yield Sample("method-get.jsonl", "batch", f"{bad}@2",
                 jsonl(line("1"), line("2", method="GET")))
    yield Sample("method-lower.jsonl", "batch", f"{bad}@1", jsonl(line("1", method="post")))
    yield Sample("no-method.jsonl", "batch", f"{bad}@1",
                 jsonl(json.dumps({k: v for k, v in request().items() if k != "method"})
                       .encode()))
    yield Sample("url-mismatch.jsonl", "batch", "url_mismatch@2",
                 jsonl(line("1"), line("2", url="/v1/embeddings")))
    yield Sample("no-body.jsonl", "batch", f"{bad}@1",
                 jsonl(json.dumps({k: v for k, v in request().items() if k != "body"}).encode()))
    yield Sample("body-string.jsonl", "batch", f"{bad}@1", jsonl(line("1", body="x")))
    yield Sample("no-model.jsonl", "batch", f"{bad}@2",
                 jsonl(line("1"), line("2", body={"messages": []})))
    yield Sample("model-number.jsonl", "batch", f"{bad}@1", jsonl(line("1", model=3)))
    yield Sample("mixed-models.jsonl", "batch", "mismatched_model@2",
                 jsonl(line("1"), line("2", model="qwen-max")))


def _batch_caps() -> Iterator[Sample]:
    # A line's length excludes its terminator.
    yield Sample("line-at-cap.jsonl", "batch", "ok", jsonl(sized_line(LINE_CAP)))
    yield Sample("line-at-cap-crlf.jsonl", "batch", "ok",
                 jsonl(sized_line(LINE_CAP), sep=b"\r\n", end=b"\r\n"))
    yield Sample("line-at-cap-no-final.jsonl", "batch", "ok", sized_line(LINE_CAP))
    yield Sample("line-over-cap.jsonl", "batch", "line_too_large@2",
                 jsonl(line("0"), sized_line(LINE_CAP + 1)))
    # A BOM counts toward the first line's length.
    yield Sample("bom-line-at-cap.jsonl", "batch", "line_too_large@1",
                 BOM + jsonl(sized_line(LINE_CAP)))
    yield Sample("bom-line-under-cap.jsonl", "batch", "ok",
                 BOM + jsonl(sized_line(LINE_CAP - len(BOM))))
    many = [line(str(i)) for i in range(BATCH_LINES_CAP)]
    yield Sample("lines-at-cap.jsonl", "batch", "ok", jsonl(*many))
    yield Sample("lines-at-cap-blanks.jsonl", "batch", "ok", jsonl(*many, b"", b"  "))
    yield Sample("lines-over-cap.jsonl", "batch", f"too_many_lines@{BATCH_LINES_CAP + 2}",
                 jsonl(*many[:10], b"", *many[10:], line("extra")))


OPENAI_PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data", "evals")
OPENAI_ANY_NAME = ("assistants", "vision", "user_data")
OPENAI_JSONL_ONLY = ("batch", "fine-tune", "evals")


def _openai_formats() -> Iterator[Sample]:
    # Purposes that take any file name (which formats OpenAI refuses at upload for them is
    # unconfirmed: none are refused, on either side).
    for purpose in OPENAI_ANY_NAME:
        for name in ("tool.exe", "no-extension", "trailing-dot.", "script.py", "data.jsonl",
                     "page.HTML", "notes.md", ".hidden"):
            yield Sample(name, purpose, "ok", b"content")
        yield Sample("empty.txt", purpose, "empty")
        yield Sample("empty.exe", purpose, "empty")
    for purpose in OPENAI_JSONL_ONLY:
        body = jsonl(line("1", url="/v1/chat/completions"))
        for name in ("train.jsonl", "train.JSONL", "train.JsonL"):
            yield Sample(name, purpose, "ok", body)
        for name in ("train.json", "train.txt", "train", "train.jsonl.txt", "train.exe"):
            yield Sample(name, purpose, "format", body)
        yield Sample("empty.jsonl", purpose, "empty")
        yield Sample("empty.txt", purpose, "format")
    # Only batch files are checked line by line (for fine-tune and evals the content rules
    # are not public: neither side checks them).
    for purpose in ("fine-tune", "evals"):
        yield Sample("free-form.jsonl", purpose, "ok", b"{not json\n\n")
        yield Sample("blank-only.jsonl", purpose, "ok", b"\n\n")


def _openai_size_caps() -> Iterator[Sample]:
    yield Sample("at-cap.bin", "user_data", "ok", sparse=512 * MB)
    yield Sample("over-cap.pdf", "assistants", "too_large", sparse=512 * MB + 1)
    yield Sample("over-cap.png", "vision", "too_large", sparse=512 * MB + 1)
    yield Sample("over-cap.jsonl", "fine-tune", "too_large", sparse=512 * MB + 1)
    yield Sample("over-cap.jsonl", "batch", "too_large", sparse=200 * MB + 1)
    # DashScope's caps do not apply.
    yield Sample("over-dashscope-cap.png", "vision", "ok", sparse=20 * MB + 1)


def dashscope_samples() -> list[Sample]:
    return _unique([*_extensions(), *_empty(), *_size_caps(), *_batch_layout(),
                    *_batch_rules(), *_batch_caps()])


def openai_samples() -> list[Sample]:
    return _unique([*_openai_formats(), *_openai_size_caps(), *_batch_layout(),
                    *_batch_rules(openai=True), *_batch_caps()])


def _unique(samples: list[Sample]) -> list[Sample]:
    idents = [s.ident for s in samples]
    assert len(idents) == len(set(idents)), "sample names must be unique per purpose"
    return samples


SAMPLES = {"dashscope": dashscope_samples, "openai": openai_samples}


def materialize(sample: Sample, directory: Path) -> Path:
    """Write a sample under `directory` (one sub-directory per sample, so names can repeat
    across purposes) and return its path."""
    folder = directory / sample.ident.replace(":", "_").replace("/", "_")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / sample.name
    if sample.sparse is not None:
        with path.open("wb") as fh:
            fh.truncate(sample.sparse)
    else:
        path.write_bytes(sample.content)
    return path
