"""syncd: mirror a folder into the DashScope Files API and publish a path -> file_id mapping."""

__version__ = "0.1.0"
