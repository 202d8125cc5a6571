"""What the daemon needs from the engine (``syncd.engine.Syncer`` and its ``RunReport``).

Written as protocols so the daemon's control flow can be tested against a fake engine.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Protocol

from syncd.config import MaxDelete, RulesConfig
from syncd.engine.progress import Progress
from syncd.engine.remote import RemoteFiles, RemoteView

if TYPE_CHECKING:
    # The optional steps' types: the daemon loads their modules only when configured.
    from syncd.engine.attach import Attacher
    from syncd.engine.attach import Report as AttachReport
    from syncd.engine.batches import BatchesConfig
    from syncd.engine.batches import Report as BatchReport


class Report(Protocol):
    @property
    def changed_during_upload(self) -> list[str]: ...

    @property
    def errors(self) -> list[str]: ...

    @property
    def failed_paths(self) -> set[str]: ...

    @property
    def exit_code(self) -> int: ...

    @property
    def root_unavailable(self) -> bool: ...

    @property
    def remote_unavailable(self) -> bool: ...

    @property
    def aborted(self) -> str | None:
        """Why the run stopped short; the engine aborts only when the key is refused."""
        ...

    @property
    def uploaded_bytes(self) -> int: ...

    @property
    def uploaded(self) -> int: ...

    @property
    def deleted(self) -> int: ...

    @property
    def hashed(self) -> int: ...

    @property
    def duration_s(self) -> float: ...

    def as_json(self) -> dict[str, Any]:
        """The outcome as ``syncd reconcile --json`` prints it."""
        ...


class SyncerLike(Protocol):
    """The part of ``syncd.engine.Syncer`` the daemon uses."""

    base_url: str
    # What writing the mapping last cost, in seconds.
    publish_cost_s: float
    # None when the config has neither pull nor batch.
    batches_config: BatchesConfig | None

    def batches_step(self, dry_run: bool = False) -> BatchReport | None: ...

    def batch_summary(self) -> dict[str, Any] | None: ...

    def attach_step(self) -> AttachReport | None: ...

    def reconcile(
        self,
        dry_run: bool = False,
        progress: Progress | None = None,
        *,
        max_delete: MaxDelete | None = None,
        confirm_deletes: bool = False,
    ) -> Report: ...

    def sync_paths(
        self,
        paths: Iterable[str],
        *,
        max_delete: MaxDelete | None = None,
        confirm_deletes: bool = False,
    ) -> Report: ...

    def publish_mapping(self) -> None: ...

    def key_refused(self) -> str | None:
        """Why the provider refused the key; None when it took it or could not be asked."""
        ...

    def is_candidate(self, rel_path: str) -> bool: ...

    def can_hold(self, rel_dir: str) -> bool: ...

    def waiting_for_space(self) -> list[str]:
        """Paths held back for want of account space (status ``quota``)."""
        ...

    def stop_soon(self) -> None:
        """Start no more remote calls in the run in progress; its calls in flight finish."""
        ...

    def set_rules(self, rules: RulesConfig) -> None:
        """Judge paths by these rules from the next run on."""
        ...

    def stats(self) -> dict[str, int]: ...

    def close(self) -> None: ...

    # The parts the status shows; None in an engine without them (a test's).
    @property
    def client(self) -> RemoteFiles | None: ...

    @property
    def remote(self) -> RemoteView | None: ...

    @property
    def attacher(self) -> Attacher | None: ...
