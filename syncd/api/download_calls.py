"""Downloading a file's content into a stream: paced and retried as a read, rewound
before each retry when it can be, checked against the file's size and hashed as it
arrives. :class:`DownloadCalls` adds it to the :class:`~syncd.api.session.Session` every
call goes through; :class:`~syncd.api.client.FilesClient` has it."""

from __future__ import annotations

from collections.abc import Callable
from typing import BinaryIO

import httpx

from syncd.api.errors import (
    APIError,
    AuthenticationError,
    DownloadRefusedError,
    InvalidRequestError,
    QuotaExceededError,
)
from syncd.api.models import Downloaded, RemoteFile
from syncd.api.session import Session, file_url, network_error


class DownloadCalls(Session):
    # The Files calls' (FilesClient): asked for the file's size when not given.
    retrieve: Callable[[str], RemoteFile]

    def download(
        self, file_id: str, dest: BinaryIO, *, size: int | None = None, purpose: str | None = None
    ) -> Downloaded:
        """Write the content of ``file_id`` to ``dest`` as it arrives, paced and retried as a
        read, and check it is ``size`` bytes (the file's ``bytes``; retrieved first when not
        given). Returns the size and the sha256 of what was written.

        ``dest`` is written from its position at the call; a seekable one is rewound and
        truncated there before each retry, so it ends holding exactly the file. A stream
        that cannot be rewound is retried only while nothing was written to it.

        Raises DownloadRefusedError when the provider does not serve this file's content
        (``purpose``, if given, is named in it), NotFoundError for an unknown id, and
        IncompleteDownloadError when the body kept coming out at another size."""
        url = file_url(file_id) + "/content"
        if size is None:
            remote = self.retrieve(file_id)
            size, purpose = remote.bytes, purpose or remote.purpose
        expected = size
        try:
            start: int | None = dest.tell() if dest.seekable() else None
        except OSError:
            start = None
        wrote = [False]

        def attempt() -> Downloaded:
            if start is not None:
                dest.seek(start)
                dest.truncate()
            elif wrote[0]:
                raise APIError(f"download of {file_id}: failed after part of it was written to"
                               " a stream that cannot be rewound; not retried")  # fmt: skip
            request = self._http.build_request("GET", url)
            try:
                return self._receive_into("read", request, dest, expected, file_id, wrote)
            except httpx.TransportError as exc:
                raise network_error(exc, "download") from None
            except QuotaExceededError:
                raise
            except (InvalidRequestError, AuthenticationError) as exc:
                if isinstance(exc, AuthenticationError) and exc.status != 403:
                    raise
                what = f" of purpose {purpose!r}" if purpose else ""
                raise DownloadRefusedError(
                    f"the provider does not serve the content of {file_id}{what}: {exc.message}",
                    file_id=file_id,
                    purpose=purpose,
                    status=exc.status,
                    code=exc.code,
                    request_id=exc.request_id,
                ) from None

        return self._retrying("read", "download", attempt)

