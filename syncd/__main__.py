"""The ``syncd`` command and ``python -m syncd``."""

from __future__ import annotations


def main() -> int:
    from syncd._startup import load_without

    # Only the command, which owns its process, trims what packages import for nothing.
    load_without("httpx", "httpx._main")
    load_without("structlog", "rich")
    from syncd.cli import main as cli

    return cli()


if __name__ == "__main__":
    raise SystemExit(main())
