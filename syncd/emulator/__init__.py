"""A local emulator of the DashScope OpenAI-compatible Files API (`/compatible-mode/v1/files`).

It shares nothing with the syncd client except the HTTP contract, so that pointing a client's
base_url at it or at the provider is the only difference.
"""

from .server import RunningEmulator, start_in_thread
from .settings import EmulatorSettings, parse_size

__all__ = ["EmulatorSettings", "RunningEmulator", "parse_size", "start_in_thread"]
