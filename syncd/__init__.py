"""syncd: mirror a folder into the DashScope Files API and publish a path -> file_id mapping."""

from syncd._startup import load_without

__version__ = "0.1.0"

load_without("httpx", "httpx._main")
load_without("structlog", "rich")
