"""The ``syncd`` command and ``python -m syncd``."""

from __future__ import annotations


def trim_start_up() -> None:
    """What the command does before it imports anything: packages load without the
    optional parts syncd never uses (see :mod:`syncd._startup`)."""
    from syncd._startup import load_on_use, load_without

    # Only the command, which owns its process, trims what packages import for nothing.
    load_without("httpx", "httpx._main")
    load_without("structlog", "rich")
    # httpcore loads trio and anyio, where installed, for its async backends and locks;
    # syncd's calls are synchronous. trio's import alone runs ldconfig (ctypes'
    # find_library): a tenth of a second of a one-off reconcile.
    load_without("httpcore", "trio")
    load_without("httpcore", "anyio")
    load_on_use("asyncio")


def main() -> int:
    trim_start_up()
    from syncd.cli import main as cli

    return cli()


if __name__ == "__main__":
    raise SystemExit(main())
