"""Everything that differs between Files API providers: one profile per provider.

A profile says which purposes the provider takes and what it accepts for each
(formats, size caps, empty files, batch JSONL rules), how big a list page may be,
how it reports a full quota, whether it needs a key, and its default rate limits
and quotas. The config, the engine's local validator and the client read it from
here; adding a provider is adding a profile to ``PROVIDERS``.

The emulator has its own copy of these rules on purpose (it plays the provider);
``tests/test_validation_corpus.py`` holds both to the same sample files.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field

MB = 1024 * 1024
GB = 1024 * MB
TB = 1024 * GB

# Purpose names, spelled once. "skip" is ours: a rule that keeps matching files off
# the remote, valid with every provider.
SKIP = "skip"
FILE_EXTRACT = "file-extract"
BATCH = "batch"
ASSISTANTS = "assistants"
FINE_TUNE = "fine-tune"
VISION = "vision"
USER_DATA = "user_data"
EVALS = "evals"

JSONL = frozenset({"jsonl"})
IMAGE_EXTENSIONS = frozenset({"bmp", "png", "jpg", "jpeg", "gif"})
DOCUMENT_EXTENSIONS = frozenset(
    {"txt", "docx", "pdf", "xlsx", "epub", "mobi", "md", "csv", "json"}
)
FILE_EXTRACT_EXTENSIONS = DOCUMENT_EXTENSIONS | IMAGE_EXTENSIONS


@dataclass(frozen=True)
class SizeCap:
    """At most ``limit`` bytes for files of these extensions (None: every extension)."""

    limit: int
    what: str  # how the reason names the files: "images", "batch files"
    extensions: frozenset[str] | None = None

    def applies(self, ext: str) -> bool:
        return self.extensions is None or ext in self.extensions


@dataclass(frozen=True)
class JsonlRules:
    """Batch input rules, checked line by line (see ``syncd.engine.accepts``)."""

    urls: frozenset[str]
    max_lines: int = 50_000
    max_line_bytes: int = 6 * MB


@dataclass(frozen=True)
class PurposeSpec:
    """What the provider accepts for one purpose, in the order it checks: format,
    then size caps, then emptiness, then the content of a batch file."""

    extensions: frozenset[str] | None = None  # None: any file name
    caps: tuple[SizeCap, ...] = ()
    reject_empty: bool = True
    jsonl: JsonlRules | None = None


@dataclass(frozen=True)
class Ceilings:
    """Requests per second per call class, the provider's published ceilings."""

    upload: float
    read: float
    delete: float


@dataclass(frozen=True)
class Provider:
    name: str
    # The purposes the provider takes; empty: any purpose string (nothing is known).
    purposes: Mapping[str, PurposeSpec]
    # What an unknown purpose gets when ``purposes`` is empty.
    any_purpose: PurposeSpec = field(default_factory=lambda: PurposeSpec(reject_empty=False))
    # rules.purposes when the config gives none: (globs, purpose), first match wins.
    default_purposes: tuple[tuple[tuple[str, ...], str], ...] = ((("**",), ASSISTANTS),)
    # The variable holding the key when the config names none (None: no key unless the
    # config names a source, so no key meant for another provider is ever sent here).
    key_env: str | None = "OPENAI_API_KEY"
    key_required: bool = True
    list_page_size: int = 10_000
    list_max_page_size: int = 10_000
    # Whether list takes ``order``: then syncd asks for ``desc`` explicitly, the order
    # its walks rely on, rather than trust a default.
    list_order: bool = False
    rates: Ceilings = Ceilings(20.0, 20.0, 10.0)
    max_files: int = 1_000_000
    max_bytes: int = 1 * TB
    # A 4xx is a full quota when its message contains one of these (lower case) ...
    quota_messages: tuple[str, ...] = ()
    # ... or its code does (lower case, without "_", "." and "-").
    quota_codes: tuple[str, ...] = ("quota",)
    # Whether it serves OpenAI's /vector_stores routes (vector_stores.rules needs them).
    vector_stores: bool = True

    def allows(self, purpose: str) -> bool:
        return purpose == SKIP or not self.purposes or purpose in self.purposes

    def spec(self, purpose: str) -> PurposeSpec:
        return self.purposes.get(purpose, self.any_purpose)

    def with_page_size(self, size: int | None) -> Provider:
        """This profile listing ``size`` files per page (None: its default)."""
        if size is None:
            return self
        if not 1 <= size <= self.list_max_page_size:
            raise ValueError(f"list page size must be 1..{self.list_max_page_size}")
        return dataclasses.replace(self, list_page_size=size)

    def is_quota_error(self, message: str | None, code: str | None) -> bool:
        text = (message or "").lower()
        if any(m in text for m in self.quota_messages):
            return True
        low = (code or "").lower()
        for ch in "_.-":
            low = low.replace(ch, "")
        return any(c in low for c in self.quota_codes)


