"""Start-up cost: loading a package without an optional part it would import for nothing.

A one-off ``syncd reconcile`` or ``syncd id`` pays for every module it imports. Some
packages import an optional dependency as soon as it is installed, for a feature
syncd never uses: httpx its command-line client (click, rich, pygments: a third of its
import time), structlog rich for tracebacks syncd renders as plain text. Hidden
while the package loads, the package's own fallback for a missing module runs
instead. The rule is registered by the command (``syncd.__main__``) before anything
is imported, so it holds whichever module imports the package first; the optional
module stays importable afterwards for whoever needs it (the progress display uses
rich).

It leans on no private detail of the packages: if a new version of one needs the
hidden module after all, its body fails with ImportError, and it is then simply run
again with the module visible, as a plain import would.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Sequence
from importlib.abc import Loader, MetaPathFinder
from importlib.machinery import ModuleSpec
from types import ModuleType
from typing import Any


class _LoadWithout(MetaPathFinder):
    """Finds ``package`` through the other finders, the first time it is imported,
    and runs its module body with ``unused`` hidden."""

    def __init__(self, package: str, unused: str) -> None:
        self.package = package
        self.unused = unused

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if fullname != self.package:
            return None
        sys.meta_path.remove(self)  # once: and the lookup below must not come back here
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None or self.unused in sys.modules:
            return spec
        spec.loader = _Hiding(spec.loader, self.unused)
        return spec


class _Hiding(Loader):
    def __init__(self, inner: Loader, unused: str) -> None:
        self._inner = inner
        self._unused = unused

    def create_module(self, spec: ModuleSpec) -> ModuleType | None:
        return self._inner.create_module(spec)

    def __getattr__(self, name: str) -> Any:
        # get_source, get_resource_reader...: the package's own loader answers.
        return getattr(self._inner, name)

    def exec_module(self, module: ModuleType) -> None:
        sys.modules[self._unused] = None  # type: ignore[assignment]  # "not installed"
        try:
            self._inner.exec_module(module)
            return
        except ImportError:
            pass  # it needs the module after all: load it as a plain import would
        finally:
            if sys.modules.get(self._unused, 0) is None:
                del sys.modules[self._unused]
        self._inner.exec_module(module)


def load_without(package: str, unused: str) -> None:
    """When ``package`` is first imported, hide ``unused`` while its body runs."""
    if package not in sys.modules and unused not in sys.modules:
        sys.meta_path.insert(0, _LoadWithout(package, unused))
