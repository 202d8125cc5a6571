"""Start-up cost: loading a package without an optional part it would import for nothing.

A one-off ``syncd reconcile`` pays for every module it imports. Some packages import
an optional dependency as soon as it is installed, for a feature syncd never uses;
hidden, the package's own fallback for a missing module runs instead.
"""

from __future__ import annotations

import importlib
import sys


def import_without(package: str, unused: str) -> None:
    """Import ``package`` with module ``unused`` hidden while it loads, unless either is
    loaded already; ``unused`` stays importable afterwards for whoever needs it."""
    hide = package not in sys.modules and unused not in sys.modules
    if hide:
        sys.modules[unused] = None  # type: ignore[assignment]
    try:
        importlib.import_module(package)
    finally:
        if hide:
            del sys.modules[unused]