def _dashscope() -> Provider:
    batch_urls = frozenset({"/v1/chat/completions", "/v1/embeddings", "/v1/chat/ds-test"})
    return Provider(
        name="dashscope",
        purposes={
            FILE_EXTRACT: PurposeSpec(
                extensions=FILE_EXTRACT_EXTENSIONS,
                caps=(SizeCap(20 * MB, "images", IMAGE_EXTENSIONS),
                      SizeCap(150 * MB, "documents")),
            ),
            BATCH: PurposeSpec(
                extensions=JSONL,
                caps=(SizeCap(500 * MB, "batch files"),),
                jsonl=JsonlRules(batch_urls),
            ),
        },
        default_purposes=(
            (("*.jsonl",), BATCH),
            (tuple(f"*.{e}" for e in sorted(FILE_EXTRACT_EXTENSIONS)), FILE_EXTRACT),
        ),
        key_env="DASHSCOPE_API_KEY",
        list_page_size=2000,
        list_max_page_size=2000,
        rates=Ceilings(upload=20.0, read=20.0, delete=10.0),
        max_files=10_000,
        max_bytes=100 * GB,
        quota_messages=("upload file number exceed limit", "upload file capacity exceed limit"),
        quota_codes=("quota", "exceedlimit"),
        vector_stores=False,
    )


def _openai() -> Provider:
    cap = SizeCap(512 * MB, "files")
    jsonl_only = PurposeSpec(extensions=JSONL, caps=(cap,))
    # Which formats OpenAI refuses at upload for the other purposes is not public:
    # none are refused locally, and empty files are (see the README).
    anything = PurposeSpec(caps=(cap,))
    urls = frozenset({"/v1/chat/completions", "/v1/embeddings", "/v1/responses", "/v1/completions"})
    return Provider(
        name="openai",
        purposes={
            ASSISTANTS: anything,
            BATCH: PurposeSpec(
                extensions=JSONL,
                caps=(SizeCap(200 * MB, "batch files"), cap),
                jsonl=JsonlRules(urls),
            ),
            FINE_TUNE: jsonl_only,
            VISION: anything,
            USER_DATA: anything,
            EVALS: jsonl_only,
        },
        default_purposes=((("**",), ASSISTANTS),),
        key_env="OPENAI_API_KEY",
        list_page_size=10_000,
        list_max_page_size=10_000,
        list_order=True,
        # 1,000 uploads a minute; reads and deletes are not published.
        rates=Ceilings(upload=16.0, read=20.0, delete=10.0),
        # No file count limit is published; 2.5 TB per project.
        max_files=1_000_000,
        max_bytes=2560 * GB,
        quota_codes=("quota", "exceedlimit"),
    )


def _generic() -> Provider:
    """Any OpenAI-compatible Files server: assumes as little as possible. Any purpose,
    no local checks but the ones the config adds, no key unless one is configured,
    one big list page (some servers' cursors skip entries)."""
    return Provider(
        name="generic",
        purposes={},
        key_env=None,
        key_required=False,
        list_page_size=10_000,
        list_max_page_size=100_000,
        rates=Ceilings(upload=10.0, read=10.0, delete=5.0),
        quota_messages=("quota",),
        quota_codes=("quota",),
    )


DASHSCOPE = _dashscope()
OPENAI = _openai()
GENERIC = _generic()
PROVIDERS: Mapping[str, Provider] = {p.name: p for p in (DASHSCOPE, OPENAI, GENERIC)}
DEFAULT_PROVIDER = DASHSCOPE.name


def provider(name: str) -> Provider:
    try:
        return PROVIDERS[name]
    except KeyError:
        raise ValueError(f"unknown provider {name!r}; one of {', '.join(PROVIDERS)}") from None
