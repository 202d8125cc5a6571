"""Client of the Files API (DashScope's OpenAI-compatible flavour by default).

Import from the modules themselves: the provider profiles (``syncd.api.providers``),
which every command's config needs, must not bring httpx with them, so ``syncd id``
and ``syncd map`` start without it.
"""
