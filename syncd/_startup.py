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

import importlib
import importlib.util
import sys
import threading
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from types import ModuleType
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from importlib.abc import Loader

# importlib.abc is not imported to run: it loads importlib.resources and what that needs,
# 0.03 s of a one-off run. A finder is any object with find_spec, a loader any object
# with create_module and exec_module.


class _LoadWithout:
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
        spec.loader = cast("Loader", _Hiding(spec.loader, self.unused))
        return spec


class _Hiding:
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


class _StandIn(ModuleType):
    """A module not imported yet. The real one is, at the first read of an attribute
    the stand-in lacks; its spec it has (an import statement reads it, and must not
    load the module for that)."""

    def __getattr__(self, name: str) -> Any:
        return getattr(_real(self), name)


_REAL_LOCK = threading.Lock()


def _real(stand_in: _StandIn) -> ModuleType:
    """The module, imported now if it is not yet. The stand-in, which modules that
    imported it early still hold, takes the module's names: their reads are plain."""
    with _REAL_LOCK:
        name = stand_in.__name__
        if sys.modules.get(name) is not stand_in:
            return sys.modules[name]
        del sys.modules[name]
        try:
            real = importlib.import_module(name)
        except BaseException:
            sys.modules[name] = stand_in
            raise
        stand_in.__dict__.update(real.__dict__)
        return real


def load_on_use(module: str) -> None:
    """``import module`` gives a stand-in until something reads from it: for a module
    that packages import at their top for a feature syncd never calls (structlog
    imports asyncio for its async loggers: 0.04 s of a one-off run)."""
    if module not in sys.modules:
        stand_in = _StandIn(module)
        stand_in.__spec__ = ModuleSpec(module, None)
        sys.modules[module] = stand_in
